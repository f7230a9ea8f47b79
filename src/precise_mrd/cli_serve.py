"""The ``precise-mrd serve`` command: the same server as ``python -m precise_mrd.api``.

``cli.py`` wires it in with ``register(app)``; the options and defaults are those of
:mod:`precise_mrd.api` (environment first, options win).
"""

from __future__ import annotations

from typing import Annotated

import typer

from precise_mrd.api import LOG_LEVELS


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to ``app``."""

    @app.command()
    def serve(
        host: Annotated[
            str | None, typer.Option(help="Bind address (env PRECISE_MRD_API_HOST, 127.0.0.1)")
        ] = None,
        port: Annotated[
            int | None, typer.Option(help="Port (env PRECISE_MRD_API_PORT, 8000)")
        ] = None,
        reload: Annotated[
            bool, typer.Option(help="Restart on code changes (development).")
        ] = False,
        workers: Annotated[
            int | None,
            typer.Option(
                min=1, help="Server processes sharing the port (env PRECISE_MRD_API_WORKERS, 1)"
            ),
        ] = None,
        log_level: Annotated[
            str | None,
            typer.Option(help=f"One of {', '.join(LOG_LEVELS)} (env PRECISE_MRD_LOG_LEVEL)"),
        ] = None,
        ssl_certfile: Annotated[
            str | None, typer.Option(help="TLS certificate, PEM (env PRECISE_MRD_TLS_CERTFILE)")
        ] = None,
        ssl_keyfile: Annotated[
            str | None, typer.Option(help="TLS private key, PEM (env PRECISE_MRD_TLS_KEYFILE)")
        ] = None,
        ssl_ca_certs: Annotated[
            str | None,
            typer.Option(
                help="CA whose client certificates are required: mutual TLS "
                "(env PRECISE_MRD_TLS_CLIENT_CA)"
            ),
        ] = None,
    ) -> None:
        """Serve the job API (SQLite, local artifact store and local executor by default)."""
        from precise_mrd.api import serve as run_server

        if log_level is not None and log_level.lower() not in LOG_LEVELS:
            raise typer.BadParameter(
                f"{log_level!r} is not a log level; use one of {', '.join(LOG_LEVELS)}",
                param_hint="--log-level",
            )
        run_server(
            host=host,
            port=port,
            reload=reload,
            workers=workers,
            log_level=log_level.lower() if log_level else None,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
            ssl_ca_certs=ssl_ca_certs,
        )
