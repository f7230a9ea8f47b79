"""Run a documentation block as written, the way a reader pastes it into a shell.

``start_block(section, replacements, ...)`` takes the first ```bash block under ``## section`` of
``docs/service.md``, applies the test's own ports and names (each must occur), runs it in a
process group of its own under ``timeout`` (a step that never ends fails the test instead of
hanging it), and returns the first JSON object the block prints with the running shell; ``stop``
ends the shell and everything it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1] / "docs" / "service.md"


def block(section: str) -> str:
    text = DOCS.read_text()
    return text.split(f"## {section}", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]


def start_block(
    section: str,
    replacements: dict[str, str],
    *,
    cwd: Path,
    env: dict[str, str],
    timeout: float = 150,
) -> tuple[dict[str, Any], subprocess.Popen[str]]:
    script = block(section)
    for old, new in replacements.items():
        assert old in script, f"{old!r} is not in the {section!r} block any more"
        script = script.replace(old, new)
    shell = subprocess.Popen(
        # NB: curl prints JSON without a newline; echo ends the line for readline
        ["timeout", str(int(timeout)), "bash", "-c", "set -e\n" + script + "echo\nwait"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert shell.stdout is not None
    printed = []
    for line in shell.stdout:
        printed.append(line)
        if line.startswith("{"):
            return json.loads(line), shell
    stop(shell)
    raise AssertionError(f"the {section!r} block printed no JSON: {''.join(printed)[-3000:]}")


def stop(shell: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(shell.pid, signal.SIGTERM)
    shell.wait(60)
    if shell.stdout is not None:
        shell.stdout.close()
