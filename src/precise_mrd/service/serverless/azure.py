"""Azure Functions handlers (Python v2 model; ``serverless/azure/function_app.py`` exposes
``app``).

* ``api``: an HTTP trigger on every route serving the FastAPI app through Azure's
  ``AsgiMiddleware`` (``host.json`` clears the ``/api`` route prefix; the app does its own auth,
  so the function's level is anonymous).
* ``on_blob_created``: an Event Grid trigger for ``Microsoft.Storage.BlobCreated``; a sample's
  ``manifest.json`` becomes one job (:mod:`~precise_mrd.service.serverless.ingest`); the blob's
  eTag tells one write from another.

>>> blob_arrival("/blobServices/default/containers/lab-data/blobs/incoming/lab-a/s1/manifest.json",
...              {"eTag": "0x8DCE5D1E2B3F4A5"})
Arrival(bucket_url='az://lab-data', key='incoming/lab-a/s1/manifest.json', \
version='0x8DCE5D1E2B3F4A5')
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

import azure.functions as func

from precise_mrd.service.serverless.ingest import Arrival, ingest
from precise_mrd.service.serverless.runtime import current_runtime

logger = logging.getLogger("precise_mrd.service.serverless")
_SUBJECT = "/blobServices/default/containers/"
_lock = threading.Lock()
_middleware: Any = None

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def blob_arrival(subject: str, data: Mapping[str, Any]) -> Arrival:
    """The blob an Event Grid ``BlobCreated`` event's subject names."""
    if not subject.startswith(_SUBJECT) or "/blobs/" not in subject:
        raise ValueError(f"not a blob event subject: {subject!r}")
    container, key = subject[len(_SUBJECT) :].split("/blobs/", 1)
    version = data.get("eTag") or data.get("sequencer") or ""
    return Arrival(f"az://{container}", key, str(version))


@app.route(
    route="{*route}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
)
async def api(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    """An HTTP request -> the app -> the response."""
    global _middleware
    runtime = current_runtime()
    with _lock:
        if _middleware is None:
            _middleware = func.AsgiMiddleware(runtime.app)  # type: ignore[no-untyped-call]
        middleware = _middleware
    response: func.HttpResponse = await middleware.handle_async(req, context)
    return response


@app.event_grid_trigger(arg_name="event")
def on_blob_created(event: func.EventGridEvent) -> None:
    """A ``BlobCreated`` event through :func:`ingest` (other event types are logged, ignored)."""
    if event.event_type != "Microsoft.Storage.BlobCreated":
        logger.info("ignored Event Grid event %s of type %s", event.id, event.event_type)
        return
    outcome = ingest(current_runtime(), blob_arrival(event.subject, event.get_json()))
    logger.info("blob event %s: %s", event.id, json.dumps(outcome.as_json()))


def reset() -> None:
    """Forget this instance's middleware and runtime (tests)."""
    global _middleware
    from precise_mrd.service.serverless.runtime import reset_runtime

    with _lock:
        _middleware = None
    reset_runtime()
