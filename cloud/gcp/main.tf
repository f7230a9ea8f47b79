# Precise MRD on Google Cloud: Cloud Run (API, Celery worker, migration job), Cloud SQL for
# PostgreSQL (private IP), Memorystore for Redis, Cloud Storage, Cloud Functions (gen2) and
# Secret Manager. Secret *values* never pass through Terraform: see README.md.

locals {
  labels = merge({ app = "precise-mrd", managed-by = "terraform" }, var.labels)

  services = toset([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "compute.googleapis.com",
    "eventarc.googleapis.com",
    "pubsub.googleapis.com",
    "redis.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com",
    "sqladmin.googleapis.com",
    "storage.googleapis.com",
    "vpcaccess.googleapis.com",
  ])

  database_name = "precise_mrd"
  database_user = "precise_mrd"
  celery_queue  = "precise-mrd"

  # the application's three commands, from one image
  api_command     = ["precise-mrd", "serve"]
  worker_command  = ["precise-mrd", "worker", "--concurrency", "2"]
  migrate_command = ["precise-mrd", "db", "upgrade"]
  api_port        = 8000
  # Cloud Run starts a service's instance only once its port answers: the worker serves its
  # Prometheus metrics there (never exposed: the worker service's ingress is internal)
  worker_metrics_port = 9100

  # secret name suffix => the environment variable that receives its latest version
  secret_env = {
    "database-password" = "PRECISE_MRD_DATABASE_PASSWORD"
    "jwt-secret"        = "PRECISE_MRD_JWT_SECRET"
  }

  # no password in the URL: the app adds PRECISE_MRD_DATABASE_PASSWORD. Cloud SQL has no
  # public IP, so every client connects over the VPC connector to the private IP, with TLS.
  database_url = "postgresql+psycopg://${local.database_user}@${google_sql_database_instance.main.private_ip_address}:5432/${local.database_name}?sslmode=require"
  redis_base   = "redis://${google_redis_instance.main.host}:${google_redis_instance.main.port}"

  common_env = {
    PRECISE_MRD_DATABASE_URL              = local.database_url
    PRECISE_MRD_DATABASE_MIGRATE_ON_START = "false" # the migration job does it
    PRECISE_MRD_EXECUTOR                  = "celery"
    PRECISE_MRD_BROKER_URL                = "${local.redis_base}/0"
    PRECISE_MRD_REDIS_URL                 = "${local.redis_base}/1"
    PRECISE_MRD_CELERY_QUEUE              = local.celery_queue
    PRECISE_MRD_STORAGE_URL               = "gs://${google_storage_bucket.data.name}/artifacts"
    PRECISE_MRD_AUTH_MODE                 = "both"
    PRECISE_MRD_LOG_LEVEL                 = var.log_level
    MAX_CONCURRENT_JOBS                   = tostring(var.max_concurrent_jobs)
    JOB_TIMEOUT_SECONDS                   = tostring(var.job_timeout_seconds)
    PRECISE_MRD_WARM_KERNELS_ON_START     = "false"
  }

  # the container image has /opt/numba-cache; /data is an in-memory volume
  container_env = merge(local.common_env, {
    PRECISE_MRD_DATA_DIR = "/data"
    NUMBA_CACHE_DIR      = "/opt/numba-cache"
  })
  api_env = merge(local.container_env, { PRECISE_MRD_API_HOST = "0.0.0.0" })

  # in Cloud Functions only /tmp (in memory) is writable
  function_env = merge(local.common_env, {
    PRECISE_MRD_DATA_DIR = "/tmp/precise-mrd"
    NUMBA_CACHE_DIR      = "/tmp/numba-cache"
  })
}

resource "google_project_service" "enabled" {
  for_each = local.services

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}
