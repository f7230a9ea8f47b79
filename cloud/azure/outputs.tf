output "resource_group_name" {
  description = "Resource group holding every resource."
  value       = azurerm_resource_group.main.name
}

output "api_url" {
  description = "HTTPS URL of the API container app."
  value       = "https://${azurerm_container_app.api.ingress[0].fqdn}"
}

output "function_app_name" {
  description = "Name of the function app."
  value       = azurerm_linux_function_app.main.name
}

output "function_app_url" {
  description = "HTTPS URL of the function app (the `api` HTTP function)."
  value       = "https://${azurerm_linux_function_app.main.default_hostname}"
}

output "function_package_url" {
  description = "Blob the function app runs from: upload the built serverless/azure package there (README step 5)."
  value       = local.function_package_url
}

output "worker_app_name" {
  description = "Name of the worker container app."
  value       = azurerm_container_app.worker.name
}

output "migrate_job_name" {
  description = "Name of the migration job: `az containerapp job start --name <job> --resource-group <rg>`."
  value       = azurerm_container_app_job.migrate.name
}

output "key_vault_name" {
  description = "Key Vault whose secrets the operator sets: database-password, jwt-secret, broker-url, redis-url, redis-password."
  value       = azurerm_key_vault.main.name
}

output "key_vault_secret_ids" {
  description = "Versionless IDs of the secrets the apps reference (the values are set out of band)."
  value       = local.secret_ids
}

output "postgres_fqdn" {
  description = "Private FQDN of the PostgreSQL flexible server."
  value       = azurerm_postgresql_flexible_server.main.fqdn
}

output "database_user" {
  description = "Database user the application connects as; its password lives only in Key Vault."
  value       = azurerm_postgresql_flexible_server.main.administrator_login
}

output "redis_hostname" {
  description = "Host name of Azure Cache for Redis (TLS port 6380, private endpoint)."
  value       = azurerm_redis_cache.main.hostname
}

output "redis_name" {
  description = "Name of the cache, for `az redis list-keys` (README step 2)."
  value       = azurerm_redis_cache.main.name
}

output "data_storage_account" {
  description = "Storage account of the data container (AZURE_STORAGE_ACCOUNT_NAME)."
  value       = azurerm_storage_account.data.name
}

output "data_container" {
  description = "Blob container holding artifacts/ and incoming/."
  value       = azurerm_storage_container.data.name
}

output "app_identity_client_id" {
  description = "Client ID of the managed identity of the API, the worker and the migration job."
  value       = azurerm_user_assigned_identity.app.client_id
}

output "functions_identity_client_id" {
  description = "Client ID of the managed identity of the function app."
  value       = azurerm_user_assigned_identity.functions.client_id
}

output "log_analytics_workspace_id" {
  description = "Log Analytics workspace of the Container Apps environment and Application Insights."
  value       = azurerm_log_analytics_workspace.main.id
}
