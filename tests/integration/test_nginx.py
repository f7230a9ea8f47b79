"""Behind NGINX, as deployed: TLS termination, the ingress's limits, X-Request-ID, and a rolling
restart of the API processes under load with no failed request and no lost job.

Debian's ``nginx`` (installed by ``make test`` when missing) runs on loopback from
``deploy/nginx/precise-mrd.conf.template`` with a certificate made here, in front of two API
processes sharing one data directory (SQLite, the local executor in each). The rolling restart,
for each process in turn:

1. SIGTERM; its readiness turns 503 at once (``PRECISE_MRD_SHUTDOWN_DRAIN_SECONDS``) while it
   keeps serving, every response saying ``Connection: close``: since the drain (5 s) outlasts
   the upstream ``keepalive_timeout`` (4 s), NGINX holds no pooled connection to it at the end
   (in Kubernetes the readiness failure also takes the pod out of the ingress's endpoints);
2. the drain ends; the server stops listening, finishes its in-flight requests and exits; its
   running jobs go back to the queue for the other process;
3. NGINX's next connection to it is refused, so the request goes to the other process (nothing
   was sent: a POST too) and the refused one is left alone for ``fail_timeout``;
4. a new process starts on the same port; NGINX tries it again after ``fail_timeout``.

NGINX is not reloaded to take a process out: a reload closes NGINX's idle client connections,
racing a client that sends on one at that instant (seen here: 2 of 2,536 requests failed).

Meanwhile 24 clients, each from its own loopback address (127.0.0.x: the per-client limits are
the ingress's 20 requests/s and 50 connections), read statuses and listings and submit (2%)
queue-only jobs through HTTPS. Every answer must be a success; the run's availability
(successful / total) is printed; every accepted job must end COMPLETE.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import signal
import ssl
import string
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import requests

from brokers import Background
from loaddriver import QUEUE_ONLY, Tally, check_loopback
from servers import ROOT, TERMINAL, Server, free_port

pytestmark = pytest.mark.xdist_group(name="nginx")

TEMPLATE = ROOT / "deploy" / "nginx" / "precise-mrd.conf.template"
INGRESS = ROOT / "k8s" / "base" / "ingress.yaml"
#: longer than the template's upstream keepalive_timeout (4 s): no pooled connection outlives it
DRAIN_SECONDS = 5
CLIENTS = 24
#: each client's pause between requests: ~8 requests/s each, under the ingress's 20/s
THINK_SECONDS = 0.12


def _nginx() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    assert found, "nginx is not installed: `make test-tools` installs Debian's package"
    return found


def _certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "tls.crt", directory / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@dataclass
class Balancer:
    """NGINX on loopback in front of API servers."""

    directory: Path
    servers: list[Server]
    cert: Path
    key: Path
    https_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    #: seconds NGINX leaves a process alone after a refused connection (passive health check)
    fail_timeout: float = 2
    process: Background | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def conf(self) -> Path:
        return self.directory / "nginx.conf"

    def render(self) -> str:
        upstream = "\n".join(
            f"        server 127.0.0.1:{server.port} max_fails=1 fail_timeout={self.fail_timeout}s;"
            for server in self.servers
        )
        text = string.Template(TEMPLATE.read_text()).safe_substitute(
            NGINX_PREFIX=str(self.directory),
            NGINX_USER="user root;" if os.geteuid() == 0 else "",
            HTTPS_LISTEN=f"127.0.0.1:{self.https_port}",
            HTTP_LISTEN=f"127.0.0.1:{self.http_port}",
            TLS_CERTIFICATE=str(self.cert),
            TLS_CERTIFICATE_KEY=str(self.key),
            API_SERVERS=upstream,
        )
        self.conf.write_text(text)
        check = subprocess.run(
            [_nginx(), "-t", "-p", str(self.directory), "-c", str(self.conf)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert check.returncode == 0, check.stderr
        return text

    def start(self) -> None:
        self.render()
        self.process = Background(
            [_nginx(), "-p", str(self.directory), "-c", str(self.conf), "-g", "daemon off;"],
            self.directory / "nginx.out",
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/health/live", verify=str(self.cert), timeout=2).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError((self.directory / "error.log").read_text()[-2000:])

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=15)


def _api(data_dir: Path, port: int | None = None) -> Server:
    return Server(
        data_dir,
        port=port,
        PRECISE_MRD_ENABLE_DEBUG_JOBS="true",
        PRECISE_MRD_WARM_KERNELS_ON_START="false",
        PRECISE_MRD_LOG_LEVEL="info",
        PRECISE_MRD_SHUTDOWN_DRAIN_SECONDS=str(DRAIN_SECONDS),
        PRECISE_MRD_MAX_UPLOAD_BYTES="65536",
        MAX_CONCURRENT_JOBS="2",
    )


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[Balancer]:
    data = tmp_path / "data"
    servers = [_api(data)]
    servers.append(_api(data))
    cert, key = _certificate(tmp_path)
    nginx_dir = tmp_path / "nginx"
    nginx_dir.mkdir()
    balancer = Balancer(nginx_dir, servers, cert, key)
    try:
        balancer.start()
        yield balancer
    finally:
        balancer.stop()
        with ThreadPoolExecutor(len(balancer.servers)) as pool:  # NB: each drains for seconds
            list(pool.map(Server.stop, balancer.servers))


def _rolling_restart(balancer: Balancer, timeline: list[str]) -> None:
    """Each API process in turn: SIGTERM, unready while it drains, gone, back on its port."""
    for index, server in enumerate(list(balancer.servers)):
        port = server.port
        started = time.monotonic()
        server._signal(signal.SIGTERM)
        while requests.get(f"{server.url}/health/ready", timeout=5).status_code != 503:
            assert time.monotonic() - started < 5, "readiness did not turn false"
            time.sleep(0.05)
        timeline.append(f"{port}: unready after {time.monotonic() - started:.2f} s")
        server.process.wait(60)
        timeline.append(f"{port}: exited after {time.monotonic() - started:.2f} s")
        server.stop()  # NB: closes its log
        replacement = _api(server.data_dir, port=port)
        balancer.servers[index] = replacement
        while requests.get(f"{replacement.url}/health/ready", timeout=5).status_code != 200:
            assert time.monotonic() - started < 90, "the new process never became ready"
            time.sleep(0.1)
        timeline.append(f"{port}: ready again after {time.monotonic() - started:.2f} s")
        time.sleep(balancer.fail_timeout)  # NB: NGINX tries it again after fail_timeout


async def _clients(
    balancer: Balancer, stop: threading.Event, accepted: list[str], request_ids: Counter[str]
) -> Tally:
    check_loopback([balancer.url])
    tally = Tally()
    context = ssl.create_default_context(cafile=str(balancer.cert))
    deadline = time.monotonic() + 180
    known: list[str] = []

    async def client(index: int) -> None:
        rng = random.Random(index)
        # NB: a source address of its own in 127/8, so the per-address limits apply per client
        transport = httpx.AsyncHTTPTransport(verify=context, local_address=f"127.0.0.{10 + index}")
        async with httpx.AsyncClient(
            base_url=balancer.url, transport=transport, timeout=30
        ) as http:
            for _ in range(5000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                roll = rng.random()
                request_id = f"roll-{index}-{rng.getrandbits(40):x}"
                headers = {"X-Request-ID": request_id}
                started = time.perf_counter()
                try:
                    if roll < 0.02 or not known:
                        endpoint = "POST /submit"
                        response = await http.post(
                            "/submit",
                            data={"run_id": f"roll-{index}", "config_yaml": QUEUE_ONLY},
                            headers=headers,
                        )
                        if response.status_code == 202:
                            accepted.append(response.json()["job_id"])
                            known.append(response.json()["job_id"])
                    elif roll < 0.75:
                        endpoint = "GET /status/{id}"
                        response = await http.get(f"/status/{rng.choice(known)}", headers=headers)
                    else:
                        endpoint = "GET /jobs"
                        response = await http.get("/jobs", params={"limit": 20}, headers=headers)
                except (httpx.HTTPError, OSError) as error:
                    tally.fail("transport", error)
                    continue
                tally.add(endpoint, response.status_code, time.perf_counter() - started)
                if response.headers.get("X-Request-ID") == request_id:
                    request_ids["echoed"] += 1
                else:
                    request_ids["lost"] += 1
                await asyncio.sleep(THINK_SECONDS)

    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return tally


def test_rolling_restart_behind_nginx_loses_no_request_and_no_job(balancer: Balancer) -> None:
    stop = threading.Event()
    accepted: list[str] = []
    request_ids: Counter[str] = Counter()
    result: dict[str, Tally] = {}

    def load() -> None:
        result["tally"] = asyncio.run(_clients(balancer, stop, accepted, request_ids))

    runner = threading.Thread(target=load)
    runner.start()
    timeline: list[str] = []
    try:
        time.sleep(3)  # NB: steady load first
        _rolling_restart(balancer, timeline)
        time.sleep(3)  # and after
    finally:
        stop.set()
        runner.join(timeout=60)
    tally = result["tally"]
    statuses = tally.status_counts()
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    availability = ok / tally.requests
    print(
        f"\nrolling restart behind NGINX: {' | '.join(timeline)}\n"
        f"{tally.requests} requests, statuses {dict(statuses)}, failures {dict(tally.failures)}; "
        f"availability {ok}/{tally.requests} = {availability:.5f}; "
        f"X-Request-ID echoed {request_ids['echoed']}, lost {request_ids['lost']}"
    )
    assert tally.requests > 500
    assert not tally.failures, tally.failures
    assert set(statuses) <= {200, 202}, statuses
    assert request_ids["lost"] == 0
    for job_id in accepted:  # nothing accepted is lost, whichever process ran it
        state = balancer.servers[0].wait(job_id, TERMINAL, timeout=120)["state"]
        assert state == "COMPLETE", (job_id, state)
    # the drained processes said why they stopped, and both served traffic through NGINX
    access = (balancer.directory / "access.log").read_text()
    upstreams = set(re.findall(r"upstream=(127\.0\.0\.1:\d+)", access))
    assert {f"127.0.0.1:{server.port}" for server in balancer.servers} <= upstreams


def test_tls_redirect_limits_and_request_ids_at_the_balancer(balancer: Balancer) -> None:
    verify = str(balancer.cert)
    # plain HTTP is redirected to HTTPS (the ingress's ssl-redirect)
    plain = requests.get(
        f"http://127.0.0.1:{balancer.http_port}/health/live", allow_redirects=False, timeout=5
    )
    assert plain.status_code == 308 and plain.headers["Location"].startswith("https://")
    # TLS terminates at NGINX; the API sees the client's request id and echoes it
    live = requests.get(
        f"{balancer.url}/jobs", headers={"X-Request-ID": "from-the-client-42"}, verify=verify,
        timeout=5,
    )  # fmt: skip
    assert live.status_code == 200 and live.headers["X-Request-ID"] == "from-the-client-42"
    assert "max-age" in live.headers["Strict-Transport-Security"]
    made = requests.get(f"{balancer.url}/jobs", verify=verify, timeout=5)
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-ID"])  # NGINX's $request_id
    logs = "".join(server.log_text() for server in balancer.servers)
    assert '"request_id": "from-the-client-42"' in logs
    # over the ingress's 20 requests/s (burst 100) from one address: 429 with Retry-After
    with requests.Session() as session:
        codes = Counter()
        limited = None
        for _ in range(250):
            response = session.get(f"{balancer.url}/health/live", verify=verify, timeout=5)
            codes[response.status_code] += 1
            if response.status_code == 429:
                limited = response
    assert codes[200] >= 100 and codes[429] > 0, codes
    assert limited is not None and limited.headers["Retry-After"] == "1"
    assert limited.json()["error"]["code"] == "rate_limited"
    # the API's own upload limit answers through NGINX (request buffering off: streamed)
    time.sleep(1.5)  # NB: the bucket refills
    big = requests.post(
        f"{balancer.url}/submit",
        data={"run_id": "big"},
        files={"reads": ("r.fastq", b"@r\n" + b"A" * 70_000 + b"\n+\n" + b"I" * 70_000 + b"\n")},
        verify=verify,
        timeout=30,
    )
    assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"


def test_the_template_carries_the_ingress_limits() -> None:
    """NGINX's limits are the Kubernetes ingress's: one change, both places."""
    annotations = dict(
        re.findall(r"nginx\.ingress\.kubernetes\.io/([\w-]+):\s*\"([^\"]+)\"", INGRESS.read_text())
    )
    template = TEMPLATE.read_text()
    assert f"client_max_body_size {annotations['proxy-body-size']};" in template
    assert f"proxy_read_timeout {annotations['proxy-read-timeout']}s;" in template
    assert f"rate={annotations['limit-rps']}r/s;" in template
    assert f"burst={int(annotations['limit-rps']) * 5} nodelay;" in template
    assert f"per_client_connections {annotations['limit-connections']};" in template
    assert ("proxy_request_buffering off;" in template) == (
        annotations["proxy-request-buffering"] == "off"
    )
