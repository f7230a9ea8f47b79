"""The audit trail: what is recorded, who may read it, and a database that refuses to change it
(SQLite and PostgreSQL: triggers, not just the code)."""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from clitools import run_cli
from databases import BACKENDS, database_url

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

from precise_mrd.service.app import create_app
from precise_mrd.service.jobs.model import JobSpec
from precise_mrd.service.security.audit import AuditEvent, AuditLog
from precise_mrd.service.security.keys import KeyStore
from precise_mrd.service.settings import Settings


@pytest.mark.parametrize("backend", BACKENDS)
def test_requests_are_recorded_and_the_trail_is_append_only(tmp_path: Path, backend: str) -> None:
    with database_url(backend, tmp_path) as url:
        settings = Settings(
            data_dir=tmp_path, database_url=url, auth_mode="api_key", warm_kernels_on_start=False
        )
        app = create_app(settings, start_executor=False)
        with TestClient(app) as client:
            service = app.state.job_service
            keys = KeyStore(service.sessions)
            job = service.submit(JobSpec(run_id="a1", seed=1, config_yaml="", tenant_id="lab-a"))
            submitter = {"X-API-Key": keys.create(tenant="lab-a", role="submitter")[1]}
            stranger = {"X-API-Key": keys.create(tenant="lab-b", role="viewer")[1]}
            admin = {"X-API-Key": keys.create(tenant="ops", role="admin")[1]}
            assert (
                client.post("/submit", data={"run_id": "r2"}, headers=submitter).status_code == 202
            )
            assert client.get(f"/results/{job.job_id}", headers=submitter).status_code == 409
            assert client.get(f"/results/{job.job_id}", headers=stranger).status_code == 404
            assert client.get(f"/download/{job.job_id}/report", headers=stranger).status_code == 404
            assert client.post(f"/jobs/{job.job_id}/cancel").status_code == 401
            assert client.post(f"/jobs/{job.job_id}/cancel", headers=submitter).status_code == 202
            assert client.get("/jobs", headers=submitter).status_code == 200  # not audited
            assert client.get("/audit", headers=submitter).status_code == 403
            page = client.get("/audit", headers=admin, params={"page_size": 3})
            assert page.status_code == 200, page.text
            first = page.json()
            assert len(first["events"]) == 3 and first["next_cursor"]
            rest = client.get(
                "/audit", headers=admin, params={"cursor": first["next_cursor"], "page_size": 50}
            ).json()
            events = first["events"] + rest["events"]
            seen = [(e["action"], e["tenant"], e["outcome"]) for e in events]
            assert seen[:6] == [
                ("submit", "lab-a", 202),
                ("read_results", "lab-a", 409),
                ("read_results", "lab-b", 404),
                ("download", "lab-b", 404),
                ("cancel", None, 401),
                ("cancel", "lab-a", 202),
            ]
            assert seen[6] == ("read_audit", "lab-a", 403)
            assert all(e["request_id"] and e["client"] and e["at"] for e in events)
            assert events[0]["actor"].startswith("key:")
            assert events[4]["actor"] == "anonymous" and events[5]["job_id"] == job.job_id
            only_b = client.get("/audit", headers=admin, params={"tenant": "lab-b"}).json()
            assert {e["tenant"] for e in only_b["events"]} == {"lab-b"}
            too_big = client.get("/audit", headers=admin, params={"page_size": 10_000})
            assert too_big.status_code == 422 and too_big.json()["error"]["field"] == "page_size"

        # the database refuses to change the trail, whatever the code does
        engine = sa.create_engine(url)
        try:
            for statement in (
                "UPDATE audit_events SET outcome = 200",
                "DELETE FROM audit_events",
            ):
                with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
                    connection.execute(sa.text(statement))
            with engine.connect() as connection:
                count = connection.execute(sa.text("SELECT count(*) FROM audit_events")).scalar()
            assert count == len(events) + 3  # + the three /audit reads after the first page
        finally:
            engine.dispose()


def test_retention_purge_and_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRECISE_MRD_DATA_DIR", str(tmp_path))
    assert run_cli(["admin", "list-keys"]).exit_code == 0  # creates and migrates the database
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    log = AuditLog(sa.orm.sessionmaker(engine))
    now = datetime.now(UTC)
    for days, action in ((400, "old"), (10, "recent")):
        log.record(
            AuditEvent(
                at=now - timedelta(days=days),
                actor="key:x",
                tenant_id="lab-a",
                action=action,
                job_id=None,
                request_id="r",
                client="127.0.0.1",
                outcome=200,
            )
        )
    engine.dispose()
    out = tmp_path / "audit.jsonl"
    exported = run_cli(["admin", "audit-export", "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["action"] for line in lines] == ["old", "recent"]
    assert run_cli(["admin", "audit-export", "--out", str(out)]).exit_code == 2  # no overwrite
    purged = run_cli(["admin", "audit-purge", "--older-than-days", "365"])
    assert "removed 1 audit events" in purged.output, purged.output
    recent = tmp_path / "recent.jsonl"
    run_cli(["admin", "audit-export", "--out", str(recent), "--since", "30d"])
    assert [json.loads(line)["action"] for line in recent.read_text().splitlines()] == ["recent"]
