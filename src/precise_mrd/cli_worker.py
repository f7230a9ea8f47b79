"""``precise-mrd worker``: a Celery worker for ``PRECISE_MRD_EXECUTOR=celery``.

::

    PRECISE_MRD_BROKER_URL=redis://127.0.0.1:6379/0 \\
    PRECISE_MRD_DATABASE_URL=postgresql+psycopg://mrd@db/mrd \\
    precise-mrd worker --concurrency 2 --queues precise-mrd

It reads the same settings as the API (database, data directory, job timeout, broker) and runs up
to ``--concurrency`` jobs at once (default ``MAX_CONCURRENT_JOBS``), each in a subprocess of its
own. SIGTERM gives running jobs back to the queue and exits; see ``docs/service.md``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from precise_mrd.cli_support import EXIT_USER_ERROR


def settings_or_exit(**overrides: object) -> object:
    """The service settings from the environment, or one line per invalid setting and exit 2."""
    from pydantic import ValidationError

    from precise_mrd.service.settings import get_settings, settings_problems

    try:
        return get_settings(**overrides)
    except ValidationError as error:
        for line in settings_problems(error):
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None


def register(app: typer.Typer) -> None:
    """Add the ``worker`` command to ``app``."""

    @app.command()
    def worker(
        concurrency: Annotated[
            int | None,
            typer.Option(min=1, max=64, help="Jobs run at once (env MAX_CONCURRENT_JOBS)."),
        ] = None,
        queues: Annotated[
            str | None,
            typer.Option(
                help="Comma-separated queues to take jobs from (env PRECISE_MRD_CELERY_QUEUE)."
            ),
        ] = None,
        hostname: Annotated[
            str | None, typer.Option(help="Celery node name (precise-mrd@<host>).")
        ] = None,
        metrics_port: Annotated[
            int | None,
            typer.Option(min=1, max=65535, help="Serve Prometheus metrics on this port."),
        ] = None,
        metrics_host: Annotated[
            str, typer.Option(help="Address of the metrics server (0.0.0.0 in a pod).")
        ] = "127.0.0.1",
    ) -> None:
        """Run jobs from the broker (PRECISE_MRD_BROKER_URL) until stopped."""
        from precise_mrd.service.observability import configure_logging
        from precise_mrd.service.settings import Settings

        settings = settings_or_exit(executor="celery")
        assert isinstance(settings, Settings)
        names = [
            name.strip() for name in (queues or settings.celery_queue).split(",") if name.strip()
        ]
        if not names:
            raise typer.BadParameter("name at least one queue", param_hint="--queues")
        configure_logging(settings.log_level)
        from precise_mrd.service.jobs.celery_worker import run_worker

        try:
            code = run_worker(
                settings,
                concurrency=concurrency or settings.max_concurrent_jobs,
                queues=names,
                hostname=hostname,
                metrics_port=metrics_port,
                metrics_host=metrics_host,
            )
        except RuntimeError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None
        raise typer.Exit(code)
