"""LocalExecutor with real worker subprocesses on a real database: SQLite and PostgreSQL.

Jobs use the test-only ``service_debug`` config section (honoured because the settings enable
debug jobs): a tiny simulated sample keeps each pipeline run short, ``sleep_seconds`` keeps a job
RUNNING long enough to cancel or time out, ``exit_code`` makes the worker die, ``no_pipeline``
takes a job through the queue and the worker without running the pipeline (tests of the queue).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import Engine, update

from precise_mrd.service.db import (
    JobRecord,
    create_engine_from_settings,
    make_session_factory,
    upgrade_database,
)
from precise_mrd.service.jobs.executor import LocalExecutor
from precise_mrd.service.jobs.model import JobSpec, JobState, JobView
from precise_mrd.service.jobs.service import SqlJobService, this_host
from precise_mrd.service.settings import Settings
from precise_mrd.service.storage import LocalArtifactStore

S = JobState
TINY = "service_debug:\n  simulation: {n_variants: 2, molecules_per_locus: 30}\n"
QUEUE_ONLY = "service_debug:\n  no_pipeline: true\n"


def _sleepy(seconds: float) -> str:
    return f"service_debug:\n  sleep_seconds: {seconds}\n"


@dataclass
class Harness:
    settings: Settings
    engine: Engine
    service: SqlJobService
    executors: list[LocalExecutor]

    def executor(self) -> LocalExecutor:
        executor = LocalExecutor(self.service, self.settings)
        self.executors.append(executor)
        return executor

    def submit(self, config_yaml: str = TINY, **kwargs: Any) -> JobView:
        spec = JobSpec(
            run_id=kwargs.pop("run_id", "run"),
            seed=kwargs.pop("seed", 5),
            config_yaml=config_yaml,
            **kwargs,
        )
        return self.service.submit(spec)

    def set_columns(self, job_id: str, **values: Any) -> None:
        with make_session_factory(self.engine).begin() as session:
            session.execute(update(JobRecord).where(JobRecord.id == job_id).values(**values))

    def pid_of(self, job_id: str) -> int:
        lease = next(x for x in self.service.active_leases() if x.job_id == job_id)
        assert lease.worker_pid is not None
        return lease.worker_pid


@pytest.fixture
def make_harness(tmp_path: Path, db_url: str) -> Iterator[Callable[..., Harness]]:
    harnesses: list[Harness] = []

    def make(**overrides: Any) -> Harness:
        settings = Settings(
            data_dir=tmp_path,
            database_url=db_url,
            enable_debug_jobs=True,
            executor_poll_seconds=0.1,
            **overrides,
        )
        upgrade_database(settings.database_url)
        engine = create_engine_from_settings(settings)
        service = SqlJobService(
            make_session_factory(engine), LocalArtifactStore(settings.artifact_dir), settings
        )
        harness = Harness(settings, engine, service, [])
        harnesses.append(harness)
        return harness

    yield make
    for harness in harnesses:
        for executor in harness.executors:
            executor.stop()
        harness.engine.dispose()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _process_group(pid: int) -> list[int]:
    """The worker and its descendants (the debug sleep starts one child)."""
    children = [child.pid for child in psutil.Process(pid).children(recursive=True)]
    assert children, "the sleeping worker should have a child process"
    return [pid, *children]


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _many_jobs_all_complete(harness: Harness, n_jobs: int, config_yaml: str = TINY) -> None:
    jobs = [harness.submit(config_yaml, seed=i) for i in range(n_jobs)]
    executor = harness.executor()
    executor.start()
    most_active = 0

    def all_done() -> bool:
        nonlocal most_active
        counts = harness.service.counts_by_state()
        most_active = max(most_active, counts[S.INITIALIZING] + counts[S.RUNNING])
        return counts[S.COMPLETE] + counts[S.EXECUTOR_ERROR] + counts[S.SYSTEM_ERROR] == n_jobs

    wait_for(all_done, 20 * n_jobs, f"{n_jobs} jobs to finish")
    assert most_active <= 2
    results = [harness.service.load(job.job_id) for job in jobs]
    assert [job.state for job in results] == [S.COMPLETE] * n_jobs, [j.reason for j in results]
    for job in results:
        assert job.attempts == 1 and job.progress == 1.0 and job.reason is None
        completions = [e for e in harness.service.events(job.job_id) if e.to_state == S.COMPLETE]
        assert len(completions) == 1  # nothing ran twice
    if config_yaml == QUEUE_ONLY:
        return
    for job in results:
        assert job.result is not None and job.result["n_variants"] == 2
        assert job.result["decision"] in {"positive", "negative", "undetermined"}
        report = harness.service.artifact_path(job.job_id, "report", tenant_id="default")
        assert report.read_text().lstrip().lower().startswith("<!doctype html")
        assert harness.service.store.exists(f"tenants/default/jobs/{job.job_id}/worker.log")
    log = harness.service.store.path_for(
        f"tenants/default/jobs/{jobs[0].job_id}/worker.log"
    ).read_text()
    assert f'"job_id": "{jobs[0].job_id}"' in log
    # different seeds simulate different samples
    assert len({job.result["tumor_fraction"] for job in results if job.result}) > 1


def test_five_jobs_at_once_all_complete(make_harness: Callable[..., Harness]) -> None:
    """The fast variant: at most two workers at a time, every job COMPLETE exactly once."""
    _many_jobs_all_complete(make_harness(max_concurrent_jobs=2), 5)


def test_twenty_jobs_at_once_all_complete(make_harness: Callable[..., Harness]) -> None:
    """Twenty queue-only jobs (``no_pipeline``: real claims, workers and transitions, no pipeline,
    which the five-job test runs): at most two at a time, each COMPLETE exactly once."""
    _many_jobs_all_complete(make_harness(max_concurrent_jobs=2), 20, QUEUE_ONLY)


def test_cancel_running_and_queued_jobs(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(max_concurrent_jobs=1)
    running = harness.submit(_sleepy(60))
    queued = harness.submit(TINY)
    executor = harness.executor()
    executor.start()
    wait_for(lambda: harness.service.load(running.job_id).stage == "debug_sleep", 30, "RUNNING job")
    group = _process_group(harness.pid_of(running.job_id))
    work = harness.settings.work_dir / "default" / running.job_id  # NB: under the tenant
    assert (work / "worker.log").is_file()
    assert harness.service.cancel(queued.job_id, tenant_id="default").state == S.CANCELED
    assert harness.service.cancel(running.job_id, tenant_id="default").state == S.CANCELING
    executor.notify()
    wait_for(lambda: harness.service.load(running.job_id).state == S.CANCELED, 10, "CANCELED")
    wait_for(lambda: all(_gone(pid) for pid in group), 5, "the worker group to be gone")
    assert harness.service.load(queued.job_id).attempts == 0  # never started
    # NB: the executor removes the work directory just after it writes CANCELED
    wait_for(lambda: not work.exists(), 5, "the work directory to be removed")


def test_timeout_kills_the_worker(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(job_timeout_seconds=4)
    job = harness.submit(_sleepy(60))
    harness.executor().start()
    wait_for(lambda: harness.service.load(job.job_id).stage == "debug_sleep", 30, "RUNNING")
    group = _process_group(harness.pid_of(job.job_id))
    wait_for(lambda: harness.service.load(job.job_id).state.is_terminal, 15, "the timeout")
    finished = harness.service.load(job.job_id)
    assert (finished.state, finished.reason) == (S.SYSTEM_ERROR, "timeout")
    wait_for(lambda: all(_gone(pid) for pid in group), 5, "the worker group to be gone")


def test_failures_end_with_reasons(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(max_concurrent_jobs=3)
    crash = harness.submit("service_debug:\n  exit_code: 3\n")
    ml = harness.submit(TINY, use_ml_calling=True, ml_model_type="ensemble")
    bad = harness.submit("calling:\n  alpha: 2.0\n")
    harness.executor().start()
    wait_for(
        lambda: all(harness.service.load(j.job_id).state.is_terminal for j in (crash, ml, bad)),
        60,
        "three jobs",
    )
    crashed = harness.service.load(crash.job_id)
    assert crashed.state == S.SYSTEM_ERROR
    assert crashed.reason is not None and crashed.reason.startswith("worker exited with code 3")
    with_ml = harness.service.load(ml.job_id)
    assert with_ml.state == S.COMPLETE, with_ml.reason
    assert with_ml.result is not None and with_ml.result["decision"] in {
        "positive",
        "negative",
        "undetermined",
    }
    rejected = harness.service.load(bad.job_id)
    assert rejected.state == S.EXECUTOR_ERROR
    assert rejected.reason is not None and rejected.reason.startswith("config calling.alpha")


def test_deep_learning_job_completes_with_the_network_filter(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness()
    job = harness.submit(TINY, use_deep_learning=True, dl_model_type="cnn")
    harness.executor().start()
    wait_for(lambda: harness.service.load(job.job_id).state.is_terminal, 90, "the DL job")
    finished = harness.service.load(job.job_id)
    assert finished.state == S.COMPLETE, finished.reason
    path = harness.service.artifact_path(job.job_id, "metrics", tenant_id=finished.spec.tenant_id)
    metrics = json.loads(path.read_text())
    assert metrics["ml_filter"]["model_type"] == "cnn"
    assert metrics["ml_filter"]["kind"] == "deep_learning"


def test_crash_recovery_requeues_then_completes(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(max_job_attempts=2)
    job = harness.submit(TINY)
    claimed = harness.service.claim_next(worker_host=this_host())
    assert claimed is not None and claimed.attempts == 1
    harness.service.transition(job.job_id, from_states=[S.INITIALIZING], to_state=S.RUNNING)
    harness.service.set_worker(job.job_id, pid=_dead_pid(), host=this_host())
    executor = harness.executor()
    executor.start()  # recovery runs first, then the loop claims the job again
    wait_for(lambda: harness.service.load(job.job_id).state.is_terminal, 60, "the retry")
    finished = harness.service.load(job.job_id)
    assert finished.state == S.COMPLETE and finished.attempts == 2
    path = [(e.from_state, e.to_state) for e in harness.service.events(job.job_id)]
    assert (S.RUNNING, S.QUEUED) in path and path[-1] == (S.RUNNING, S.COMPLETE)


def test_crash_recovery_gives_up_after_max_attempts(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(max_job_attempts=2)
    job = harness.submit(TINY)
    canceling = harness.submit(TINY)
    for _ in range(2):
        harness.service.claim_next(worker_host=this_host())
    harness.service.transition(job.job_id, from_states=[S.INITIALIZING], to_state=S.RUNNING)
    harness.set_columns(job.job_id, attempts=2, worker_pid=_dead_pid(), worker_host=this_host())
    harness.service.transition(canceling.job_id, from_states=[S.INITIALIZING], to_state=S.CANCELING)
    harness.set_columns(canceling.job_id, worker_pid=_dead_pid(), worker_host=this_host())
    executor = harness.executor()
    assert sorted(executor.recover_orphans()) == sorted([job.job_id, canceling.job_id])
    failed = harness.service.load(job.job_id)
    assert failed.state == S.SYSTEM_ERROR
    assert failed.reason is not None and "used all 2 attempts" in failed.reason
    assert harness.service.load(canceling.job_id).state == S.CANCELED


def test_a_live_orphan_worker_is_killed_and_its_job_requeued(
    make_harness: Callable[..., Harness],
) -> None:
    """An API process died (SIGKILL) but its worker lives on: the next executor stops it."""
    harness = make_harness(heartbeat_stale_seconds=10)
    job = harness.submit(_sleepy(60))
    harness.service.claim_next(worker_host=this_host())
    settings = harness.settings
    orphan = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "precise_mrd.service.jobs.worker",
            "--job-id",
            job.job_id,
            "--database-url",
            settings.database_url,
            "--artifact-root",
            str(settings.artifact_dir),
            "--work-root",
            str(settings.work_dir),
            "--enable-debug-jobs",
        ],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        harness.service.set_worker(job.job_id, pid=orphan.pid, host=this_host())
        wait_for(lambda: harness.service.load(job.job_id).stage == "debug_sleep", 30, "RUNNING")
        executor = harness.executor()
        harness.service.heartbeat([job.job_id])  # as its (now dead) executor did
        assert executor.recover_orphans() == []  # heartbeat still fresh: someone owns it
        harness.set_columns(job.job_id, heartbeat_at=datetime.now(UTC) - timedelta(seconds=11))
        assert executor.recover_orphans() == [job.job_id]
        assert orphan.wait(timeout=5) == -9
        requeued = harness.service.load(job.job_id)
        assert requeued.state == S.QUEUED and requeued.reason is not None
        assert "re-queued after a crash" in requeued.reason
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


def test_stop_requeues_running_jobs_without_using_an_attempt(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness()
    job = harness.submit(_sleepy(60))
    executor = harness.executor()
    executor.start()
    wait_for(lambda: harness.service.load(job.job_id).stage == "debug_sleep", 30, "RUNNING")
    group = _process_group(harness.pid_of(job.job_id))
    executor.stop()
    wait_for(lambda: all(_gone(pid) for pid in group), 5, "the worker group to be gone")
    stopped = harness.service.load(job.job_id)
    assert (stopped.state, stopped.attempts) == (S.QUEUED, 0)


def test_cleanup_removes_old_jobs_and_their_files(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(cleanup_old_jobs_hours=24)
    store = harness.service.store
    old, recent, running = (harness.submit(TINY) for _ in range(3))
    for job in (old, recent):
        store.put_stream(f"jobs/{job.job_id}/report.html", io.BytesIO(b"<html/>"))
        harness.service.cancel(job.job_id, tenant_id="default")
    harness.set_columns(running.job_id, state=S.RUNNING.value)
    long_ago = datetime.now(UTC) - timedelta(hours=25)
    harness.set_columns(old.job_id, finished_at=long_ago)
    harness.set_columns(running.job_id, created_at=long_ago)
    assert harness.executor().cleanup_once() == 1
    ids = {job.job_id for job in harness.service.list_jobs(tenant_id="default")[0]}
    assert ids == {recent.job_id, running.job_id}
    assert not store.exists(f"jobs/{old.job_id}/report.html")
    assert store.exists(f"jobs/{recent.job_id}/report.html")


def test_uploaded_bam_and_fastq_inputs(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    from precise_mrd.core.simulate import SimulationParams
    from precise_mrd.pipeline.simulation import simulate_sample

    harness = make_harness(max_concurrent_jobs=2)
    sample = simulate_sample(
        tmp_path / "sample",
        SimulationParams.preset("smoke", seed=8, n_variants=2, molecules_per_locus=30),
        write_fastq=True,
    )
    assert sample.fastq_r1_path is not None and sample.fastq_r2_path is not None
    store = harness.service.store
    keys = {}
    for kind, path in {
        "reads": sample.bam_path,  # no index: the worker must cope with the BAM alone
        "reads_fq1": sample.fastq_r1_path,
        "reads_fq2": sample.fastq_r2_path,
        "reference": sample.reference_path,  # no .fai either
        "variants": sample.vcf_path,
    }.items():
        keys[kind] = f"uploads/u1/{path.name}"
        store.put_file(keys[kind], path)
    common = {"reference": keys["reference"], "variants": keys["variants"]}
    bam_job = harness.submit("", inputs={"reads": keys["reads"], **common})
    fastq_job = harness.submit(
        "", inputs={"reads": keys["reads_fq1"], "reads_r2": keys["reads_fq2"], **common}
    )
    harness.executor().start()
    jobs = (bam_job, fastq_job)
    wait_for(
        lambda: all(harness.service.load(j.job_id).state.is_terminal for j in jobs), 60, "jobs"
    )
    for job in jobs:
        done = harness.service.load(job.job_id)
        assert done.state == S.COMPLETE, done.reason
        assert done.result is not None and done.result["n_variants"] == 2
    # the uploads themselves are left untouched for the API to serve or clean up
    assert store.path_for(keys["reads"]).read_bytes() == sample.bam_path.read_bytes()
