# Memorystore for Redis on the VPC (private services access): the Celery broker (db 0) and the
# cache / rate-limit store (db 1).

resource "google_redis_instance" "main" {
  #checkov:skip=CKV_GCP_95:AUTH would make Terraform read the generated AUTH string into its state (google_redis_instance.auth_string), which this module must not hold; the instance has no public endpoint and is reachable only from this VPC through private services access
  #checkov:skip=CKV_GCP_97:in-transit encryption (SERVER_AUTHENTICATION) needs the instance's server CA mounted in every client and rediss:// URLs; not done here, traffic stays on the private services peering of this VPC
  name               = "${var.name_prefix}-redis"
  tier               = var.redis_tier
  memory_size_gb     = var.redis_memory_size_gb
  region             = var.region
  redis_version      = "REDIS_7_2"
  authorized_network = google_compute_network.main.id
  connect_mode       = "PRIVATE_SERVICE_ACCESS"
  labels             = local.labels

  auth_enabled            = false
  transit_encryption_mode = "DISABLED"

  persistence_config {
    persistence_mode    = "RDB"
    rdb_snapshot_period = "ONE_HOUR"
  }

  maintenance_policy {
    weekly_maintenance_window {
      day = "SUNDAY"
      start_time {
        hours   = 3
        minutes = 0
        seconds = 0
        nanos   = 0
      }
    }
  }

  depends_on = [google_service_networking_connection.private_services]
}
