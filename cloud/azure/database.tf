# Azure Database for PostgreSQL flexible server in its delegated subnet (no public access).
# The application only does password auth, so password auth stays on. The administrator
# password comes from an ephemeral variable through the write-only administrator_password_wo:
# it is in neither the plan nor the state; the same value is the Key Vault secret
# database-password (README).

resource "azurerm_postgresql_flexible_server" "main" {
  #checkov:skip=CKV2_AZURE_57:the server is VNet-injected (delegated subnet, private DNS zone, public access off), which is private access without a private endpoint; Azure does not offer private endpoints for VNet-injected servers
  name                          = "psql-${local.base}"
  location                      = azurerm_resource_group.main.location
  resource_group_name           = azurerm_resource_group.main.name
  version                       = var.db_version
  sku_name                      = var.db_sku
  storage_mb                    = var.db_storage_mb
  auto_grow_enabled             = true
  backup_retention_days         = 35
  geo_redundant_backup_enabled  = var.db_geo_redundant_backup
  delegated_subnet_id           = azurerm_subnet.main["postgres"].id
  private_dns_zone_id           = azurerm_private_dns_zone.postgres.id
  public_network_access_enabled = false
  tags                          = local.tags

  administrator_login               = local.database_user
  administrator_password_wo         = var.db_admin_password
  administrator_password_wo_version = var.db_admin_password_version

  authentication {
    active_directory_auth_enabled = false
    password_auth_enabled         = true
  }

  dynamic "high_availability" {
    for_each = var.db_high_availability_mode == "Disabled" ? [] : [var.db_high_availability_mode]
    content {
      mode = high_availability.value
    }
  }

  maintenance_window {
    day_of_week  = 0
    start_hour   = 3
    start_minute = 0
  }

  lifecycle {
    # Azure picks the zones and swaps them on failover
    ignore_changes = [zone, high_availability[0].standby_availability_zone]
  }

  depends_on = [azurerm_private_dns_zone_virtual_network_link.postgres]
}

resource "azurerm_postgresql_flexible_server_database" "main" {
  name      = local.database_name
  server_id = azurerm_postgresql_flexible_server.main.id
  charset   = "UTF8"
  collation = "en_US.utf8"
}

resource "azurerm_postgresql_flexible_server_configuration" "main" {
  for_each = {
    require_secure_transport = "on"
    log_checkpoints          = "on"
    log_connections          = "on"
    log_disconnections       = "on"
  }

  name      = each.key
  server_id = azurerm_postgresql_flexible_server.main.id
  value     = each.value
}
