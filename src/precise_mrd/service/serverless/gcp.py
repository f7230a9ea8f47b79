"""Google Cloud Functions (2nd gen) handlers (``serverless/gcp/main.py`` registers them).

* ``api``: an HTTP function serving the FastAPI app (ASGI, through a2wsgi's WSGI bridge, since
  the Functions Framework is Flask).
* ``on_object_finalized``: the ``google.cloud.storage.object.v1.finalized`` CloudEvent of the
  data bucket; a sample's ``manifest.json`` becomes one job
  (:mod:`~precise_mrd.service.serverless.ingest`); the object's ``generation`` tells one write
  from another.

>>> gcs_arrival({"bucket": "lab-data", "name": "incoming/lab-a/s1/manifest.json",
...              "generation": "1733390000123456"})
Arrival(bucket_url='gs://lab-data', key='incoming/lab-a/s1/manifest.json', \
version='1733390000123456')
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from precise_mrd.service.serverless.ingest import Arrival, ingest
from precise_mrd.service.serverless.runtime import current_runtime

_lock = threading.Lock()
_wsgi: Any = None


def gcs_arrival(data: Mapping[str, Any]) -> Arrival:
    """The object a Cloud Storage event's data names."""
    version = data.get("generation") or data.get("etag") or ""
    return Arrival(f"gs://{data['bucket']}", str(data["name"]), str(version))


def api(request: Any) -> Any:
    """A Flask request -> the app -> a Werkzeug response (streamed)."""
    global _wsgi
    runtime = current_runtime()
    with _lock:
        if _wsgi is None:
            from a2wsgi import ASGIMiddleware

            _wsgi = ASGIMiddleware(runtime.app)  # type: ignore[arg-type]
        wsgi = _wsgi
    from werkzeug.wrappers import Response

    return Response.from_app(wsgi, request.environ)


def on_object_finalized(cloud_event: Any) -> dict[str, Any]:
    """A finalize CloudEvent (``cloudevents`` object or its JSON form) through :func:`ingest`."""
    data = cloud_event["data"] if isinstance(cloud_event, Mapping) else cloud_event.data
    return ingest(current_runtime(), gcs_arrival(data)).as_json()


def reset() -> None:
    """Forget this instance's bridge and runtime (tests)."""
    global _wsgi
    from precise_mrd.service.serverless.runtime import reset_runtime

    with _lock:
        if _wsgi is not None:
            # NB: a2wsgi runs the app on a loop in a thread of its own; stop and close it
            loop = _wsgi.loop
            loop.call_soon_threadsafe(loop.stop)
            deadline = time.monotonic() + 5
            while loop.is_running() and time.monotonic() < deadline:
                time.sleep(0.01)
            if not loop.is_running():
                loop.close()
        _wsgi = None
    reset_runtime()
