"""SqlJobService on a real database, SQLite and PostgreSQL (the ``db_url`` fixture): states,
tenants, pagination, cancel, claims, deletion, read routing."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, select, update
from sqlalchemy.orm import Session, sessionmaker

from precise_mrd.service.db import (
    JobEventRecord,
    JobRecord,
    create_engine_for_url,
    make_session_factory,
    upgrade_database,
)
from precise_mrd.service.jobs.model import (
    TERMINAL_STATES,
    JobNotFoundError,
    JobSpec,
    JobState,
    JobStateError,
    SubmitLimits,
    SubmitRefusedError,
)
from precise_mrd.service.jobs.service import (
    ALLOWED_TRANSITIONS,
    InvalidCursorError,
    SqlJobService,
    decode_cursor,
    encode_cursor,
)
from precise_mrd.service.settings import Settings
from precise_mrd.service.storage import ArtifactNotFoundError, LocalArtifactStore

S = JobState


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(data_dir=tmp_path, database_url=db_url, max_page_size=10)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    upgrade_database(settings.database_url)
    engine = create_engine_for_url(settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def service(sessions: sessionmaker[Session], settings: Settings) -> SqlJobService:
    return SqlJobService(sessions, LocalArtifactStore(settings.artifact_dir), settings)


def _spec(run_id: str = "run", tenant: str = "t1", **kwargs: object) -> JobSpec:
    return JobSpec(run_id=run_id, seed=1, config_yaml="", tenant_id=tenant, **kwargs)  # type: ignore[arg-type]


def _force_state(sessions: sessionmaker[Session], job_id: str, state: JobState) -> None:
    with sessions.begin() as session:
        session.execute(update(JobRecord).where(JobRecord.id == job_id).values(state=state.value))


def test_submit_stores_a_queued_job_with_its_spec(service: SqlJobService) -> None:
    spec = _spec(
        run_id="patient-7",
        owner_id="alice",
        use_parallel=True,
        inputs={"reads": "uploads/x/reads.bam"},
        request_id="req-1",
    )
    job = service.submit(spec)
    again = service.get(job.job_id, tenant_id="t1")
    assert again.state == S.QUEUED and again.progress == 0.0 and again.attempts == 0
    assert again.spec == spec
    assert again.created_at.tzinfo is not None
    assert abs(again.created_at - datetime.now(UTC)) < timedelta(seconds=30)
    assert [(e.from_state, e.to_state) for e in service.events(job.job_id)] == [(None, S.QUEUED)]
    explicit = service.submit(spec, job_id="my-own-id")
    assert explicit.job_id == "my-own-id"


def test_tenant_isolation(service: SqlJobService) -> None:
    mine = service.submit(_spec(tenant="t1"))
    service.submit(_spec(tenant="t2"))
    with pytest.raises(JobNotFoundError):
        service.get(mine.job_id, tenant_id="t2")
    with pytest.raises(JobNotFoundError):
        service.cancel(mine.job_id, tenant_id="t2")
    with pytest.raises(JobNotFoundError):
        service.artifact_path(mine.job_id, "report", tenant_id="t2")
    page, _ = service.list_jobs(tenant_id="t2")
    assert mine.job_id not in {job.job_id for job in page} and len(page) == 1
    assert service.get(mine.job_id, tenant_id="t1").state == S.QUEUED


@pytest.mark.parametrize("source", list(JobState))
def test_every_edge_of_the_state_machine(
    service: SqlJobService, sessions: sessionmaker[Session], source: JobState
) -> None:
    for target in JobState:
        job = service.submit(_spec())
        _force_state(sessions, job.job_id, source)
        if target in ALLOWED_TRANSITIONS[source]:
            assert service.transition(job.job_id, from_states=[source], to_state=target)
            moved = service.load(job.job_id)
            assert moved.state == target
            assert (moved.finished_at is not None) == (target in TERMINAL_STATES)
            assert service.events(job.job_id)[-1].to_state == target
        else:
            with pytest.raises(ValueError, match="not allowed"):
                service.transition(job.job_id, from_states=[source], to_state=target)
            assert service.load(job.job_id).state == source
    if source.is_terminal:
        assert not ALLOWED_TRANSITIONS[source]


def test_transition_from_the_wrong_state_changes_nothing(service: SqlJobService) -> None:
    job = service.submit(_spec())
    assert not service.transition(job.job_id, from_states=[S.RUNNING], to_state=S.COMPLETE)
    assert service.load(job.job_id).state == S.QUEUED
    assert not service.transition("no-such-job", from_states=[S.QUEUED], to_state=S.CANCELED)


def test_cancel(service: SqlJobService, sessions: sessionmaker[Session]) -> None:
    queued = service.submit(_spec())
    canceled = service.cancel(queued.job_id, tenant_id="t1")
    assert canceled.state == S.CANCELED and canceled.finished_at is not None
    assert canceled.reason == "canceled on request"

    running = service.submit(_spec())
    _force_state(sessions, running.job_id, S.RUNNING)
    assert service.cancel(running.job_id, tenant_id="t1").state == S.CANCELING
    assert service.cancel(running.job_id, tenant_id="t1").state == S.CANCELING  # idempotent

    for final in (S.COMPLETE, S.CANCELED):
        done = service.submit(_spec())
        _force_state(sessions, done.job_id, final)
        with pytest.raises(JobStateError) as raised:
            service.cancel(done.job_id, tenant_id="t1")
        assert raised.value.state == final


def test_claims_are_exclusive_under_concurrency(service: SqlJobService, settings: Settings) -> None:
    submitted = [service.submit(_spec(run_id=f"r{i}")).job_id for i in range(30)]
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer() -> None:
        engine = create_engine_for_url(settings.database_url)  # its own connections
        mine = SqlJobService(make_session_factory(engine), service.store, settings)
        try:
            while (job := mine.claim_next(worker_host="h")) is not None:
                with lock:
                    claimed.append(job.job_id)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(submitted)  # every job once, none twice
    for job_id in submitted:
        job = service.load(job_id)
        assert job.state == S.INITIALIZING and job.attempts == 1 and job.started_at is not None


def test_claim_takes_the_oldest_first(service: SqlJobService) -> None:
    first = service.submit(_spec(run_id="first"))
    service.submit(_spec(run_id="second"))
    claimed = service.claim_next(worker_host="h")
    assert claimed is not None and claimed.job_id == first.job_id


def test_pagination_is_newest_first_without_gaps_or_duplicates(service: SqlJobService) -> None:
    ids = [service.submit(_spec(run_id=f"r{i % 3}")).job_id for i in range(23)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page, cursor = service.list_jobs(tenant_id="t1", cursor=cursor, limit=6)
        seen += [job.job_id for job in page]
        pages += 1
        if cursor is None:
            break
    assert pages == 4
    assert seen == list(reversed(ids))


def test_pagination_under_concurrent_inserts(service: SqlJobService, settings: Settings) -> None:
    before = {service.submit(_spec()).job_id for _ in range(40)}
    stop = threading.Event()

    def inserter() -> None:
        engine = create_engine_for_url(settings.database_url)
        other = SqlJobService(make_session_factory(engine), service.store, settings)
        try:
            while not stop.is_set():
                other.submit(_spec())
        finally:
            engine.dispose()

    thread = threading.Thread(target=inserter)
    thread.start()
    try:
        seen: list[str] = []
        cursor: str | None = None
        while True:
            page, cursor = service.list_jobs(tenant_id="t1", cursor=cursor, limit=3)
            seen += [job.job_id for job in page]
            if cursor is None:
                break
    finally:
        stop.set()
        thread.join()
    assert len(seen) == len(set(seen))  # no duplicates
    assert before <= set(seen)  # nothing that existed was missed


def test_filters_and_page_cap(service: SqlJobService, sessions: sessionmaker[Session]) -> None:
    jobs = [service.submit(_spec(run_id="a" if i % 2 else "b")) for i in range(30)]
    _force_state(sessions, jobs[0].job_id, S.RUNNING)
    page, cursor = service.list_jobs(tenant_id="t1", limit=10_000)
    assert len(page) == 10 and cursor is not None  # capped at max_page_size
    page, _ = service.list_jobs(tenant_id="t1", state=S.RUNNING)
    assert [job.job_id for job in page] == [jobs[0].job_id]
    only_a, _ = service.list_jobs(tenant_id="t1", run_id="a", limit=10)
    assert {job.spec.run_id for job in only_a} == {"a"} and len(only_a) == 10
    zero, _ = service.list_jobs(tenant_id="t1", limit=0)
    assert len(zero) == 1  # clamped up to one


@pytest.mark.parametrize(
    "cursor",
    ["garbage!", "", encode_cursor(datetime(2026, 1, 1, tzinfo=UTC), "")],
    ids=["garbage", "empty", "no-id"],
)
def test_invalid_cursor(service: SqlJobService, cursor: str) -> None:
    with pytest.raises(InvalidCursorError):
        service.list_jobs(tenant_id="t1", cursor=cursor)


def test_cursor_round_trip() -> None:
    moment = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert decode_cursor(encode_cursor(moment, "job-1")) == (moment, "job-1")


def test_artifact_path(service: SqlJobService, settings: Settings) -> None:
    job = service.submit(_spec())
    with pytest.raises(JobStateError):
        service.artifact_path(job.job_id, "report", tenant_id="t1")
    key = f"jobs/{job.job_id}/report.html"
    service.store.put_stream(key, io.BytesIO(b"<html>report</html>"))
    service.transition(job.job_id, from_states=[S.QUEUED], to_state=S.INITIALIZING)
    service.transition(job.job_id, from_states=[S.INITIALIZING], to_state=S.RUNNING)
    service.transition(
        job.job_id,
        from_states=[S.RUNNING],
        to_state=S.COMPLETE,
        artifacts={"report": key},
        result={"decision": "negative"},
    )
    path = service.artifact_path(job.job_id, "report", tenant_id="t1")
    assert path.read_bytes() == b"<html>report</html>"
    assert path.is_relative_to(settings.artifact_dir.resolve())
    with pytest.raises(ArtifactNotFoundError):
        service.artifact_path(job.job_id, "calls", tenant_id="t1")  # known type, not stored
    with pytest.raises(ArtifactNotFoundError):
        service.artifact_path(job.job_id, "../../etc/passwd", tenant_id="t1")
    assert service.get(job.job_id, tenant_id="t1").result == {"decision": "negative"}


def test_progress_only_while_running(service: SqlJobService) -> None:
    job = service.submit(_spec())
    assert not service.update_progress(job.job_id, progress=0.5, stage="group")
    service.transition(job.job_id, from_states=[S.QUEUED], to_state=S.INITIALIZING)
    service.transition(job.job_id, from_states=[S.INITIALIZING], to_state=S.RUNNING)
    assert service.update_progress(job.job_id, progress=1.7, stage="consensus")
    view = service.load(job.job_id)
    assert view.progress == 1.0 and view.stage == "consensus"


def test_counts_by_state(service: SqlJobService, sessions: sessionmaker[Session]) -> None:
    jobs = [service.submit(_spec()) for _ in range(4)]
    _force_state(sessions, jobs[0].job_id, S.RUNNING)
    service.cancel(jobs[1].job_id, tenant_id="t1")
    counts = service.counts_by_state()
    assert set(counts) == set(JobState)
    assert (counts[S.QUEUED], counts[S.RUNNING], counts[S.CANCELED], counts[S.COMPLETE]) == (
        2,
        1,
        1,
        0,
    )


def test_delete_job_removes_row_events_and_files(
    service: SqlJobService, sessions: sessionmaker[Session]
) -> None:
    upload = "uploads/u1/reads.bam"
    service.store.put_stream(upload, io.BytesIO(b"BAM"))
    job = service.submit(_spec(inputs={"reads": upload}))
    service.store.put_stream(f"jobs/{job.job_id}/report.html", io.BytesIO(b"r"))
    with pytest.raises(JobStateError):
        service.delete_job(job.job_id)  # still queued
    service.cancel(job.job_id, tenant_id="t1")
    assert service.delete_job(job.job_id)
    with pytest.raises(JobNotFoundError):
        service.load(job.job_id)
    with sessions() as session:
        left = session.scalars(
            select(JobEventRecord).where(JobEventRecord.job_id == job.job_id)
        ).all()
    assert left == []
    assert not service.store.exists(upload)
    assert not service.store.exists(f"jobs/{job.job_id}/report.html")


def test_foreign_keys_are_enforced(sessions: sessionmaker[Session]) -> None:
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(
            JobEventRecord(job_id="missing", to_state="QUEUED", created_at=datetime.now(UTC))
        )


@pytest.mark.postgres
def test_reads_go_to_the_read_url_and_writes_never_do(tmp_path: Path) -> None:
    """PRECISE_MRD_DATABASE_READ_URL as a read-only role: status, listings and counts work
    through it, every write still succeeds (it goes to the primary), and the role really
    cannot write."""
    from sqlalchemy.exc import ProgrammingError

    from databases import postgres_database, read_only_role

    with postgres_database() as url:
        upgrade_database(url)
        with read_only_role(url) as read_url:
            settings = Settings(data_dir=tmp_path, database_url=url, database_read_url=read_url)
            primary = create_engine_for_url(settings.database_url)
            replica = create_engine_for_url(settings.database_read_url)
            try:
                service = SqlJobService(
                    make_session_factory(primary),
                    LocalArtifactStore(settings.artifact_dir),
                    settings,
                    read_sessions=make_session_factory(replica),
                )
                seen: list[str] = []
                event.listen(
                    replica,
                    "before_cursor_execute",
                    lambda _c, _k, statement, *_: seen.append(statement.split()[0].upper()),
                )
                job = service.submit(_spec(run_id="routed"))
                assert seen == []
                assert service.get(job.job_id, tenant_id="t1").spec.run_id == "routed"
                page, _ = service.list_jobs(tenant_id="t1")
                assert [listed.job_id for listed in page] == [job.job_id]
                assert service.counts_by_state()[S.QUEUED] == 1
                assert len(seen) == 3 and set(seen) == {"SELECT"}, seen
                assert service.cancel(job.job_id, tenant_id="t1").state == S.CANCELED
                assert len(seen) == 3, "cancel decides on the primary"
                with pytest.raises(ProgrammingError, match="permission denied"):
                    _force_state(make_session_factory(replica), job.job_id, S.QUEUED)
            finally:
                primary.dispose()
                replica.dispose()


def _submit_at_once(service: SqlJobService, specs: list[JobSpec], limits: SubmitLimits) -> int:
    """Submit every spec from its own thread, all released together; how many were stored."""
    barrier = threading.Barrier(len(specs))
    stored: list[str] = []
    refused: list[SubmitRefusedError] = []

    def submitter(spec: JobSpec) -> None:
        barrier.wait(timeout=30)
        try:
            stored.append(service.submit(spec, limits=limits).job_id)
        except SubmitRefusedError as error:
            refused.append(error)

    threads = [threading.Thread(target=submitter, args=(spec,)) for spec in specs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(stored) + len(refused) == len(specs)
    return len(stored)


def test_concurrent_submissions_never_overshoot_the_queue_cap(service: SqlJobService) -> None:
    service.submit(_spec(tenant="t0"))
    limits = SubmitLimits(tenant_max_active=100, max_queued=4)
    specs = [_spec(run_id=f"r{i}", tenant=f"t{i % 3}") for i in range(12)]
    assert _submit_at_once(service, specs, limits) == 3
    assert service.queued_jobs() == 4


def test_concurrent_submissions_never_overshoot_the_tenant_cap(service: SqlJobService) -> None:
    limits = SubmitLimits(tenant_max_active=2, max_queued=100)
    specs = [_spec(run_id=f"r{i}", tenant="t1") for i in range(8)]
    assert _submit_at_once(service, specs, limits) == 2
    assert service.active_jobs("t1") == 2
    with pytest.raises(SubmitRefusedError) as refused:
        service.submit(_spec(tenant="t1"), limits=limits)
    assert refused.value.limit == "tenant_active" and refused.value.cap == 2
    assert service.submit(_spec(tenant="t2"), limits=limits).state == S.QUEUED
