"""AWS Lambda handlers (``serverless/template.yaml``; the container image's entry point is
``python -m awslambdaric`` with one of these as the command).

* ``api_handler``: the FastAPI app behind API Gateway (HTTP API, payload 2.0) through Mangum.
* ``storage_event_handler``: S3 ``ObjectCreated`` notifications; a sample's ``manifest.json``
  becomes one job (:mod:`~precise_mrd.service.serverless.ingest`).
* ``maintenance_handler``: an EventBridge schedule; recovers orphans, re-sends due jobs, deletes
  expired ones (what the executor thread of a server does).

Lambda cannot inject Secrets Manager values into the environment as ECS does, so at cold start
every ``<VARIABLE>_SECRET_ARN`` holding an ECS-style reference
(``arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME[:JSON_KEY::]``) is read into
``<VARIABLE>`` (unless that is set already):

>>> environ = {"PRECISE_MRD_DATABASE_PASSWORD_SECRET_ARN":
...            "arn:aws:secretsmanager:eu-west-1:1:secret:rds-AbC:password::"}
>>> values = {"arn:aws:secretsmanager:eu-west-1:1:secret:rds-AbC": '{"password": "s3cret"}'}
>>> resolve_secret_references(environ, values.__getitem__)
['PRECISE_MRD_DATABASE_PASSWORD']
>>> environ["PRECISE_MRD_DATABASE_PASSWORD"]
's3cret'
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_plus

from precise_mrd.core.errors import ConfigError
from precise_mrd.service.serverless.ingest import Arrival, ingest
from precise_mrd.service.serverless.runtime import ServerlessRuntime, current_runtime

logger = logging.getLogger("precise_mrd.service.serverless")

SECRET_SUFFIX = "_SECRET_ARN"
_lock = threading.Lock()
_adapter: Any = None
_loop: asyncio.AbstractEventLoop | None = None
_secrets_resolved = False


def split_secret_reference(reference: str) -> tuple[str, str | None]:
    """``(secret ARN, JSON key or None)`` of an ECS-style reference.

    >>> split_secret_reference("arn:aws:secretsmanager:r:1:secret:db-x1:password::")
    ('arn:aws:secretsmanager:r:1:secret:db-x1', 'password')
    >>> split_secret_reference("arn:aws:secretsmanager:r:1:secret:jwt-y2")
    ('arn:aws:secretsmanager:r:1:secret:jwt-y2', None)
    """
    parts = reference.split(":")
    if len(parts) < 7 or parts[:3] != ["arn", "aws", "secretsmanager"] or parts[5] != "secret":
        raise ConfigError(
            "<VARIABLE>_SECRET_ARN",
            f"{reference!r} is not a Secrets Manager secret ARN",
            "use arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME, optionally followed by "
            ":JSON_KEY:: as in an ECS task definition",
        )
    return ":".join(parts[:7]), (parts[7] or None) if len(parts) > 7 else None


def resolve_secret_references(
    environ: MutableMapping[str, str], fetch: Callable[[str], str]
) -> list[str]:
    """Set ``<VARIABLE>`` from every ``<VARIABLE>_SECRET_ARN``; return the variables set."""
    resolved = []
    for name in sorted(environ):
        if not name.endswith(SECRET_SUFFIX):
            continue
        target = name[: -len(SECRET_SUFFIX)]
        if environ.get(target):
            continue
        arn, json_key = split_secret_reference(environ[name])
        value = fetch(arn)
        if json_key is not None:
            try:
                value = str(json.loads(value)[json_key])
            except (ValueError, KeyError, TypeError):
                raise ConfigError(
                    name,
                    f"the secret holds no JSON key {json_key!r}",
                    "name a key the secret's JSON has, or drop the key to use the whole value",
                ) from None
        environ[target] = value
        resolved.append(target)
    return resolved


def _fetch_secret(arn: str) -> str:  # pragma: no cover - needs AWS; the logic above is tested
    import boto3

    client = boto3.client("secretsmanager")
    return str(client.get_secret_value(SecretId=arn)["SecretString"])


def _runtime() -> ServerlessRuntime:
    global _secrets_resolved
    with _lock:
        if not _secrets_resolved:
            names = resolve_secret_references(os.environ, _fetch_secret)
            if names:
                logger.info("read %s from Secrets Manager", ", ".join(names))
            _secrets_resolved = True
    return current_runtime()


def api_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """API Gateway (REST or HTTP API) or ALB event -> the app -> the gateway's response."""
    global _adapter, _loop
    runtime = _runtime()
    with _lock:
        if _adapter is None:
            from mangum import Mangum

            # NB: the instance's one event loop, ours to close (Mangum runs every request on
            # the thread's current loop and would otherwise make one nobody closes)
            _loop = asyncio.new_event_loop()
            asyncio.set_event_loop(_loop)
            # NB: lifespan off: Mangum would start and stop the app on every invocation; the
            # runtime did the start-up once for this instance
            _adapter = Mangum(runtime.app, lifespan="off")
        adapter = _adapter
    response: dict[str, Any] = adapter(event, context)
    return response


def s3_arrivals(event: dict[str, Any]) -> list[Arrival]:
    """The objects an S3 notification (direct, or through SNS/EventBridge's S3 shape) names."""
    arrivals = []
    for record in event.get("Records", []):
        s3 = record.get("s3")
        if not s3:
            continue
        item = s3["object"]
        version = item.get("versionId") or item.get("sequencer") or item.get("eTag") or ""
        arrivals.append(
            Arrival(f"s3://{s3['bucket']['name']}", unquote_plus(item["key"]), str(version))
        )
    return arrivals


def storage_event_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Each record of an S3 ``ObjectCreated`` event through :func:`ingest`."""
    runtime = _runtime()
    outcomes = [ingest(runtime, arrival).as_json() for arrival in s3_arrivals(event)]
    return {"outcomes": outcomes}


def maintenance_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """One turn of recovery, re-sending and clean-up (a scheduled event)."""
    return _runtime().maintain()


def reset() -> None:
    """Forget this instance's adapter and runtime (tests)."""
    global _adapter, _loop, _secrets_resolved
    from precise_mrd.service.serverless.runtime import reset_runtime

    with _lock:
        _adapter = None
        _secrets_resolved = False
        if _loop is not None:
            asyncio.set_event_loop(None)
            _loop.close()
            _loop = None
    reset_runtime()
