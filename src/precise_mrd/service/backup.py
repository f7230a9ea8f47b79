"""``precise-mrd admin backup OUT`` / ``admin restore IN``: the jobs and their files, round-trip.

A backup is a directory::

    OUT/manifest.json   format, package version, schema revision, counts, when
    OUT/jobs.jsonl      every row of ``jobs`` (all columns, datetimes in ISO 8601)
    OUT/events.jsonl    every row of ``job_events``
    OUT/objects/<key>   every stored file under ``jobs/`` (uploads, outputs, worker logs)
    OUT/objects.jsonl   each object's key, SHA-256 and size

Backing up checks every object against the SHA-256 recorded when it was written (a corrupted
object stops the backup, naming it); restoring checks every object against ``objects.jsonl``
before the database rows are written, into a database that holds no job yet (at the package's
schema, migrated first) and its artifact store. Nothing is half-restored: the objects go first,
and the rows in one transaction.

For a database of millions of jobs, ``pg_dump`` with bucket versioning is the operator's tool;
this is the portable one (SQLite <-> PostgreSQL, local <-> object store) that a test proves.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, func, insert, select
from sqlalchemy.engine import Engine

from precise_mrd import __version__
from precise_mrd.service.db.models import JobEventRecord, JobRecord
from precise_mrd.service.jobs.model import job_key_prefix, legacy_job_key_prefix
from precise_mrd.service.storage.base import ArtifactStore
from precise_mrd.service.storage.integrity import (
    ArtifactCorruptedError,
    Checksum,
    checksum_file,
    verify_file,
)

FORMAT = "precise-mrd-backup/1"


class BackupError(RuntimeError):
    """A backup or a restore that cannot go on; the message says why and what to do."""


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _rows(engine: Engine, table: Any, order: Any) -> Iterator[dict[str, Any]]:
    with engine.connect() as connection:
        for row in connection.execute(select(table).order_by(order)).mappings():
            yield {key: _jsonable(value) for key, value in row.items()}


def _recorded_checksums(job: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    recorded = dict((job.get("spec") or {}).get("checksums") or {})
    recorded.update(job.get("checksums") or {})
    return recorded


def backup(engine: Engine, store: ArtifactStore, out: Path) -> dict[str, Any]:
    """Write a backup of every job, event and object to the new directory ``out``."""
    if out.exists() and any(out.iterdir()):
        raise BackupError(f"{out} is not empty; fix: name a new directory for the backup")
    (out / "objects").mkdir(parents=True, exist_ok=True)
    jobs = list(_rows(engine, JobRecord.__table__, JobRecord.created_at))
    with open(out / "jobs.jsonl", "w", encoding="utf-8") as stream:
        for job in jobs:
            stream.write(json.dumps(job, sort_keys=True) + "\n")
    events = 0
    with open(out / "events.jsonl", "w", encoding="utf-8") as stream:
        for event in _rows(engine, JobEventRecord.__table__, JobEventRecord.id):
            stream.write(json.dumps(event, sort_keys=True) + "\n")
            events += 1
    objects = 0
    with open(out / "objects.jsonl", "w", encoding="utf-8") as stream:
        for job in jobs:
            recorded = _recorded_checksums(job)
            prefixes = (
                job_key_prefix(job["tenant_id"], job["id"]),
                legacy_job_key_prefix(job["id"]),
            )
            for key in (key for prefix in prefixes for key in store.list_keys(prefix)):
                target = out / "objects" / key
                target.parent.mkdir(parents=True, exist_ok=True)
                store.get_file(key, target)
                try:
                    verify_file(key, target, recorded.get(key))
                except ArtifactCorruptedError as error:
                    raise BackupError(f"backup stopped: {error}") from None
                checksum = checksum_file(target)
                stream.write(json.dumps({"key": key, **checksum.as_dict()}) + "\n")
                objects += 1
    from precise_mrd.service.db.migrate import current_revision

    manifest = {
        "format": FORMAT,
        "version": __version__,
        "schema_revision": current_revision(engine.url.render_as_string(hide_password=False)),
        "created_at": datetime.now(UTC).isoformat(),
        "jobs": len(jobs),
        "events": events,
        "objects": objects,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _typed(table: Any, row: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON row back into column values (ISO strings -> aware datetimes)."""
    values = {}
    for column in table.columns:
        if column.name not in row:
            continue
        value = row[column.name]
        kind = getattr(column.type, "impl", column.type)
        if value is not None and isinstance(kind, DateTime):
            value = datetime.fromisoformat(value)
        values[column.name] = value
    return values


def _read_lines(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]


def restore(engine: Engine, store: ArtifactStore, source: Path) -> dict[str, Any]:
    """Restore the backup in ``source`` into an empty job database and its store."""
    try:
        manifest = json.loads((source / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise BackupError(
            f"{source}: not a backup ({error}); fix: name a backup directory"
        ) from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{source}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    with engine.connect() as connection:
        existing = connection.execute(select(func.count()).select_from(JobRecord)).scalar_one()
    if existing:
        raise BackupError(
            f"the job database already holds {existing} jobs; fix: restore into an empty database"
        )
    objects = _read_lines(source / "objects.jsonl")
    for entry in objects:
        path = source / "objects" / entry["key"]
        try:
            verify_file(entry["key"], path, entry)
        except ArtifactCorruptedError as error:
            raise BackupError(f"restore stopped before writing anything: {error}") from None
        except FileNotFoundError:
            raise BackupError(f"restore stopped: {path} is missing from the backup") from None
    for entry in objects:
        store.put_file(entry["key"], source / "objects" / entry["key"])
    jobs = [_typed(JobRecord.__table__, row) for row in _read_lines(source / "jobs.jsonl")]
    events = [_typed(JobEventRecord.__table__, row) for row in _read_lines(source / "events.jsonl")]
    with engine.begin() as connection:
        if jobs:
            connection.execute(insert(JobRecord), jobs)
        if events:
            connection.execute(insert(JobEventRecord), events)
    if engine.dialect.name == "postgresql" and events:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('job_events', 'id'), "
                "(SELECT max(id) FROM job_events))"
            )
    return {"jobs": len(jobs), "events": len(events), "objects": len(objects)}


def object_checksums(source: Path) -> dict[str, Checksum]:
    """The backup's objects by key (for tests and audits)."""
    return {
        entry["key"]: Checksum.from_mapping(entry)
        for entry in _read_lines(source / "objects.jsonl")
    }
