# The vault only: no azurerm_key_vault_secret (it would need the value, and keep it in state).
# The operator sets each value with `az keyvault secret set` (README step 2); the apps refer to
# the versionless secret IDs (local.secret_ids), so a new version is picked up without Terraform.

resource "azurerm_key_vault" "main" {
  #checkov:skip=CKV_AZURE_189:public endpoint stays on behind a default-deny firewall so the operators (var.operator_ip_ranges, nothing else) can set the secret values; the workloads use the private endpoint
  name                          = "kv-${local.base}"
  location                      = azurerm_resource_group.main.location
  resource_group_name           = azurerm_resource_group.main.name
  tenant_id                     = data.azurerm_client_config.current.tenant_id
  sku_name                      = "standard"
  enable_rbac_authorization     = true
  purge_protection_enabled      = true
  soft_delete_retention_days    = 90
  public_network_access_enabled = true
  tags                          = local.tags

  network_acls {
    default_action = "Deny"
    bypass         = "AzureServices"
    ip_rules       = var.operator_ip_ranges
  }
}
