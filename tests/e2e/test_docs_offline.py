"""/docs and /redoc render in headless Chromium on a machine with no network at all.

The server and the browser run together in a new network namespace (``unshare -rn``: an
unprivileged user and network namespace whose only interface is loopback), so nothing can be
fetched from a CDN. The test first proves that the namespace cannot reach the internet, then has
Chromium render each page (JavaScript run, ``--dump-dom``) and checks the rendered DOM: Swagger UI's
operation list and ReDoc's operation sections, which exist only when the bundles loaded and ran.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from subprocess import run

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.browser
PORT = 8765  # NB: inside the new namespace, so it cannot clash with anything on the host
DRIVER = """\
set -u
ip link set lo up
"$PYTHON" -m precise_mrd.api > "$OUT/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
if curl -s -m 5 -o /dev/null https://cdn.jsdelivr.net/; then echo online > "$OUT/network"; \
else echo offline > "$OUT/network"; fi
for _ in $(seq 1 150); do
    curl -s -m 1 -o /dev/null "http://127.0.0.1:$PORT/health/live" && break
    sleep 0.2
done
for page in docs redoc; do
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --no-first-run \\
        --disable-background-networking --disable-component-update --disable-sync \\
        --user-data-dir="$OUT/profile-$page" --virtual-time-budget=20000 \\
        --dump-dom "http://127.0.0.1:$PORT/$page" > "$OUT/$page.html" 2> "$OUT/$page.err"
done
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory with the rendered ``docs.html`` and ``redoc.html`` and the network probe."""
    out = tmp_path_factory.mktemp("docs_offline")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is required (make test installs Debian's chromium)"
    assert shutil.which("unshare") and shutil.which("ip"), "needs util-linux unshare and iproute2"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PRECISE_MRD_", "ENABLE_"))
    }
    env.update(
        PYTHON=sys.executable,
        CHROMIUM=chromium,
        OUT=str(out),
        PORT=str(PORT),
        PRECISE_MRD_API_PORT=str(PORT),
        PRECISE_MRD_DATA_DIR=str(out / "data"),
        PRECISE_MRD_WARM_KERNELS_ON_START="false",
    )
    completed = run(
        ["unshare", "-rn", "bash", "-c", DRIVER],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return out


def test_the_namespace_has_no_network(rendered: Path) -> None:
    assert (rendered / "network").read_text().strip() == "offline"


def test_swagger_ui_renders_the_operations(rendered: Path) -> None:
    dom = (rendered / "docs.html").read_text()
    assert 'class="swagger-ui"' in dom, dom[-2000:]
    for path in ("/submit", "/status/{job_id}", "/results/{job_id}", "/health"):
        assert f'data-path="{path}"' in dom, path
    assert "Failed to load API definition" not in dom


def test_redoc_renders_the_operations(rendered: Path) -> None:
    dom = (rendered / "redoc.html").read_text()
    assert 'data-section-id="tag/jobs/operation/submit_job_submit_post"' in dom, dom[-2000:]
    assert "/submit" in dom and "Something went wrong" not in dom
