"""Finished jobs, kept in memory: a job in a terminal state never changes again.

``GET /status`` is the request clients repeat most; for a finished job the answer is fixed, so
each API process keeps the last :data:`MAX_ENTRIES` finished jobs it read, for
:data:`TTL_SECONDS`, and answers them (status, and the summary ``GET /results`` shows) without
the database, and ``/status`` without a thread. The one change a finished job still sees is its
deletion (retention, ``CLEANUP_OLD_JOBS_HOURS``): this process forgets a job it deletes at once;
another process may show a deleted job's status and summary for up to :data:`TTL_SECONDS` (its
files are gone at once: downloads read the store). A finished job stays readable from memory
while the database is down.

>>> from datetime import UTC, datetime
>>> from precise_mrd.service.jobs.model import JobSpec, JobState, JobView
>>> def view(state):
...     now = datetime.now(UTC)
...     return JobView("j1", JobSpec("r", 1, "", tenant_id="lab-a"), state, 1.0, None, None,
...                    now, now, now, 1, None, {})
>>> cache = FinishedJobs()
>>> cache.remember(view(JobState.RUNNING)); cache.find("j1") is None
True
>>> cache.remember(view(JobState.COMPLETE)); cache.find("j1").state
<JobState.COMPLETE: 'COMPLETE'>
>>> cache.forget("j1"); cache.find("j1") is None
True

Memory follows the last minute's reads, not the 10,000 bound: expired jobs leave as new ones come.

>>> short = FinishedJobs(ttl_seconds=0.0)
>>> for n in range(3):
...     short.remember(JobView(f"j{n}", JobSpec("r", 1, ""), JobState.COMPLETE, 1.0, None, None,
...                            datetime.now(UTC), None, None, 1, None, {}))
>>> len(short)
1
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from precise_mrd.service.jobs.model import JobView

#: finished jobs one API process keeps
MAX_ENTRIES = 10_000
#: how long one is kept (bounds how long another process's deletion goes unseen)
TTL_SECONDS = 60.0


class FinishedJobs:
    """A bounded, expiring map of job id -> its final view (thread-safe); expired entries are
    dropped as new ones arrive."""

    def __init__(self, max_entries: int = MAX_ENTRIES, ttl_seconds: float = TTL_SECONDS) -> None:
        self._entries: OrderedDict[str, tuple[float, JobView]] = OrderedDict()
        self._lock = threading.Lock()
        self._max_entries = max_entries
        self._ttl = ttl_seconds

    def remember(self, job: JobView) -> None:
        """Keep ``job`` if it is finished (anything else may still change)."""
        if not job.state.is_terminal:
            return
        now = time.monotonic()
        with self._lock:
            self._entries[job.job_id] = (now + self._ttl, job)
            self._entries.move_to_end(job.job_id)
            # NB: oldest first, and all share one TTL: the expired are at the front
            while self._entries and (
                len(self._entries) > self._max_entries
                or next(iter(self._entries.values()))[0] < now
            ):
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def find(self, job_id: str) -> JobView | None:
        """The kept final view of ``job_id``, or None (never kept, expired or forgotten)."""
        with self._lock:
            entry = self._entries.get(job_id)
            if entry is None:
                return None
            if entry[0] < time.monotonic():
                del self._entries[job_id]
                return None
            return entry[1]

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._entries.pop(job_id, None)
