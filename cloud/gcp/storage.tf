# The data bucket (artifacts/ written by the service, incoming/<tenant>/<sample>/manifest.json
# dropped by clients) and a bucket for the Cloud Functions source archive.

resource "google_storage_bucket" "data" {
  #checkov:skip=CKV_GCP_62:access is recorded by Cloud Audit Logs data access logs (google_project_iam_audit_config.storage), Google's replacement for legacy usage logs, which would need yet another bucket
  name                        = "${var.project_id}-${var.name_prefix}-data"
  location                    = upper(var.region)
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = local.labels

  versioning {
    enabled = true
  }

  soft_delete_policy {
    retention_duration_seconds = 7 * 24 * 3600
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  depends_on = [google_project_service.enabled]
}

resource "google_storage_bucket" "functions_source" {
  #checkov:skip=CKV_GCP_62:access is recorded by Cloud Audit Logs data access logs (google_project_iam_audit_config.storage), Google's replacement for legacy usage logs, which would need yet another bucket
  name                        = "${var.project_id}-${var.name_prefix}-fn-src"
  location                    = upper(var.region)
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true
  labels                      = local.labels

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
    }
    action {
      type = "Delete"
    }
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  depends_on = [google_project_service.enabled]
}

data "archive_file" "functions" {
  type        = "zip"
  source_dir  = "${path.module}/../../serverless/gcp"
  output_path = "${path.module}/build/functions-gcp.zip"
  excludes    = ["__pycache__", ".venv"]
}

# named by content, so a changed source redeploys both functions
resource "google_storage_bucket_object" "functions_source" {
  name   = "functions/${data.archive_file.functions.output_md5}.zip"
  bucket = google_storage_bucket.functions_source.name
  source = data.archive_file.functions.output_path
}

# every object read and write in the project's buckets goes to Cloud Logging
resource "google_project_iam_audit_config" "storage" {
  count = var.storage_data_access_logs ? 1 : 0

  project = var.project_id
  service = "storage.googleapis.com"

  audit_log_config {
    log_type = "DATA_READ"
  }
  audit_log_config {
    log_type = "DATA_WRITE"
  }
}
