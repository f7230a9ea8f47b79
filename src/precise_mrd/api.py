"""``python -m precise_mrd.api``: serve the API with uvicorn, configured from the environment.

::

    python -m precise_mrd.api [--host H] [--port P] [--reload] [--log-level debug]

Host, port and log level default to ``PRECISE_MRD_API_HOST`` (127.0.0.1), ``PRECISE_MRD_API_PORT``
(8000) and ``PRECISE_MRD_LOG_LEVEL`` (info); the options win over them. The app is built by
:func:`app_from_environment` (a factory, so ``--reload`` re-imports it cleanly): SQLite, a local
artifact directory and the local executor, all under ``PRECISE_MRD_DATA_DIR``. Migrations run at
start-up. SIGINT/SIGTERM stop the server gracefully: running jobs are put back in the queue.

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

    return create_app(get_settings())


def serve(
    *,
    host: str | None = None,
    port: int | None = None,
    reload: bool = False,
    log_level: str | None = None,
) -> None:
    """Run uvicorn until interrupted; ``None`` means "from the environment"."""
    import uvicorn

    from precise_mrd.service.settings import get_settings

    if log_level is not None:
        # NB: --reload serves from a child process that reads settings again; pass it on.
        os.environ["PRECISE_MRD_LOG_LEVEL"] = log_level
    settings = get_settings()
    uvicorn.run(
        "precise_mrd.api:app_from_environment",
        factory=True,
        host=host or settings.api_host,
        port=settings.api_port if port is None else port,
        reload=reload,
        log_config=None,  # NB: the app configures JSON logging itself
        log_level=settings.log_level,
        proxy_headers=True,
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
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        default=None,
        help="log level (PRECISE_MRD_LOG_LEVEL)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    serve(host=args.host, port=args.port, reload=args.reload, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
