# Cloud SQL for PostgreSQL, private IP only, TLS required. The user is created without a
# password: the operator sets it out of band (README), so no password is in the state.

resource "google_sql_database_instance" "main" {
  #checkov:skip=CKV_GCP_6:ssl_mode is ENCRYPTED_ONLY, so unencrypted connections are refused; TRUSTED_CLIENT_CERTIFICATE_REQUIRED would need a client certificate in every Cloud Run and Cloud Functions instance, which the psycopg clients here do not carry
  #checkov:skip=CKV_GCP_79:the major version is var.db_version (default POSTGRES_17); checkov wants POSTGRES_18, which the application has not been tested against and is not offered in every region
  name                = "${var.name_prefix}-pg"
  region              = var.region
  database_version    = var.db_version
  deletion_protection = var.deletion_protection

  settings {
    tier                        = var.db_tier
    edition                     = "ENTERPRISE"
    availability_type           = var.db_availability_type
    disk_type                   = "PD_SSD"
    disk_size                   = var.db_disk_size_gb
    disk_autoresize             = true
    deletion_protection_enabled = var.deletion_protection
    user_labels                 = local.labels

    ip_configuration {
      ipv4_enabled                                  = false
      private_network                               = google_compute_network.main.id
      ssl_mode                                      = "ENCRYPTED_ONLY"
      enable_private_path_for_google_cloud_services = true
    }

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
      start_time                     = "02:00"
      transaction_log_retention_days = 7

      backup_retention_settings {
        retained_backups = 14
      }
    }

    maintenance_window {
      day          = 7
      hour         = 3
      update_track = "stable"
    }

    insights_config {
      query_insights_enabled  = true
      record_application_tags = false
      record_client_address   = false
    }

    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_min_messages"
      value = "warning"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_duration"
      value = "on"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
  }

  depends_on = [google_service_networking_connection.private_services]
}

resource "google_sql_database" "main" {
  name     = local.database_name
  instance = google_sql_database_instance.main.name
}

# no `password`: `gcloud sql users set-password` gives it one (README step 2)
resource "google_sql_user" "app" {
  name            = local.database_user
  instance        = google_sql_database_instance.main.name
  type            = "BUILT_IN"
  deletion_policy = "ABANDON"
}
