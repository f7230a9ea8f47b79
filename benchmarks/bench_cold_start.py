"""Serverless cold start: a fresh interpreter imports a handler and answers its first event.

For each handler, N fresh processes each time (a) the handler module's import and (b) its first
response, in the process, from before the import to after the answer (what a function adds to
the platform's own start), and (c) the whole process, from spawn to exit, as a platform that
starts a new interpreter sees it. Beside them, the peer: a bare FastAPI app with one route
behind the same Mangum adapter, so the project's own share is visible.

    .venv/bin/python benchmarks/bench_cold_start.py [--repeats 5]

Needs the machine's Redis (the API's Celery broker: a function sends its jobs to workers). The
job database is a SQLite file migrated beforehand (in a deployment the migration job does it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_EVENT = {
    "version": "2.0",
    "routeKey": "$default",
    "rawPath": "/health/live",
    "rawQueryString": "",
    "headers": {"host": "bench.execute-api.eu-west-1.amazonaws.com"},
    "requestContext": {
        "http": {"method": "GET", "path": "/health/live", "protocol": "HTTP/1.1",
                 "sourceIp": "127.0.0.1", "userAgent": "bench"},
        "routeKey": "$default", "stage": "$default", "requestId": "bench",
    },
    "isBase64Encoded": False,
}  # fmt: skip

#: each probe prints {"import": s, "first_response": s, "status": code} on its last line
PROBES = {
    "bare FastAPI + Mangum (peer)": """
import time; t0 = time.perf_counter()
from fastapi import FastAPI
from mangum import Mangum
app = FastAPI()
@app.get("/health/live")
def live(): return {"status": "ok"}
handler = Mangum(app, lifespan="off")
t1 = time.perf_counter()
response = handler(EVENT, None)
""",
    "AWS api_handler": """
import time; t0 = time.perf_counter()
from precise_mrd.service.serverless.aws import api_handler as handler
t1 = time.perf_counter()
response = handler(EVENT, None)
""",
    "AWS storage_event_handler (a non-manifest key)": """
import time; t0 = time.perf_counter()
from precise_mrd.service.serverless.aws import storage_event_handler as handler
t1 = time.perf_counter()
event = {"Records": [{"s3": {"bucket": {"name": "b"},
                              "object": {"key": "incoming/lab/s1/reads.bam", "sequencer": "1"}}}]}
out = handler(event, None)
response = {"statusCode": 200 if out["outcomes"][0]["action"] == "ignored" else 500}
""",
    "GCP api (Functions Framework app)": """
import time; t0 = time.perf_counter()
import functions_framework
app = functions_framework.create_app("api", "serverless/gcp/main.py", "http")
t1 = time.perf_counter()
answer = app.test_client().get("/health/live")
response = {"statusCode": answer.status_code}
""",
    "Azure api (function_app.py)": """
import time; t0 = time.perf_counter()
import asyncio, importlib.util
spec = importlib.util.spec_from_file_location("function_app", "serverless/azure/function_app.py")
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
import azure.functions as func
api = {f.get_function_name(): f.get_user_function() for f in module.app.get_functions()}["api"]
t1 = time.perf_counter()
request = func.HttpRequest("GET", "https://x.azurewebsites.net/health/live", headers={},
                           params={}, route_params={"route": "health/live"}, body=b"")
response = {"statusCode": asyncio.run(api(request, None)).status_code}
""",
}

_FOOTER = """
t2 = time.perf_counter()
import json
print(json.dumps({"import": t1 - t0, "first_response": t2 - t0,
                  "status": response["statusCode"]}))
"""


def run_probe(code: str, env: dict[str, str]) -> dict[str, float]:
    script = f"EVENT = {_EVENT!r}\n" + code + _FOOTER
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"probe failed:\n{done.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    if figures["status"] != 200:
        raise SystemExit(f"probe answered {figures['status']}:\n{done.stderr[-2000:]}")
    figures["process"] = wall
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="pmrd-cold-"))
    env = {
        **os.environ,
        "PRECISE_MRD_DATA_DIR": str(data_dir),
        "PRECISE_MRD_EXECUTOR": "celery",
        "PRECISE_MRD_BROKER_URL": "redis://127.0.0.1:6379/0",
        "PRECISE_MRD_CELERY_QUEUE": "bench-cold-start",
        "PRECISE_MRD_DATABASE_MIGRATE_ON_START": "false",
        "PRECISE_MRD_WARM_KERNELS_ON_START": "false",
        "PRECISE_MRD_LOG_LEVEL": "warning",
    }
    from precise_mrd.service.db import upgrade_database
    from precise_mrd.service.settings import Settings

    upgrade_database(Settings(data_dir=data_dir).database_url)
    print(
        f"{args.repeats} fresh processes each; seconds, median (min-max); {sys.version.split()[0]}"
    )
    print(f"{'handler':<48} {'import':>18} {'import->response':>18} {'process':>18}")
    for name, code in PROBES.items():
        runs = [run_probe(code, env) for _ in range(args.repeats)]
        cells = []
        for key in ("import", "first_response", "process"):
            values = [run[key] for run in runs]
            cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})")
        print(f"{name:<48} {cells[0]:>18} {cells[1]:>18} {cells[2]:>18}")


if __name__ == "__main__":
    main()
