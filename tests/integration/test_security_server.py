"""Security of the served API, as a process: TLS (a certificate made here), mutual TLS, the
refusal to serve without auth off loopback, and secrets read from files that never show in
``/health``, error bodies or the logs."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from databases import postgres_database
from servers import ROOT, Server

Key = ec.EllipticCurvePrivateKey


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(
    subject: str, key: Key, issuer: tuple[str, Key] | None, *, server: bool = False
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif issuer is not None:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: Path, name: str, cert: x509.Certificate, key: Key) -> tuple[str, str]:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all made here."""
    directory = tmp_path_factory.mktemp("pki")
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _certificate("test CA", ca_key, None)
    return {
        "ca": _write(directory, "ca", ca, ca_key),
        "server": _write(
            directory,
            "server",
            _certificate("127.0.0.1", server_key, ("test CA", ca_key), server=True),
            server_key,
        ),
        "client": _write(
            directory, "client", _certificate("worker", client_key, ("test CA", ca_key)), client_key
        ),
    }


def test_https_with_a_certificate_made_here(
    tmp_path: Path, pki: dict[str, tuple[str, str]]
) -> None:
    cert, key = pki["server"]
    ca = pki["ca"][0]
    server = Server(tmp_path, verify=ca, PRECISE_MRD_TLS_CERTFILE=cert, PRECISE_MRD_TLS_KEYFILE=key)
    try:
        assert server.url.startswith("https://")
        response = requests.get(server.url + "/health/live", verify=ca, timeout=5)
        assert response.status_code == 200
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
        # plain HTTP to the TLS port: no answer a client could mistake for one
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{server.port}/health/live", timeout=5)
        # and a client that does not trust the certificate refuses it
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(server.url + "/health/live", timeout=5)
    finally:
        server.stop()


def test_mutual_tls_requires_a_client_certificate(
    tmp_path: Path, pki: dict[str, tuple[str, str]]
) -> None:
    cert, key = pki["server"]
    ca = pki["ca"][0]
    client = pki["client"]
    server = Server(
        tmp_path,
        verify=ca,
        cert=client,
        PRECISE_MRD_TLS_CERTFILE=cert,
        PRECISE_MRD_TLS_KEYFILE=key,
        PRECISE_MRD_TLS_CLIENT_CA=ca,
    )
    try:
        ok = requests.get(server.url + "/health/live", verify=ca, cert=client, timeout=5)
        assert ok.status_code == 200
        with pytest.raises(requests.exceptions.ConnectionError):  # SSLError is one
            requests.get(server.url + "/health/live", verify=ca, timeout=5)
    finally:
        server.stop()


def test_no_auth_off_loopback_refuses_to_start(tmp_path: Path) -> None:
    env = {"PRECISE_MRD_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "precise_mrd.api", "--host", "0.0.0.0", "--port", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "refusing to serve on 0.0.0.0 without authentication" in done.stderr
    assert (
        "PRECISE_MRD_AUTH_MODE" in done.stderr
        and "PRECISE_MRD_ALLOW_UNAUTHENTICATED" in done.stderr
    )
    assert "Traceback" not in done.stderr


def test_secrets_from_files_never_show(tmp_path: Path) -> None:
    """The database password and the JWT secret come from files; neither appears in /health,
    an error body, or the server's log (at debug level)."""
    password = "s3cret-Pw-9f2c7"  # NB: trust auth ignores it; it only has to travel
    jwt_secret = "jwt-secret-that-must-not-leak-0123456789abcdef"
    with postgres_database() as url:
        with_password = url.replace("postgres@", f"postgres:{password}@", 1)
        assert password in with_password
        (tmp_path / "db_url").write_text(with_password + "\n")
        (tmp_path / "jwt").write_text(jwt_secret)
        server = Server(
            tmp_path / "data",
            PRECISE_MRD_DATABASE_URL_FILE=str(tmp_path / "db_url"),
            PRECISE_MRD_JWT_SECRET_FILE=str(tmp_path / "jwt"),
            PRECISE_MRD_AUTH_MODE="jwt",
            PRECISE_MRD_LOG_LEVEL="debug",
        )
        try:
            health = requests.get(server.url + "/health", timeout=10)
            assert health.status_code == 200, health.text
            denied = requests.get(
                server.url + "/jobs", headers={"Authorization": "Bearer x.y.z"}, timeout=10
            )
            assert denied.status_code == 401
            missing = requests.get(server.url + "/nope", timeout=10)
            bodies = health.text + denied.text + missing.text
        finally:
            server.stop()
        log = server.log_path.read_text(errors="replace")
        assert "postgresql" in log  # the log names the database, without its password
        for secret in (password, jwt_secret):
            assert secret not in bodies
            assert secret not in log
