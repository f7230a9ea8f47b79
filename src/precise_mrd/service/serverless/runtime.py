"""What every serverless handler shares, built once per cold start.

A function instance lives for many invocations and is frozen between them, so nothing may run in
the background: no executor thread, no kernel warmer. The API therefore runs with an
:class:`InlineDispatcher`: a submission's message is sent to the Celery broker before the response
leaves, and the orphan recovery, re-sending and clean-up that the executor thread does in a
server run when :meth:`ServerlessRuntime.maintain` is called (AWS: a scheduled function).

>>> ServerlessRuntime.check_executor("local", needs_workers=True)
Traceback (most recent call last):
...
precise_mrd.core.errors.ConfigError: config PRECISE_MRD_EXECUTOR: is 'local', but a function \
cannot run a job after it has answered; fix: set PRECISE_MRD_EXECUTOR=celery and \
PRECISE_MRD_BROKER_URL, and run `precise-mrd worker` somewhere
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from precise_mrd.core.errors import ConfigError
from precise_mrd.service.settings import Settings, get_settings
from precise_mrd.service.storage import ArtifactStore, store_from_settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from precise_mrd.service.jobs.celery_executor import CeleryExecutor
    from precise_mrd.service.jobs.service import SqlJobService

logger = logging.getLogger("precise_mrd.service.serverless")


class InlineDispatcher:
    """The Celery executor without its thread: :meth:`notify` sends what is due at once."""

    name = "celery"
    is_alive = True  # NB: nothing to be alive; /health asks the broker through check()

    def __init__(self, executor: CeleryExecutor) -> None:
        self.executor = executor
        self.settings = executor.settings

    def notify(self) -> None:
        sent = self.executor.dispatch_due()
        logger.debug("sent %d job message(s) inline", sent)

    def check(self) -> None:
        self.executor.check()

    def queue_length(self) -> int:
        return self.executor.queue_length()

    def maintain(self) -> dict[str, int]:
        """Recover orphans, send what is due, delete expired jobs; return the counts."""
        from precise_mrd.service.jobs.supervision import cleanup_finished, recover_orphans

        recovered = recover_orphans(self.executor.service, self.settings, self.executor.host)
        sent = self.executor.dispatch_due()
        deleted = cleanup_finished(self.executor.service, self.settings)
        return {"recovered": len(recovered), "sent": sent, "deleted": deleted}


@dataclass
class ServerlessRuntime:
    """Settings, store, job service, dispatcher and (on first use) the app of one instance."""

    settings: Settings
    store: ArtifactStore
    service: SqlJobService
    dispatcher: InlineDispatcher | None
    engines: list[Any] = field(default_factory=list)
    _app: FastAPI | None = None

    @staticmethod
    def check_executor(executor: str, *, needs_workers: bool) -> None:
        """The API's jobs need workers: a function is frozen once it has answered."""
        if needs_workers and executor != "celery":
            raise ConfigError(
                "PRECISE_MRD_EXECUTOR",
                f"is {executor!r}, but a function cannot run a job after it has answered",
                "set PRECISE_MRD_EXECUTOR=celery and PRECISE_MRD_BROKER_URL, and run "
                "`precise-mrd worker` somewhere",
            )

    @classmethod
    def build(cls, settings: Settings) -> ServerlessRuntime:
        """Open the store and the database (migrating it when the settings say so)."""
        from precise_mrd.service.app import build_sql_service
        from precise_mrd.service.observability import configure_logging

        configure_logging(settings.log_level)
        if settings.database_migrate_on_start:
            from precise_mrd.service.db import upgrade_database

            upgrade_database(settings.database_url)
        store = store_from_settings(settings)
        service, engines = build_sql_service(settings, store)
        dispatcher = None
        if settings.executor == "celery":
            from precise_mrd.service.jobs.celery_executor import CeleryExecutor

            dispatcher = InlineDispatcher(CeleryExecutor(service, settings))  # type: ignore[arg-type]
        return cls(settings, store, service, dispatcher, engines)  # type: ignore[arg-type]

    @property
    def app(self) -> FastAPI:
        """The service's FastAPI app, with the inline dispatcher as its executor."""
        if self._app is None:
            self.check_executor(self.settings.executor, needs_workers=True)
            from precise_mrd.service.app import create_app

            app = create_app(
                self.settings, job_service=self.service, store=self.store, start_executor=False
            )
            app.state.executor = self.dispatcher
            app.state.metrics.executor = self.dispatcher
            app.state.metrics.executor_name = self.settings.executor
            self._app = app
        return self._app

    def maintain(self) -> dict[str, int]:
        """One turn of the executor's housekeeping (see :meth:`InlineDispatcher.maintain`)."""
        if self.dispatcher is None:
            from precise_mrd.service.jobs.supervision import cleanup_finished

            return {"deleted": cleanup_finished(self.service, self.settings)}
        return self.dispatcher.maintain()

    def close(self) -> None:
        for engine in self.engines:
            engine.dispose()


_lock = threading.Lock()
_current: ServerlessRuntime | None = None


def current_runtime() -> ServerlessRuntime:
    """This instance's runtime, built from the environment at the first call."""
    global _current
    with _lock:
        if _current is None:
            _current = ServerlessRuntime.build(get_settings())
        return _current


def reset_runtime() -> None:
    """Forget this instance's runtime (the next call builds it again from the environment)."""
    global _current
    with _lock:
        if _current is not None:
            _current.close()
        _current = None
