"""The Celery application: the queue carries job ids, the database keeps the jobs.

A message is ``precise_mrd.run_job(job_id, request_id=...)`` on the queue
``PRECISE_MRD_CELERY_QUEUE`` (default ``precise-mrd``) of ``PRECISE_MRD_BROKER_URL`` (Redis:
``redis://host:6379/0``; RabbitMQ: ``amqp://user:password@host:5672/vhost``). Nothing else travels:
the spec, the state, the progress and the result are rows of the job database, so a lost or
duplicated message never loses or doubles a job (a duplicate finds the job claimed and does
nothing; a lost one is sent again after ``PRECISE_MRD_REDISPATCH_SECONDS``).

Settings for jobs that run for an hour (see ``docs/service.md``, "Celery workers"):

* ``task_acks_late`` and ``task_reject_on_worker_lost``: a message is acknowledged when its job
  ends, so a worker that dies mid-job leaves it to the broker to deliver again;
* ``worker_prefetch_multiplier = 1``: a worker holds no more messages than it runs jobs, so a burst
  spreads over every worker instead of queueing behind the first;
* Redis ``visibility_timeout`` above ``JOB_TIMEOUT_SECONDS`` + the kill grace: an unacknowledged
  message is not handed to a second worker while the first still runs the job;
* RabbitMQ publisher confirms (a submitted job's message is on the broker's disk when ``send``
  returns) on a durable queue with persistent messages; RabbitMQ's own ``consumer_timeout``
  (``rabbitmq.conf``, default 30 minutes) must exceed ``JOB_TIMEOUT_SECONDS``;
* results are not stored in Celery (``task_ignore_result``): they are in the job database.

>>> from precise_mrd.service.settings import Settings
>>> app = make_celery(Settings(executor="celery", broker_url="redis://127.0.0.1:6379/0",
...                            job_timeout_seconds=3600))
>>> app.conf.task_acks_late, app.conf.worker_prefetch_multiplier
(True, 1)
>>> app.conf.broker_transport_options["visibility_timeout"]
4230
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from celery import Celery
from kombu.entity import Queue

from precise_mrd.service.settings import Settings
from precise_mrd.service.urls import display_broker

logger = logging.getLogger("precise_mrd.service.celery")

TASK_NAME = "precise_mrd.run_job"
#: the visibility timeout's margin above the hard time limit
VISIBILITY_MARGIN_SECONDS = 600


def broker_kind(url: str) -> str:
    """``redis`` or ``amqp`` from a broker URL.

    >>> broker_kind("rediss://cache:6380/0"), broker_kind("amqp://guest@mq//")
    ('redis', 'amqp')
    """
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss", "redis+socket"):
        return "redis"
    if scheme in ("amqp", "amqps", "pyamqp"):
        return "amqp"
    raise ValueError(
        f"PRECISE_MRD_BROKER_URL scheme {scheme!r} is not supported; use redis://, rediss://, "
        "amqp:// or amqps://"
    )


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured from ``settings`` (no task registered: see the worker module)."""
    kind = broker_kind(settings.broker_url)
    hard_limit = settings.job_timeout_seconds + settings.job_kill_grace_seconds
    transport_options: dict[str, Any] = {}
    if kind == "redis":
        transport_options["visibility_timeout"] = int(hard_limit + VISIBILITY_MARGIN_SECONDS)
        transport_options["socket_connect_timeout"] = settings.broker_connect_timeout_seconds
    else:
        transport_options["confirm_publish"] = True
    app = Celery("precise_mrd", set_as_current=False)
    app.conf.update(
        broker_url=settings.broker_url,
        broker_transport_options=transport_options,
        broker_connection_timeout=settings.broker_connect_timeout_seconds,
        broker_connection_retry_on_startup=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.celery_queue,
        task_queues=[Queue(settings.celery_queue, durable=True)],  # type: ignore[no-untyped-call]
        task_create_missing_queues=True,
        task_publish_retry=True,
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        enable_utc=True,
    )
    return app


def send_jobs(app: Celery, settings: Settings, jobs: Iterable[tuple[str, str | None]]) -> list[str]:
    """Publish ``(job_id, request_id)`` messages; return the ids sent. Stops at the first
    broker error (logged): the rest stay due and are sent at the next try."""
    pending = list(jobs)
    sent: list[str] = []
    try:
        with app.producer_or_acquire() as producer:
            for job_id, request_id in pending:
                app.send_task(
                    TASK_NAME,
                    args=[job_id],
                    kwargs={"request_id": request_id},
                    queue=settings.celery_queue,
                    producer=producer,
                )
                sent.append(job_id)
    except Exception as error:  # NB: kombu raises several families; each means "not sent"
        logger.warning(
            "broker %s: %d job message(s) not sent (%s); they are sent again at the next try",
            display_broker(settings.broker_url),
            len(pending) - len(sent),
            error,
        )
    return sent


def queue_length(app: Celery, queue: str, *, timeout: float = 2.0) -> int:
    """Messages waiting in ``queue`` on the broker (0 when the queue does not exist yet)."""
    with app.connection_for_read() as connection:
        connection.ensure_connection(max_retries=1, timeout=timeout)
        channel = connection.default_channel
        try:
            declared = channel.queue_declare(queue=queue, passive=True)
        except connection.channel_errors:
            return 0
        return int(declared.message_count)


def check_broker(app: Celery, *, timeout: float = 2.0) -> None:
    """Raise a one-line error naming the broker when it does not answer."""
    try:
        with app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as error:
        raise RuntimeError(
            f"broker {display_broker(app.conf.broker_url)} is unreachable: {error}"
        ) from None
