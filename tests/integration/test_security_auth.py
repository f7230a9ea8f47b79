"""Authentication, roles and tenants against the real app: SQLite job database, Alembic
migrations, API keys made by the CLI, JWTs signed here (HS256, RS256 and ES256 from a JWKS
file), and an attacker's attempts (no credentials, wrong and revoked keys, expired, tampered,
``alg: none`` and algorithm-confused tokens, another tenant's job ids)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

from clitools import run_cli
from precise_mrd.service.app import create_app
from precise_mrd.service.jobs.model import JobSpec
from precise_mrd.service.security.keys import KeyStore
from precise_mrd.service.settings import Settings

SECRET = "an HS256 secret of at least 32 characters, for tests"
ENDPOINTS = [
    ("GET", "/jobs"),
    ("GET", "/status/{job}"),
    ("GET", "/results/{job}"),
    ("GET", "/download/{job}/report"),
    ("POST", "/jobs/{job}/cancel"),
    ("POST", "/submit"),
    ("GET", "/config-templates"),
    ("POST", "/validate-config"),
    ("GET", "/metrics"),
]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Server:
    """The app over a fresh SQLite database, with a key store and a job of tenant ``lab-a``."""

    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.settings = Settings(data_dir=tmp_path, warm_kernels_on_start=False, **settings)
        self.app = create_app(self.settings, start_executor=False)
        self.client = TestClient(self.app)
        self.client.__enter__()  # NB: runs the lifespan: the migrations create the tables
        service = self.app.state.job_service
        self.keys = KeyStore(service.sessions)
        self.job_a = service.submit(
            JobSpec(run_id="a1", seed=1, config_yaml="", tenant_id="lab-a")
        ).job_id

    def key(self, tenant: str, role: str, **kwargs: Any) -> dict[str, str]:
        return {"X-API-Key": self.keys.create(tenant=tenant, role=role, **kwargs)[1]}

    def call(self, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
        path = path.format(job=self.job_a)
        if path == "/submit":
            return self.client.post(path, data={"run_id": "r"}, headers=headers)
        if path == "/validate-config":
            return self.client.post(path, content=b"seed: 1\n", headers=headers)
        return self.client.request(method, path, headers=headers)

    def close(self) -> None:
        self.client.__exit__(None, None, None)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    made = Server(tmp_path, auth_mode="both", jwt_secret=SECRET)
    yield made
    made.close()


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_endpoint_needs_credentials(server: Server, method: str, path: str) -> None:
    for headers in (None, {"X-API-Key": "pmrd_000000000000_" + "x" * 43}, {"X-API-Key": "junk"}):
        response = server.call(method, path, headers)
        assert response.status_code == 401, (path, headers, response.text)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        error = response.json()["error"]
        assert error["code"] == "unauthenticated" and error["fix"]
        if headers:
            assert headers["X-API-Key"] not in response.text  # the value sent is never echoed


def test_liveness_and_health_are_open_and_docs_too(server: Server) -> None:
    for path in ("/health/live", "/health", "/openapi.json", "/docs"):
        assert server.client.get(path).status_code in (200, 503), path


def test_health_can_require_credentials(tmp_path: Path) -> None:
    closed = Server(tmp_path, auth_mode="api_key", public_health=False)
    try:
        assert closed.client.get("/health/live").status_code == 200
        assert closed.client.get("/health").status_code == 401
        assert closed.client.get("/health", headers=closed.key("ops", "viewer")).status_code in (
            200,
            503,
        )
    finally:
        closed.close()


def test_api_key_by_header_or_bearer_and_revocation_at_once(server: Server) -> None:
    info, key = server.keys.create(tenant="lab-a", role="viewer")
    assert server.client.get("/jobs", headers={"X-API-Key": key}).status_code == 200
    bearer = {"Authorization": f"Bearer {key}"}
    assert server.client.get(f"/status/{server.job_a}", headers=bearer).status_code == 200
    server.keys.revoke(info.key_id)
    assert server.client.get("/jobs", headers={"X-API-Key": key}).status_code == 401
    # a key with the right id but another secret
    forged = "_".join(key.split("_", 2)[:2]) + "_" + "A" * 43
    assert server.client.get("/jobs", headers={"X-API-Key": forged}).status_code == 401


def test_expired_key_stops_working(server: Server) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    assert (
        server.client.get(
            "/jobs", headers=server.key("lab-a", "admin", expires_at=past)
        ).status_code
        == 401
    )
    soon = datetime.now(UTC) + timedelta(seconds=1.5)
    headers = server.key("lab-a", "admin", expires_at=soon)
    assert server.client.get("/jobs", headers=headers).status_code == 200
    time.sleep(1.6)
    assert server.client.get("/jobs", headers=headers).status_code == 401


def test_key_is_stored_as_a_hash_only(server: Server, tmp_path: Path) -> None:
    _, key = server.keys.create(tenant="lab-a", role="viewer")
    secret = key.split("_", 2)[2]
    raw = b"".join(path.read_bytes() for path in tmp_path.glob("jobs.db*"))  # NB: and the WAL
    assert secret.encode() not in raw and key.encode() not in raw
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in raw


@pytest.mark.parametrize(
    ("role", "read", "submit", "cancel"),
    [("viewer", 200, 403, 403), ("submitter", 200, 202, 202), ("admin", 200, 202, 202)],
)
def test_roles(server: Server, role: str, read: int, submit: int, cancel: int) -> None:
    headers = server.key("lab-a", role)
    # reads of the own tenant's queued job: allowed for every role (409: no result yet)
    assert server.call("GET", "/results/{job}", headers).status_code == 409
    assert server.call("GET", "/download/{job}/report", headers).status_code == 409
    assert server.call("GET", "/config-templates", headers).status_code == 200
    assert server.call("POST", "/validate-config", headers).status_code == 200
    assert server.client.get("/audit", headers=headers).status_code == (
        200 if role == "admin" else 403
    )
    assert server.call("GET", "/status/{job}", headers).status_code == read
    assert server.call("GET", "/jobs", headers).status_code == read
    # NB: a run_id alone is a valid submission (a sample simulated from the seed)
    assert server.call("POST", "/submit", headers).status_code == submit
    assert server.call("POST", "/jobs/{job}/cancel", headers).status_code == cancel


@pytest.mark.parametrize("role", ["viewer", "submitter"])
@pytest.mark.parametrize(("method", "path"), [e for e in ENDPOINTS if "{job}" in e[1]])
def test_another_tenants_job_is_not_found(
    server: Server, role: str, method: str, path: str
) -> None:
    headers = server.key("lab-b", role)
    response = server.call(method, path, headers)
    assert response.status_code == 404, response.text
    listed = server.client.get("/jobs", headers=headers).json()
    assert server.job_a not in json.dumps(listed)
    # a guessed id is the same 404 as another tenant's real one
    guessed = server.client.request(method, path.format(job="j" * 26), headers=headers)
    assert guessed.status_code == 404
    assert response.json()["error"]["code"] == guessed.json()["error"]["code"]


def _token(claims: dict[str, Any], key: Any = SECRET, alg: str = "HS256", **header: Any) -> str:
    base = {"tenant": "lab-a", "role": "viewer", "sub": "alice", "exp": time.time() + 300}
    return jwt.encode(base | claims, key, algorithm=alg, headers=header or None)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_hs256_tokens(server: Server) -> None:
    assert server.client.get("/jobs", headers=_bearer(_token({}))).status_code == 200
    listed = server.client.get("/jobs", headers=_bearer(_token({"role": ["other", "viewer"]})))
    assert listed.status_code == 200
    refused = {
        "expired": _token({"exp": time.time() - 120}),
        "not yet valid": _token({"nbf": time.time() + 120}),
        "no expiry": jwt.encode({"tenant": "lab-a", "role": "viewer"}, SECRET, algorithm="HS256"),
        "wrong secret": _token({}, key="another secret of at least thirty-two characters"),
        "no tenant": _token({"tenant": None}),
        "no known role": _token({"role": "root"}),
    }
    header, payload, signature = _token({}).split(".")
    tampered = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered["tenant"] = "lab-b"
    refused["tampered"] = f"{header}.{_b64(json.dumps(tampered).encode())}.{signature}"
    unsigned = {"alg": "none", "typ": "JWT"}
    refused["alg none"] = f"{_b64(json.dumps(unsigned).encode())}.{payload}."
    for name, token in refused.items():
        response = server.client.get("/jobs", headers=_bearer(token))
        assert response.status_code == 401, (name, response.text)
        assert token not in response.text


def test_issuer_and_audience_are_checked(tmp_path: Path) -> None:
    strict = Server(
        tmp_path, auth_mode="jwt", jwt_secret=SECRET, jwt_issuer="https://idp", jwt_audience="mrd"
    )
    try:
        good = _token({"iss": "https://idp", "aud": "mrd"})
        assert strict.client.get("/jobs", headers=_bearer(good)).status_code == 200
        for claims in (
            {"iss": "https://evil", "aud": "mrd"},
            {"iss": "https://idp", "aud": "x"},
            {},
        ):
            response = strict.client.get("/jobs", headers=_bearer(_token(claims)))
            assert response.status_code == 401, claims
        # jwt mode: an API key is not a token
        assert strict.client.get("/jobs", headers=strict.key("lab-a", "admin")).status_code == 401
    finally:
        strict.close()


def _jwks(path: Path, keys: list[tuple[str, Any]]) -> None:
    entries = []
    for kid, private in keys:
        public_jwk = json.loads(
            jwt.algorithms.get_default_algorithms()[
                "RS256" if isinstance(private, rsa.RSAPrivateKey) else "ES256"
            ].to_jwk(private.public_key())
        )
        entries.append(public_jwk | {"kid": kid})
    path.write_text(json.dumps({"keys": entries}))


def test_rs256_and_es256_from_a_jwks_file_with_rotation(tmp_path: Path) -> None:
    rsa_old = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_new = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks = tmp_path / "jwks.json"
    _jwks(jwks, [("old", rsa_old), ("ec", ec_key)])
    served = Server(tmp_path / "data", auth_mode="jwt", jwt_jwks=str(jwks), jwt_secret=SECRET)
    try:
        for token in (
            _token({}, key=rsa_old, alg="RS256", kid="old"),
            _token({}, key=ec_key, alg="ES256", kid="ec"),
        ):
            assert served.client.get("/jobs", headers=_bearer(token)).status_code == 200
        # rotation: a token of a new kid is honoured once the JWKS has it (re-read on a miss,
        # at most every ten seconds; the first miss here is past the start-up read)
        _jwks(jwks, [("new", rsa_new)])
        new = _token({}, key=rsa_new, alg="RS256", kid="new")
        verifier = served.app.state.authenticator._tokens
        verifier._loaded_at -= 60  # NB: as if ten seconds had passed since the last read
        assert served.client.get("/jobs", headers=_bearer(new)).status_code == 200
        # an RSA key signing as ES256, and a token of an unknown kid, are refused
        wrong_type = _token({}, key=ec_key, alg="ES256", kid="new")
        assert served.client.get("/jobs", headers=_bearer(wrong_type)).status_code == 401
        # algorithm confusion: HS256 "signed" with the RSA public key as the HMAC secret
        public_pem = rsa_new.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "new"}).encode())
        body = _b64(
            json.dumps({"tenant": "lab-a", "role": "admin", "exp": time.time() + 300}).encode()
        )
        mac = hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
        confused = f"{head}.{body}.{_b64(mac)}"
        assert served.client.get("/jobs", headers=_bearer(confused)).status_code == 401
    finally:
        served.close()


def _stdout_json(output: str) -> str:
    """The JSON line of a command's output (the runner mixes in the migration's log lines)."""
    for line in output.splitlines():
        if line.startswith("[") or (line.startswith("{") and '"event"' not in line):
            return line
    raise AssertionError(f"no JSON in {output!r}")


def test_cli_keys_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRECISE_MRD_DATA_DIR", str(tmp_path))
    made = run_cli(["admin", "create-key", "--tenant", "lab-a", "--role", "submitter", "--json"])
    assert made.exit_code == 0, made.output
    created = json.loads(_stdout_json(made.output))
    assert set(created) == {"key_id", "key", "tenant", "role"}
    assert created["key"].startswith("pmrd_" + created["key_id"] + "_")
    listed = json.loads(_stdout_json(run_cli(["admin", "list-keys", "--json"]).output))
    assert [(k["key_id"], k["state"]) for k in listed] == [(created["key_id"], "active")]
    assert created["key"] not in run_cli(["admin", "list-keys"]).output
    revoked = run_cli(["admin", "revoke-key", created["key_id"], "--json"])
    assert json.loads(_stdout_json(revoked.output))["state"] == "revoked"
    for bad in (
        ["admin", "create-key", "--tenant", "lab-a", "--role", "root"],
        ["admin", "create-key", "--tenant", "lab-a", "--role", "viewer", "--expires", "soon"],
        ["admin", "revoke-key", "000000000000"],
    ):
        result = run_cli(bad)
        assert result.exit_code == 2 and "error:" in result.output, (bad, result.output)
        assert "Traceback" not in result.output


def test_rate_limit_per_key_with_headers_and_retry_after(tmp_path: Path) -> None:
    limited = Server(
        tmp_path,
        auth_mode="api_key",
        rate_limit="5/minute",
        tenant_rate_limit="8/minute",
        rate_limit_routes="POST /validate-config=2/minute",
    )
    try:
        first, second = limited.key("lab-a", "viewer"), limited.key("lab-a", "viewer")
        codes = [limited.client.get("/jobs", headers=first).status_code for _ in range(7)]
        assert codes == [200] * 5 + [429] * 2
        refused = limited.client.get("/jobs", headers=first)
        now = time.time()
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
        # the window is a clock-aligned minute: retry when the next one starts
        assert abs(int(refused.headers["Retry-After"]) - math.ceil(60 - now % 60)) <= 1
        assert refused.headers["Retry-After"] == refused.headers["RateLimit-Reset"]
        assert refused.headers["RateLimit-Remaining"] == "0"
        ok = limited.client.get("/jobs", headers=second)  # its own budget, the tenant's shared
        assert ok.status_code == 200 and ok.headers["RateLimit-Limit"] == "5"
        assert [limited.client.get("/jobs", headers=second).status_code for _ in range(3)] == [
            200,
            200,
            429,  # the tenant's 8 are used: 5 + 1 + 2 counted ones
        ]
        # a route's own budget
        third = limited.key("lab-c", "viewer")
        posts = [limited.call("POST", "/validate-config", third).status_code for _ in range(3)]
        assert posts == [200, 200, 429]
        # probes are never limited
        assert all(limited.client.get("/health/live").status_code == 200 for _ in range(10))
    finally:
        limited.close()


def test_rate_limits_are_shared_through_redis(tmp_path: Path) -> None:
    """Two app instances (as two API processes) with one Redis count one budget."""
    prefix = f"precise-mrd-test-{time.time_ns()}:"
    settings = {
        "auth_mode": "api_key",
        "rate_limit": "4/minute",
        "redis_url": "redis://127.0.0.1:6379/15",
        "cache_prefix": prefix,
    }
    one = Server(tmp_path / "one", **settings)
    two = Server(tmp_path / "two", **settings)
    try:
        _, key = one.keys.create(tenant="lab-a", role="viewer")
        # NB: the same key row in the second database, so both processes accept it
        info = one.keys.list()[0]
        from precise_mrd.service.db.models import ApiKeyRecord

        with (
            two.app.state.job_service.sessions.begin() as session,
            one.app.state.job_service.sessions() as source,
        ):
            record = source.get(ApiKeyRecord, info.key_id)
            assert record is not None
            session.merge(record)
        headers = {"X-API-Key": key}
        codes = [
            (one if k % 2 == 0 else two).client.get("/jobs", headers=headers).status_code
            for k in range(6)
        ]
        assert codes == [200, 200, 200, 200, 429, 429]
    finally:
        one.close()
        two.close()


def test_tenant_active_job_cap(tmp_path: Path) -> None:
    capped = Server(tmp_path, auth_mode="api_key", tenant_max_active_jobs=2)
    try:
        headers = capped.key("lab-a", "submitter")  # lab-a has one queued job already
        assert capped.call("POST", "/submit", headers).status_code == 202
        refused = capped.call("POST", "/submit", headers)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "30"
        assert "PRECISE_MRD_TENANT_MAX_ACTIVE_JOBS" in refused.json()["error"]["fix"]
        other = capped.key("lab-b", "submitter")
        assert capped.call("POST", "/submit", other).status_code == 202
    finally:
        capped.close()


def test_security_headers_and_cors(tmp_path: Path) -> None:
    served = Server(
        tmp_path, auth_mode="api_key", cors_origins="https://lims.example", docs_enabled=False
    )
    try:
        response = served.client.get("/health/live")
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["Cache-Control"] == "no-store"
        assert "Strict-Transport-Security" not in response.headers  # plain HTTP
        assert served.client.get("/docs").status_code == 404  # switched off
        preflight = served.client.options(
            "/jobs",
            headers={
                "Origin": "https://lims.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "X-API-Key",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://lims.example"
        assert preflight.headers["access-control-allow-credentials"] == "true"
        evil = served.client.options(
            "/jobs",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert "access-control-allow-origin" not in evil.headers
    finally:
        served.close()
    wildcard = Server(tmp_path / "w", cors_origins="*")
    try:
        response = wildcard.client.get("/health/live", headers={"Origin": "https://any.example"})
        assert response.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in response.headers
    finally:
        wildcard.close()


def test_docs_pages_carry_a_strict_policy_with_script_hashes(server: Server) -> None:
    for path in ("/docs", "/redoc"):
        policy = server.client.get(path).headers["Content-Security-Policy"]
        assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
        assert "frame-ancestors 'none'" in policy
    assert "sha256-" in server.client.get("/docs").headers["Content-Security-Policy"]


def test_admins_reach_every_tenant(server: Server) -> None:
    admin = server.key("ops", "admin")
    assert server.call("GET", "/status/{job}", admin).status_code == 200
    assert server.call("GET", "/results/{job}", admin).status_code == 409  # queued, no result
    listed = server.client.get("/jobs", params={"tenant": "lab-a"}, headers=admin).json()
    assert server.job_a in json.dumps(listed)
    assert server.job_a not in json.dumps(server.client.get("/jobs", headers=admin).json())
    viewer = server.key("lab-b", "viewer")
    refused = server.client.get("/jobs", params={"tenant": "lab-a"}, headers=viewer)
    assert refused.status_code == 403
    own = server.client.get("/jobs", params={"tenant": "lab-b"}, headers=viewer)
    assert own.status_code == 200


@pytest.mark.parametrize("tenant", ["../etc", "a/b", "", "x" * 129, "lab a"])
def test_tenant_names_are_plain(server: Server, tenant: str) -> None:
    with pytest.raises(ValueError, match="tenant"):
        server.keys.create(tenant=tenant, role="viewer")
    response = server.client.get("/jobs", headers=_bearer(_token({"tenant": tenant})))
    assert response.status_code == 401


def test_metrics_need_credentials_unless_public(tmp_path: Path) -> None:
    closed = Server(tmp_path / "closed", auth_mode="api_key")
    opened = Server(tmp_path / "open", auth_mode="api_key", public_metrics=True)
    try:
        assert closed.client.get("/metrics").status_code == 401
        assert closed.client.get("/metrics", headers=closed.key("ops", "viewer")).status_code == 200
        assert opened.client.get("/metrics").status_code == 200
    finally:
        closed.close()
        opened.close()


def test_cloud_credentials_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "aws_secret"
    secret.write_text("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY_FILE", str(secret))
    Settings(data_dir=tmp_path)
    import os

    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="AWS_SECRET_ACCESS_KEY_FILE"):
        Settings(data_dir=tmp_path)


@pytest.mark.parametrize(
    "kind", ["..%2F..%2Fjobs.db", "../../etc/passwd", "report%00.html", "x" * 300]
)
def test_download_types_are_a_closed_list(server: Server, kind: str) -> None:
    headers = server.key("lab-a", "viewer")
    response = server.client.get(f"/download/{server.job_a}/{kind}", headers=headers)
    assert response.status_code in (404, 422), response.text
    assert "jobs.db" not in response.text or response.status_code == 422
    assert len(response.content) < 4096


def test_jwks_from_a_url(tmp_path: Path) -> None:
    """A JWKS served over HTTP on loopback (an identity provider's keys endpoint)."""
    import http.server
    import threading

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _jwks(tmp_path / "jwks.json", [("k1", key)])
    body = (tmp_path / "jwks.json").read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/.well-known/jwks.json"
    served = Server(tmp_path / "data", auth_mode="jwt", jwt_jwks=url)
    try:
        token = _token({}, key=key, alg="RS256", kid="k1")
        assert served.client.get("/jobs", headers=_bearer(token)).status_code == 200
        hs = _token({})  # no HS256 secret on this server
        assert served.client.get("/jobs", headers=_bearer(hs)).status_code == 401
    finally:
        served.close()
        httpd.shutdown()
        httpd.server_close()
