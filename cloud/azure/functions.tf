# Linux Function App (Python 3.11) on an Elastic Premium plan, VNet-integrated (all outbound
# through the VNet, so it reaches PostgreSQL, Redis, Key Vault and storage privately). Code:
# serverless/azure, built and uploaded by the operator (README step 5) and run from the package
# blob with the functions identity. Event Grid sends BlobCreated of
# incoming/**/manifest.json in the data container to on_blob_created.

locals {
  function_package_url = "${azurerm_storage_account.functions.primary_blob_endpoint}${azurerm_storage_container.deployments.name}/precise-mrd-functions.zip"

  function_settings = merge(local.common_env, {
    # only /tmp is writable on the Functions host
    PRECISE_MRD_DATA_DIR = "/tmp/precise-mrd"
    NUMBA_CACHE_DIR      = "/tmp/numba-cache"
    AZURE_CLIENT_ID      = azurerm_user_assigned_identity.functions.client_id

    # host storage through the user-assigned identity (no connection string, no key)
    AzureWebJobsStorage__credential = "managedidentity"
    AzureWebJobsStorage__clientId   = azurerm_user_assigned_identity.functions.client_id

    WEBSITE_RUN_FROM_PACKAGE                     = local.function_package_url
    WEBSITE_RUN_FROM_PACKAGE_BLOB_MI_RESOURCE_ID = azurerm_user_assigned_identity.functions.id

    # telemetry with Entra ID (Application Insights refuses the instrumentation key alone)
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING = "Authorization=AAD;ClientId=${azurerm_user_assigned_identity.functions.client_id}"
    }, {
    for name, variable in local.secret_env :
    variable => "@Microsoft.KeyVault(SecretUri=${local.secret_ids[name]})"
  })
}

resource "azurerm_service_plan" "functions" {
  name                         = "asp-${var.name_prefix}-functions"
  location                     = azurerm_resource_group.main.location
  resource_group_name          = azurerm_resource_group.main.name
  os_type                      = "Linux"
  sku_name                     = "EP1"
  maximum_elastic_worker_count = var.functions_max_instances
  # zone redundancy needs at least 3 always-ready instances
  zone_balancing_enabled = var.functions_zone_redundant
  worker_count           = var.functions_zone_redundant ? 3 : 1
  tags                   = local.tags
}

resource "azurerm_linux_function_app" "main" {
  #checkov:skip=CKV_AZURE_221:the function app serves the public `api` HTTP function by design; the application authenticates every request (PRECISE_MRD_AUTH_MODE=both), and Event Grid delivers to it over its public endpoint
  name                = "func-${local.base}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  service_plan_id     = azurerm_service_plan.functions.id
  tags                = local.tags

  storage_account_name          = azurerm_storage_account.functions.name
  storage_uses_managed_identity = true
  # no Azure Files content share (it would need a shared key): the app runs from the package
  content_share_force_disabled = true

  functions_extension_version                    = "~4"
  https_only                                     = true
  public_network_access_enabled                  = true
  virtual_network_subnet_id                      = azurerm_subnet.main["functions"].id
  key_vault_reference_identity_id                = azurerm_user_assigned_identity.functions.id
  ftp_publish_basic_authentication_enabled       = false
  webdeploy_publish_basic_authentication_enabled = false

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.functions.id]
  }

  site_config {
    application_insights_connection_string = azurerm_application_insights.main.connection_string
    vnet_route_all_enabled                 = true
    ftps_state                             = "Disabled"
    minimum_tls_version                    = "1.2"
    http2_enabled                          = true
    elastic_instance_minimum               = var.functions_zone_redundant ? 3 : 1
    pre_warmed_instance_count              = 1

    application_stack {
      python_version = "3.11"
    }
  }

  app_settings = local.function_settings

  depends_on = [
    azurerm_role_assignment.functions_host_storage,
    azurerm_role_assignment.secrets_user,
    azurerm_private_endpoint.main,
    azurerm_private_dns_zone_virtual_network_link.main,
  ]
}

resource "azurerm_eventgrid_system_topic" "data" {
  name                   = "evgt-${var.name_prefix}-data"
  location               = azurerm_resource_group.main.location
  resource_group_name    = azurerm_resource_group.main.name
  source_arm_resource_id = azurerm_storage_account.data.id
  topic_type             = "Microsoft.Storage.StorageAccounts"
  tags                   = local.tags
}

resource "azurerm_eventgrid_system_topic_event_subscription" "manifest" {
  count = var.blob_event_subscription_enabled ? 1 : 0

  name                  = "manifest-to-function"
  system_topic          = azurerm_eventgrid_system_topic.data.name
  resource_group_name   = azurerm_resource_group.main.name
  event_delivery_schema = "EventGridSchema"
  included_event_types  = ["Microsoft.Storage.BlobCreated"]

  subject_filter {
    subject_begins_with = "/blobServices/default/containers/${azurerm_storage_container.data.name}/blobs/incoming/"
    subject_ends_with   = "manifest.json"
    case_sensitive      = true
  }

  azure_function_endpoint {
    function_id                       = "${azurerm_linux_function_app.main.id}/functions/on_blob_created"
    max_events_per_batch              = 1
    preferred_batch_size_in_kilobytes = 64
  }

  retry_policy {
    max_delivery_attempts = 10
    event_time_to_live    = 1440
  }
}
