"""Serverless entry points: the same API and the same job code, called by a cloud's functions.

Two jobs on each cloud, one module per cloud, over one cloud-neutral core::

    job                   AWS (aws.py)              GCP (gcp.py)         Azure (azure.py)
    the HTTP API          api_handler               api                  api
                          (API Gateway v2, Mangum)  (HTTP, a2wsgi)       (HTTP, AsgiMiddleware)
    a sample's files      storage_event_handler     on_object_finalized  on_blob_created
    landed                (S3 ObjectCreated)        (GCS finalize)       (Event Grid BlobCreated)
    recovery, clean-up    maintenance_handler       -                    -
                          (EventBridge schedule)

* :mod:`~precise_mrd.service.serverless.runtime` builds, once per cold start, the settings, the
  artifact store, the job service and the app; a function cannot run a job after it has answered,
  so the API's jobs go to Celery workers (``PRECISE_MRD_EXECUTOR=celery``) and are sent to the
  broker inside the request that submits them.
* :mod:`~precise_mrd.service.serverless.ingest` turns "``incoming/<tenant>/<sample>/manifest.json``
  landed" into one job: the manifest names the sample's files beside it; they are checked and
  copied into the job's inputs as an upload would be, and the job runs in the function itself
  (local executor) or goes to the workers (Celery). The job id is derived from the object's
  version, so a repeated notification of the same write finds the job it made and runs nothing.
"""
