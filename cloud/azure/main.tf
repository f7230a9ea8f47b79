# Precise MRD on Azure: Container Apps (API, Celery worker with a KEDA Redis rule, migration
# job), Azure Database for PostgreSQL flexible server (delegated subnet), Azure Cache for Redis
# (private endpoint), Blob Storage, a Linux Function App (Premium EP1, VNet-integrated) with an
# Event Grid subscription, Key Vault, Log Analytics and Application Insights.
# Secret VALUES never pass through Terraform's state: see README.md.

data "azurerm_client_config" "current" {}

locals {
  tags = merge({ app = "precise-mrd", managed-by = "terraform" }, var.tags)
  base = "${var.name_prefix}-${var.unique_suffix}"

  database_name  = "precise_mrd"
  database_user  = "precise_mrd"
  celery_queue   = "precise-mrd"
  data_container = "data"

  api_command     = ["precise-mrd", "serve"]
  worker_command  = ["precise-mrd", "worker", "--concurrency", "2"]
  migrate_command = ["precise-mrd", "db", "upgrade"]
  api_port        = 8000

  # Key Vault secrets whose VALUES the operator sets (`az keyvault secret set`, README): the
  # container apps and the function app reference them by versionless ID, Terraform never reads
  # them. name in the vault => the environment variable that receives it
  secret_env = {
    "database-password" = "PRECISE_MRD_DATABASE_PASSWORD"
    "jwt-secret"        = "PRECISE_MRD_JWT_SECRET"
    "broker-url"        = "PRECISE_MRD_BROKER_URL" # rediss://:<access key>@<host>:6380/0?ssl_cert_reqs=required
    "redis-url"         = "PRECISE_MRD_REDIS_URL"  # rediss://:<access key>@<host>:6380/1?ssl_cert_reqs=required
  }
  # read by KEDA's redis scaler of the worker, not by the application
  keda_secret = "redis-password"

  secret_ids = {
    for name in concat(keys(local.secret_env), [local.keda_secret]) :
    name => "${azurerm_key_vault.main.vault_uri}secrets/${name}"
  }

  common_env = {
    PRECISE_MRD_DATABASE_URL              = "postgresql+psycopg://${local.database_user}@${azurerm_postgresql_flexible_server.main.fqdn}:5432/${local.database_name}?sslmode=require"
    PRECISE_MRD_DATABASE_MIGRATE_ON_START = "false" # the migration job does it
    PRECISE_MRD_EXECUTOR                  = "celery"
    PRECISE_MRD_CELERY_QUEUE              = local.celery_queue
    PRECISE_MRD_STORAGE_URL               = "az://${local.data_container}/artifacts"
    AZURE_STORAGE_ACCOUNT_NAME            = azurerm_storage_account.data.name
    PRECISE_MRD_AUTH_MODE                 = "both"
    PRECISE_MRD_LOG_LEVEL                 = var.log_level
    MAX_CONCURRENT_JOBS                   = tostring(var.max_concurrent_jobs)
    JOB_TIMEOUT_SECONDS                   = tostring(var.job_timeout_seconds)
    PRECISE_MRD_WARM_KERNELS_ON_START     = "false"
  }

  # the image has /opt/numba-cache; /data is an EmptyDir volume
  container_env = merge(local.common_env, {
    PRECISE_MRD_DATA_DIR = "/data"
    NUMBA_CACHE_DIR      = "/opt/numba-cache"
    AZURE_CLIENT_ID      = azurerm_user_assigned_identity.app.client_id
  })
  api_env = merge(local.container_env, { PRECISE_MRD_API_HOST = "0.0.0.0" })
}

resource "azurerm_resource_group" "main" {
  name     = "rg-${var.name_prefix}"
  location = var.location
  tags     = local.tags
}

# --- identities ---------------------------------------------------------------------------

# the API, the worker and the migration job
resource "azurerm_user_assigned_identity" "app" {
  name                = "id-${var.name_prefix}-app"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

# the function app (its host storage, the data account, Key Vault references)
resource "azurerm_user_assigned_identity" "functions" {
  name                = "id-${var.name_prefix}-functions"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

resource "azurerm_role_assignment" "app_data_blob" {
  scope                = azurerm_storage_account.data.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.app.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "functions_data_blob" {
  scope                = azurerm_storage_account.data.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.functions.principal_id
  principal_type       = "ServicePrincipal"
}

# the Functions host keeps leases, timers and queues in its own account
resource "azurerm_role_assignment" "functions_host_storage" {
  for_each = toset(["Storage Blob Data Owner", "Storage Queue Data Contributor", "Storage Table Data Contributor"])

  scope                = azurerm_storage_account.functions.id
  role_definition_name = each.value
  principal_id         = azurerm_user_assigned_identity.functions.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "secrets_user" {
  for_each = {
    app       = azurerm_user_assigned_identity.app.principal_id
    functions = azurerm_user_assigned_identity.functions.principal_id
  }

  scope                = azurerm_key_vault.main.id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = each.value
  principal_type       = "ServicePrincipal"
}

# whoever applies this sets the secret values (README step 2)
resource "azurerm_role_assignment" "deployer_secrets_officer" {
  scope                = azurerm_key_vault.main.id
  role_definition_name = "Key Vault Secrets Officer"
  principal_id         = data.azurerm_client_config.current.object_id
}

# ... and uploads the function package (README step 5)
resource "azurerm_role_assignment" "deployer_package_upload" {
  scope                = azurerm_storage_account.functions.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = data.azurerm_client_config.current.object_id
}

resource "azurerm_role_assignment" "app_acr_pull" {
  count = var.acr_id == null ? 0 : 1

  scope                = var.acr_id
  role_definition_name = "AcrPull"
  principal_id         = azurerm_user_assigned_identity.app.principal_id
  principal_type       = "ServicePrincipal"
}
