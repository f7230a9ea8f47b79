# Two accounts, both Entra-ID-only (no shared keys), TLS 1.2, no public blobs, infrastructure
# encryption, versioning and soft delete, default-deny firewall with private endpoints:
#  - data: the `data` container (artifacts/ and incoming/<tenant>/<sample>/manifest.json)
#  - functions: the Functions host's state and the function package (deployments container)

locals {
  storage_accounts = {
    data      = "st${var.name_prefix}data${var.unique_suffix}"
    functions = "st${var.name_prefix}fn${var.unique_suffix}"
  }
}

resource "azurerm_storage_account" "data" {
  #checkov:skip=CKV_AZURE_33:queue, blob and table requests are logged through Azure Monitor diagnostic settings (azurerm_monitor_diagnostic_setting.storage); classic Storage Analytics logging (queue_properties.logging) is configured over the shared-key data plane, which this account refuses
  #checkov:skip=CKV2_AZURE_1:encrypted with Microsoft-managed keys plus infrastructure (double) encryption; a customer-managed key would need its own Key Vault key and rotation process, not part of this module
  #checkov:skip=CKV_AZURE_59:the public endpoint stays on behind a default-deny firewall so the operators (var.operator_ip_ranges) can reach it; the workloads use the private endpoint
  name                              = local.storage_accounts.data
  location                          = azurerm_resource_group.main.location
  resource_group_name               = azurerm_resource_group.main.name
  account_kind                      = "StorageV2"
  account_tier                      = "Standard"
  account_replication_type          = var.storage_replication_type
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  allow_nested_items_to_be_public   = false
  shared_access_key_enabled         = false
  default_to_oauth_authentication   = true
  infrastructure_encryption_enabled = true
  local_user_enabled                = false
  public_network_access_enabled     = true
  tags                              = local.tags

  network_rules {
    default_action = "Deny"
    bypass         = ["AzureServices"]
    ip_rules       = var.operator_ip_ranges
  }

  blob_properties {
    versioning_enabled  = true
    change_feed_enabled = true

    delete_retention_policy {
      days = var.blob_soft_delete_days
    }

    container_delete_retention_policy {
      days = var.blob_soft_delete_days
    }
  }

  sas_policy {
    expiration_period = "0.01:00:00"
    expiration_action = "Log"
  }
}

resource "azurerm_storage_account" "functions" {
  #checkov:skip=CKV_AZURE_33:queue, blob and table requests are logged through Azure Monitor diagnostic settings (azurerm_monitor_diagnostic_setting.storage); classic Storage Analytics logging (queue_properties.logging) is configured over the shared-key data plane, which this account refuses
  #checkov:skip=CKV2_AZURE_1:encrypted with Microsoft-managed keys plus infrastructure (double) encryption; a customer-managed key would need its own Key Vault key and rotation process, not part of this module
  #checkov:skip=CKV_AZURE_59:the public endpoint stays on behind a default-deny firewall so the operators (var.operator_ip_ranges) can upload the function package; the function app uses the private endpoints
  name                              = local.storage_accounts.functions
  location                          = azurerm_resource_group.main.location
  resource_group_name               = azurerm_resource_group.main.name
  account_kind                      = "StorageV2"
  account_tier                      = "Standard"
  account_replication_type          = var.storage_replication_type
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  allow_nested_items_to_be_public   = false
  shared_access_key_enabled         = false
  default_to_oauth_authentication   = true
  infrastructure_encryption_enabled = true
  local_user_enabled                = false
  public_network_access_enabled     = true
  tags                              = local.tags

  network_rules {
    default_action = "Deny"
    bypass         = ["AzureServices"]
    ip_rules       = var.operator_ip_ranges
  }

  blob_properties {
    versioning_enabled = true

    delete_retention_policy {
      days = var.blob_soft_delete_days
    }

    container_delete_retention_policy {
      days = var.blob_soft_delete_days
    }
  }

  sas_policy {
    expiration_period = "0.01:00:00"
    expiration_action = "Log"
  }
}

# containers through the management plane (storage_account_id), so Terraform needs no data access
resource "azurerm_storage_container" "data" {
  #checkov:skip=CKV2_AZURE_21:blob reads are logged by the account's diagnostic setting (azurerm_monitor_diagnostic_setting.storage); azurerm_log_analytics_storage_insights would need the storage account key, which is disabled and must not be in state
  name                  = local.data_container
  storage_account_id    = azurerm_storage_account.data.id
  container_access_type = "private"
}

resource "azurerm_storage_container" "deployments" {
  #checkov:skip=CKV2_AZURE_21:blob reads are logged by the account's diagnostic setting (azurerm_monitor_diagnostic_setting.storage); azurerm_log_analytics_storage_insights would need the storage account key, which is disabled and must not be in state
  name                  = "deployments"
  storage_account_id    = azurerm_storage_account.functions.id
  container_access_type = "private"
}

# replaced and deleted versions go after the soft-delete window
resource "azurerm_storage_management_policy" "data" {
  storage_account_id = azurerm_storage_account.data.id

  rule {
    name    = "expire-old-versions"
    enabled = true

    filters {
      blob_types = ["blockBlob"]
    }

    actions {
      version {
        delete_after_days_since_creation = var.blob_soft_delete_days
      }
    }
  }
}

# request logs (read, write, delete) of each service of both accounts, in Log Analytics
locals {
  storage_log_targets = {
    data-blob       = "${azurerm_storage_account.data.id}/blobServices/default"
    functions-blob  = "${azurerm_storage_account.functions.id}/blobServices/default"
    functions-queue = "${azurerm_storage_account.functions.id}/queueServices/default"
    functions-table = "${azurerm_storage_account.functions.id}/tableServices/default"
  }
}

resource "azurerm_monitor_diagnostic_setting" "storage" {
  for_each = local.storage_log_targets

  name                       = "to-log-analytics"
  target_resource_id         = each.value
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id

  enabled_log {
    category = "StorageRead"
  }
  enabled_log {
    category = "StorageWrite"
  }
  enabled_log {
    category = "StorageDelete"
  }
}
