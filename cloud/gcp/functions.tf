# Cloud Functions (gen2, Python 3.11) from serverless/gcp: `api` (HTTP) and
# `on_object_finalized` (object finalized in the data bucket; the code acts only on
# incoming/<tenant>/<sample>/manifest.json). Both reach Cloud SQL and Memorystore through the
# VPC connector and read the two secrets as environment variables.

resource "google_cloudfunctions2_function" "api" {
  #checkov:skip=CKV_GCP_124:the API function is the public HTTPS entry point (ALLOW_ALL ingress) by design; the application authenticates every request
  name     = "${var.name_prefix}-fn-api"
  location = var.region
  labels   = local.labels

  build_config {
    runtime     = "python311"
    entry_point = "api"
    source {
      storage_source {
        bucket = google_storage_bucket.functions_source.name
        object = google_storage_bucket_object.functions_source.name
      }
    }
  }

  service_config {
    available_memory                 = "2Gi"
    available_cpu                    = "1"
    timeout_seconds                  = 300
    min_instance_count               = 0
    max_instance_count               = var.function_max_instances
    max_instance_request_concurrency = 1
    ingress_settings                 = "ALLOW_ALL"
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.functions.email
    vpc_connector                    = google_vpc_access_connector.main.id
    vpc_connector_egress_settings    = "PRIVATE_RANGES_ONLY"
    environment_variables            = local.function_env

    dynamic "secret_environment_variables" {
      for_each = local.secret_env
      content {
        key        = secret_environment_variables.value
        project_id = var.project_id
        secret     = google_secret_manager_secret.app[secret_environment_variables.key].secret_id
        version    = "latest"
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.accessor]
}

resource "google_cloudfunctions2_function" "on_object_finalized" {
  name     = "${var.name_prefix}-fn-ingest"
  location = var.region
  labels   = local.labels

  build_config {
    runtime     = "python311"
    entry_point = "on_object_finalized"
    source {
      storage_source {
        bucket = google_storage_bucket.functions_source.name
        object = google_storage_bucket_object.functions_source.name
      }
    }
  }

  service_config {
    available_memory               = "4Gi"
    available_cpu                  = "2"
    timeout_seconds                = 540
    min_instance_count             = 0
    max_instance_count             = var.function_max_instances
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.functions.email
    vpc_connector                  = google_vpc_access_connector.main.id
    vpc_connector_egress_settings  = "PRIVATE_RANGES_ONLY"
    environment_variables          = local.function_env

    dynamic "secret_environment_variables" {
      for_each = local.secret_env
      content {
        key        = secret_environment_variables.value
        project_id = var.project_id
        secret     = google_secret_manager_secret.app[secret_environment_variables.key].secret_id
        version    = "latest"
      }
    }
  }

  event_trigger {
    trigger_region        = var.region
    event_type            = "google.cloud.storage.object.v1.finalized"
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.functions.email

    event_filters {
      attribute = "bucket"
      value     = google_storage_bucket.data.name
    }
  }

  depends_on = [
    google_secret_manager_secret_iam_member.accessor,
    google_project_iam_member.functions_event_receiver,
    google_project_iam_member.gcs_pubsub_publisher,
  ]
}
