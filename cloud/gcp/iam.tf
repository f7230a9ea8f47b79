# Two service accounts, each with only what it uses: objects of the data bucket, the two
# secrets, and (functions) the Eventarc receiver role. Cloud SQL is reached over its private
# IP with a password, so no Cloud SQL IAM role is needed.

resource "google_service_account" "run" {
  account_id   = "${var.name_prefix}-run"
  display_name = "Precise MRD API, worker and migration job (Cloud Run)"
}

resource "google_service_account" "functions" {
  account_id   = "${var.name_prefix}-functions"
  display_name = "Precise MRD Cloud Functions and their Eventarc trigger"
}

locals {
  runtime_members = {
    run       = "serviceAccount:${google_service_account.run.email}"
    functions = "serviceAccount:${google_service_account.functions.email}"
  }
  secret_grants = {
    for pair in setproduct(keys(local.runtime_members), keys(local.secret_env)) :
    "${pair[0]}/${pair[1]}" => { member = local.runtime_members[pair[0]], secret = pair[1] }
  }
}

resource "google_storage_bucket_iam_member" "data_object_admin" {
  for_each = local.runtime_members

  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectAdmin"
  member = each.value
}

resource "google_secret_manager_secret_iam_member" "accessor" {
  for_each = local.secret_grants

  secret_id = google_secret_manager_secret.app[each.value.secret].id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value.member
}

# Eventarc: the trigger's identity receives events; Cloud Storage's service agent publishes them
resource "google_project_iam_member" "functions_event_receiver" {
  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = local.runtime_members.functions
}

data "google_storage_project_service_account" "gcs" {
  project = var.project_id
}

resource "google_project_iam_member" "gcs_pubsub_publisher" {
  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

# the trigger's identity may invoke the event function (its Cloud Run service), nothing else
resource "google_cloud_run_v2_service_iam_member" "event_function_invoker" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.on_object_finalized.name
  role     = "roles/run.invoker"
  member   = local.runtime_members.functions
}

# the API authenticates every request itself (PRECISE_MRD_AUTH_MODE=both)
resource "google_cloud_run_v2_service_iam_member" "api_public" {
  # public by design (var.api_public): the application authenticates every request
  count = var.api_public ? 1 : 0

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.api.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

resource "google_cloud_run_v2_service_iam_member" "api_function_public" {
  # public by design (var.api_public): the application authenticates every request
  count = var.api_public ? 1 : 0

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.api.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}
