"""``precise-mrd admin create-key | list-keys | revoke-key | audit-export | audit-purge``.

Keys and the audit trail live in the job database (``PRECISE_MRD_DATABASE_URL`` or
``--database-url``), migrated first. ``create-key`` prints the key once (it is stored as a
hash); ``--json`` prints ``{"key_id", "key", "tenant", "role"}``. A revoked key stops working at
the next request. ``audit-export`` writes the trail as JSON lines (to ``--out`` or stdout);
``audit-purge`` removes events older than ``PRECISE_MRD_AUDIT_RETENTION_DAYS``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from precise_mrd.cli_support import EXIT_USER_ERROR

_DURATION = re.compile(r"^(\d+)([dhm])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        help="SQLAlchemy URL (env PRECISE_MRD_DATABASE_URL, else SQLite under the data dir)."
    ),
]


def parse_when(text: str, now: datetime, *, past: bool = False) -> datetime:
    """``30d``, ``12h``, ``90m`` from now (back from now with ``past``), or an ISO 8601 time
    (UTC when it has no offset).

    >>> now = datetime(2026, 1, 1, tzinfo=UTC)
    >>> parse_when("30d", now).isoformat(), parse_when("2026-02-01T00:00", now).isoformat()
    ('2026-01-31T00:00:00+00:00', '2026-02-01T00:00:00+00:00')
    >>> parse_when("1d", now, past=True).isoformat()
    '2025-12-31T00:00:00+00:00'
    """
    match = _DURATION.match(text.strip())
    if match:
        delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return now - delta if past else now + delta
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--expires {text!r} is neither a duration (30d, 12h, 90m) nor an ISO 8601 time"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _sessions(database_url: str | None) -> tuple[Any, Any, Any]:
    """(session factory, engine, settings) of the migrated job database."""
    from sqlalchemy.exc import SQLAlchemyError

    from precise_mrd.cli_worker import settings_or_exit
    from precise_mrd.service.db.engine import (
        create_engine_for_url,
        describe_database_error,
        make_session_factory,
    )
    from precise_mrd.service.db.migrate import upgrade_database

    overrides = {"database_url": database_url} if database_url else {}
    settings: Any = settings_or_exit(**overrides)
    try:
        upgrade_database(settings.database_url)
    except SQLAlchemyError as error:
        typer.echo(f"error: {describe_database_error(settings.database_url, error)}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None
    engine = create_engine_for_url(settings.database_url)
    return make_session_factory(engine), engine, settings


def _store(database_url: str | None) -> tuple[Any, Any]:
    from precise_mrd.service.security.keys import KeyStore

    sessions, engine, _ = _sessions(database_url)
    return KeyStore(sessions), engine


def create_key(
    tenant: Annotated[str, typer.Option(help="The tenant whose jobs the key reaches.")],
    role: Annotated[str, typer.Option(help="viewer, submitter or admin.")],
    expires: Annotated[
        str | None, typer.Option(help="When it stops working: 30d, 12h, 90m or an ISO 8601 time.")
    ] = None,
    label: Annotated[str | None, typer.Option(help="A note for list-keys.")] = None,
    as_json: Json = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Make an API key; it is printed once and stored as a hash."""
    now = datetime.now(UTC)
    try:
        expires_at = parse_when(expires, now) if expires else None
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None
    if expires_at is not None and expires_at <= now:
        typer.echo(f"error: --expires {expires!r} is in the past", err=True)
        raise typer.Exit(EXIT_USER_ERROR)
    store, engine = _store(database_url)
    try:
        info, key = store.create(tenant=tenant, role=role, expires_at=expires_at, label=label)
    except ValueError as error:
        typer.echo(f"error: {error} (--tenant, --role)", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps({"key_id": info.key_id, "key": key, "tenant": tenant, "role": role}))
        return
    typer.echo(f"key {info.key_id} for tenant {tenant} ({role}); it is shown once:\n{key}")


def list_keys(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    as_json: Json = False,
    database_url: DatabaseUrl = None,
) -> None:
    """The keys (never their secrets): id, tenant, role, state, dates."""
    store, engine = _store(database_url)
    try:
        keys = store.list(tenant=tenant)
    finally:
        engine.dispose()
    now = datetime.now(UTC)
    if as_json:
        typer.echo(json.dumps([info.as_json(now) for info in keys]))
        return
    for info in keys:
        expiry = info.expires_at.isoformat() if info.expires_at else "never"
        typer.echo(
            f"{info.key_id}  {info.tenant}  {info.role}  {info.state(now)}  expires {expiry}"
        )


def revoke_key(
    key_id: Annotated[str, typer.Argument(help="The key's id (list-keys shows it).")],
    as_json: Json = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key: it stops working at once, in every API process."""
    store, engine = _store(database_url)
    try:
        info = store.revoke(key_id)
    finally:
        engine.dispose()
    if info is None:
        typer.echo(f"error: no key {key_id!r}; `precise-mrd admin list-keys` lists them", err=True)
        raise typer.Exit(EXIT_USER_ERROR)
    if as_json:
        typer.echo(json.dumps(info.as_json(datetime.now(UTC))))
        return
    typer.echo(f"revoked key {info.key_id} of tenant {info.tenant}")


def audit_export(
    out: Annotated[
        Path | None, typer.Option(help="A new file for the JSON lines (default: stdout).")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's events.")] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only events at or after this ISO 8601 time, or in the last 7d/12h."),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Write the audit trail as JSON lines, oldest first."""
    from precise_mrd.service.security.audit import AuditLog

    try:
        start = parse_when(since, datetime.now(UTC), past=True) if since else None
    except ValueError:
        typer.echo(f"error: --since {since!r} is neither 7d/12h/90m nor an ISO 8601 time", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None
    if out is not None and out.exists():
        typer.echo(f"error: {out} exists; give --out a new file name", err=True)
        raise typer.Exit(EXIT_USER_ERROR)
    sessions, engine, _ = _sessions(database_url)
    try:
        events = AuditLog(sessions).all(tenant=tenant, since=start)
        if out is None:
            for event in events:
                typer.echo(json.dumps(event.as_json()))
            return
        partial = out.with_name(out.name + ".partial")
        count = 0
        with partial.open("w", encoding="utf-8") as handle:
            for event in events:
                handle.write(json.dumps(event.as_json()) + "\n")
                count += 1
        partial.replace(out)
        typer.echo(f"wrote {count} audit events to {out}", err=True)
    finally:
        engine.dispose()


def audit_purge(
    older_than_days: Annotated[
        int | None,
        typer.Option(help="Remove events older than this (PRECISE_MRD_AUDIT_RETENTION_DAYS)."),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Remove audit events past the retention (the only delete the database allows)."""
    from precise_mrd.service.security.audit import AuditLog

    sessions, engine, settings = _sessions(database_url)
    days = older_than_days if older_than_days is not None else settings.audit_retention_days
    if days < 1:
        typer.echo("error: --older-than-days must be at least 1", err=True)
        raise typer.Exit(EXIT_USER_ERROR)
    try:
        removed = AuditLog(sessions).purge(datetime.now(UTC) - timedelta(days=days))
    finally:
        engine.dispose()
    typer.echo(f"removed {removed} audit events older than {days} days")


def add_key_commands(app: typer.Typer) -> None:
    app.command("create-key")(create_key)
    app.command("list-keys")(list_keys)
    app.command("revoke-key")(revoke_key)
    app.command("audit-export")(audit_export)
    app.command("audit-purge")(audit_purge)
