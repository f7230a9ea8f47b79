output "api_url" {
  description = "HTTPS URL of the API Cloud Run service."
  value       = google_cloud_run_v2_service.api.uri
}

output "api_function_url" {
  description = "HTTPS URL of the `api` Cloud Function."
  value       = google_cloudfunctions2_function.api.url
}

output "worker_service_name" {
  description = "Name of the Celery worker Cloud Run service."
  value       = google_cloud_run_v2_service.worker.name
}

output "migrate_job_name" {
  description = "Name of the migration Cloud Run job: `gcloud run jobs execute <name> --region <region> --wait`."
  value       = google_cloud_run_v2_job.migrate.name
}

output "sql_instance_name" {
  description = "Cloud SQL instance name (for `gcloud sql users set-password`)."
  value       = google_sql_database_instance.main.name
}

output "sql_connection_name" {
  description = "Cloud SQL connection name (project:region:instance)."
  value       = google_sql_database_instance.main.connection_name
}

output "sql_private_ip" {
  description = "Private IP address of the Cloud SQL instance."
  value       = google_sql_database_instance.main.private_ip_address
}

output "database_user" {
  description = "Database user the application connects as; its password lives only in Secret Manager."
  value       = google_sql_user.app.name
}

output "redis_host" {
  description = "Private address of the Memorystore instance."
  value       = google_redis_instance.main.host
}

output "data_bucket" {
  description = "The data bucket: artifacts/ for the service, incoming/<tenant>/<sample>/manifest.json triggers ingestion."
  value       = google_storage_bucket.data.name
}

output "secret_ids" {
  description = "Secret Manager secrets whose versions the operator adds (`gcloud secrets versions add`)."
  value       = { for key, secret in google_secret_manager_secret.app : local.secret_env[key] => secret.secret_id }
}

output "run_service_account" {
  description = "Service account of the API, the worker and the migration job."
  value       = google_service_account.run.email
}

output "functions_service_account" {
  description = "Service account of the Cloud Functions and their Eventarc trigger."
  value       = google_service_account.functions.email
}

output "vpc_connector" {
  description = "Serverless VPC Access connector used by Cloud Run and Cloud Functions."
  value       = google_vpc_access_connector.main.id
}
