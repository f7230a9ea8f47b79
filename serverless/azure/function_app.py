"""Azure Functions (Python v2 model) entry point; the handlers live in the package
(precise_mrd.service.serverless.azure).

  api              HTTP trigger on every route: the job API (host.json clears the /api prefix)
  on_blob_created  Event Grid Microsoft.Storage.BlobCreated: runs a sample when
                   incoming/<tenant>/<sample>/manifest.json lands

Deploy with cloud/azure (Terraform), after `make serverless-bundle` has put the package's wheel
and the lock file beside this file.
"""

from precise_mrd.service.serverless.azure import app

__all__ = ["app"]
