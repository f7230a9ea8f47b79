"""Cloud Functions (2nd gen) entry points; the handlers live in the package
(precise_mrd.service.serverless.gcp).

  api                  HTTP: the job API
  on_object_finalized  google.cloud.storage.object.v1.finalized on the data bucket: runs a sample
                       when incoming/<tenant>/<sample>/manifest.json lands

Deploy with cloud/gcp (Terraform), after `make serverless-bundle` has put the package's wheel
and the lock file beside this file.
"""

import functions_framework

from precise_mrd.service.serverless import gcp

api = functions_framework.http(gcp.api)
on_object_finalized = functions_framework.cloud_event(gcp.on_object_finalized)
