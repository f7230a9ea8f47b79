"""Test ids are the same in every process: pytest-xdist aborts a run whose workers collect
different ids ("Different tests were collected between gw1 and gw0") before any test starts.

Ids made from values that change between processes (gzip bytes with their header's time stamp,
object reprs with addresses, sets of strings under hash randomisation) break that. This test
collects the whole suite in two fresh interpreters a few seconds apart, with different hash
seeds, and compares the ids.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _collected_ids(hash_seed: str) -> list[str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"collection failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return [line for line in done.stdout.splitlines() if "::" in line]


def test_two_processes_collect_the_same_ids() -> None:
    first = _collected_ids("1")
    time.sleep(2.0)  # NB: gzip headers carry whole seconds
    second = _collected_ids("2")
    assert len(first) > 100
    only_first = sorted(set(first) - set(second))
    only_second = sorted(set(second) - set(first))
    assert not only_first and not only_second, (
        f"unstable test ids: {only_first[:5]} vs {only_second[:5]}; give the parametrised test "
        "explicit ids= (never bytes or reprs that change between processes)"
    )
    assert first == second, "same ids in a different order: sort the parameters"
    escaped = [node_id for node_id in first if not node_id.isprintable() or "\\x" in node_id]
    assert not escaped, f"test ids with raw bytes (give them explicit ids=): {escaped[:5]}"
