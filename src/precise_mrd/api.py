"""``python -m precise_mrd.api``: serve the API with uvicorn, configured from the environment.

::

    python -m precise_mrd.api [--host H] [--port P] [--workers N] [--reload] [--log-level debug]

Host, port and log level default to ``PRECISE_MRD_API_HOST`` (127.0.0.1), ``PRECISE_MRD_API_PORT``
(8000) and ``PRECISE_MRD_LOG_LEVEL`` (info); the options win over them. ``--workers N``
(``PRECISE_MRD_API_WORKERS``, default 1) serves from N processes sharing the port; each builds
its own app (and, with the local executor, runs up to ``MAX_CONCURRENT_JOBS`` jobs). The app
is built by :func:`app_from_environment` (a factory, so ``--reload`` re-imports it cleanly):
SQLite, a local artifact directory and the local executor, all under ``PRECISE_MRD_DATA_DIR``.
Migrations run at start-up. SIGINT/SIGTERM stop the server gracefully: in-flight requests
finish (up to 30 s) and running jobs are put back in the queue. With
``PRECISE_MRD_SHUTDOWN_DRAIN_SECONDS``, SIGTERM first turns readiness to 503 and keeps serving
that long, so a load balancer stops sending before the server stops listening.

>>> parse_args(["--port", "0", "--log-level", "DEBUG"]).log_level
'debug'
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # NB: `precise-mrd --help` imports this module; fastapi costs ~0.3 s
    from fastapi import FastAPI

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def app_from_environment() -> FastAPI:
    """The app over settings read from the environment (uvicorn's factory)."""
    from precise_mrd.service.app import create_app
    from precise_mrd.service.settings import get_settings

    return create_app(get_settings(), freeze_heap_on_start=True)


def serve(
    *,
    host: str | None = None,
    port: int | None = None,
    reload: bool = False,
    workers: int | None = None,
    log_level: str | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    ssl_ca_certs: str | None = None,
) -> None:
    """Run uvicorn until interrupted; ``None`` means "from the environment".

    Refuses (``SystemExit`` with the reason) to serve without authentication on an address other
    hosts can reach. TLS with ``ssl_certfile``/``ssl_keyfile`` (``PRECISE_MRD_TLS_CERTFILE``,
    ``PRECISE_MRD_TLS_KEYFILE``); with ``ssl_ca_certs`` (``PRECISE_MRD_TLS_CLIENT_CA``) every
    client must present a certificate signed by that CA (mutual TLS)."""
    import ssl

    import uvicorn
    from pydantic import ValidationError

    from precise_mrd.service.security.auth import check_bind_address
    from precise_mrd.service.serving import HeaderDeadlineProtocol
    from precise_mrd.service.settings import get_settings, settings_problems

    if log_level is not None:
        # NB: --reload serves from a child process that reads settings again; pass it on.
        os.environ["PRECISE_MRD_LOG_LEVEL"] = log_level
    try:
        settings = get_settings()
    except ValidationError as error:
        raise SystemExit("\n".join(f"error: {line}" for line in settings_problems(error))) from None
    bind = host or settings.api_host
    try:
        check_bind_address(bind, settings.auth_mode, settings.allow_unauthenticated)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    certfile = ssl_certfile or settings.tls_certfile or None
    keyfile = ssl_keyfile or settings.tls_keyfile or None
    client_ca = ssl_ca_certs or settings.tls_client_ca or None
    if bool(certfile) != bool(keyfile):
        raise SystemExit("error: TLS needs both --ssl-certfile and --ssl-keyfile")
    if client_ca and not certfile:
        raise SystemExit("error: --ssl-ca-certs (client certificates) needs --ssl-certfile")
    if certfile:
        # NB: the app sends HSTS when it knows TLS is on
        os.environ["PRECISE_MRD_TLS_CERTFILE"] = certfile
    processes = settings.api_workers if workers is None else workers
    if processes < 1:
        raise SystemExit(f"error: --workers must be at least 1; got {processes}")
    if reload and processes > 1:
        raise SystemExit("error: --reload serves from one process; drop --workers or --reload")
    uvicorn.run(
        "precise_mrd.api:app_from_environment",
        factory=True,
        host=bind,
        port=settings.api_port if port is None else port,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        ssl_ca_certs=client_ca,
        ssl_cert_reqs=ssl.CERT_REQUIRED if client_ca else ssl.CERT_NONE,
        reload=reload,
        workers=processes if processes > 1 else None,
        log_config=None,  # NB: the app configures JSON logging itself
        log_level=settings.log_level,
        proxy_headers=True,
        # NB: httptools with a deadline for request headers (slow clients; serving.py)
        http=HeaderDeadlineProtocol,
        loop=settings.event_loop,
        timeout_graceful_shutdown=30,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m precise_mrd.api", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default=None, help="bind address (PRECISE_MRD_API_HOST)")
    parser.add_argument("--port", type=int, default=None, help="port (PRECISE_MRD_API_PORT)")
    parser.add_argument("--reload", action="store_true", help="restart on code changes (dev)")
    parser.add_argument(
        "--workers", type=int, default=None, help="server processes (PRECISE_MRD_API_WORKERS, 1)"
    )
    parser.add_argument("--ssl-certfile", default=None, help="TLS certificate (PEM)")
    parser.add_argument("--ssl-keyfile", default=None, help="TLS private key (PEM)")
    parser.add_argument("--ssl-ca-certs", default=None, help="CA of client certificates (mTLS)")
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        default=None,
        help="log level (PRECISE_MRD_LOG_LEVEL)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    serve(
        host=args.host,
        port=args.port,
        reload=args.reload,
        workers=args.workers,
        log_level=args.log_level,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        ssl_ca_certs=args.ssl_ca_certs,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
