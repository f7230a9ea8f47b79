# Secret Manager secrets WITHOUT versions: Terraform creates the containers and the access
# grants, the operator adds the values (`gcloud secrets versions add`, README step 2).

resource "google_secret_manager_secret" "app" {
  for_each = local.secret_env

  secret_id = "${var.name_prefix}-${each.key}"
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}
