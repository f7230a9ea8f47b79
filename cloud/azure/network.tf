# One VNet: Container Apps environment, PostgreSQL (delegated), Functions VNet integration
# (delegated) and private endpoints (Redis, Key Vault, the storage accounts), each subnet with
# its NSG; private DNS zones linked to the VNet.

locals {
  subnets = {
    apps = {
      cidr       = cidrsubnet(var.vnet_address_space, 7, 0) # a /23 from a /16
      delegation = "Microsoft.App/environments"
      actions    = ["Microsoft.Network/virtualNetworks/subnets/join/action"]
    }
    postgres = {
      cidr       = cidrsubnet(var.vnet_address_space, 8, 2)
      delegation = "Microsoft.DBforPostgreSQL/flexibleServers"
      actions    = ["Microsoft.Network/virtualNetworks/subnets/join/action"]
    }
    functions = {
      cidr       = cidrsubnet(var.vnet_address_space, 8, 3)
      delegation = "Microsoft.Web/serverFarms"
      actions    = ["Microsoft.Network/virtualNetworks/subnets/action"]
    }
    endpoints = {
      cidr       = cidrsubnet(var.vnet_address_space, 8, 4)
      delegation = null
      actions    = []
    }
  }

  private_dns_zones = {
    blob  = "privatelink.blob.core.windows.net"
    queue = "privatelink.queue.core.windows.net"
    table = "privatelink.table.core.windows.net"
    vault = "privatelink.vaultcore.azure.net"
    redis = "privatelink.redis.cache.windows.net"
  }

  private_endpoints = {
    data-blob       = { resource_id = azurerm_storage_account.data.id, subresource = "blob", zone = "blob" }
    functions-blob  = { resource_id = azurerm_storage_account.functions.id, subresource = "blob", zone = "blob" }
    functions-queue = { resource_id = azurerm_storage_account.functions.id, subresource = "queue", zone = "queue" }
    functions-table = { resource_id = azurerm_storage_account.functions.id, subresource = "table", zone = "table" }
    vault           = { resource_id = azurerm_key_vault.main.id, subresource = "vault", zone = "vault" }
    redis           = { resource_id = azurerm_redis_cache.main.id, subresource = "redisCache", zone = "redis" }
  }
}

resource "azurerm_virtual_network" "main" {
  name                = "vnet-${var.name_prefix}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  address_space       = [var.vnet_address_space]
  tags                = local.tags
}

resource "azurerm_subnet" "main" {
  for_each = local.subnets

  name                 = "snet-${each.key}"
  resource_group_name  = azurerm_resource_group.main.name
  virtual_network_name = azurerm_virtual_network.main.name
  address_prefixes     = [each.value.cidr]

  dynamic "delegation" {
    for_each = each.value.delegation == null ? [] : [each.value.delegation]
    content {
      name = "delegation"
      service_delegation {
        name    = delegation.value
        actions = each.value.actions
      }
    }
  }
}

resource "azurerm_network_security_group" "main" {
  for_each = local.subnets

  name                = "nsg-${var.name_prefix}-${each.key}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

# PostgreSQL and the private endpoints take connections from inside the VNet only
resource "azurerm_network_security_rule" "deny_internet_inbound" {
  for_each = toset(["postgres", "endpoints"])

  name                        = "deny-internet-inbound"
  priority                    = 4000
  direction                   = "Inbound"
  access                      = "Deny"
  protocol                    = "*"
  source_port_range           = "*"
  destination_port_range      = "*"
  source_address_prefix       = "Internet"
  destination_address_prefix  = "*"
  resource_group_name         = azurerm_resource_group.main.name
  network_security_group_name = azurerm_network_security_group.main[each.key].name
}

resource "azurerm_subnet_network_security_group_association" "main" {
  for_each = local.subnets

  subnet_id                 = azurerm_subnet.main[each.key].id
  network_security_group_id = azurerm_network_security_group.main[each.key].id
}

resource "azurerm_private_dns_zone" "main" {
  for_each = local.private_dns_zones

  name                = each.value
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

resource "azurerm_private_dns_zone_virtual_network_link" "main" {
  for_each = local.private_dns_zones

  name                  = "link-${each.key}"
  resource_group_name   = azurerm_resource_group.main.name
  private_dns_zone_name = azurerm_private_dns_zone.main[each.key].name
  virtual_network_id    = azurerm_virtual_network.main.id
  registration_enabled  = false
  tags                  = local.tags
}

resource "azurerm_private_endpoint" "main" {
  for_each = local.private_endpoints

  name                = "pe-${var.name_prefix}-${each.key}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  subnet_id           = azurerm_subnet.main["endpoints"].id
  tags                = local.tags

  private_service_connection {
    name                           = "psc-${each.key}"
    private_connection_resource_id = each.value.resource_id
    subresource_names              = [each.value.subresource]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = "default"
    private_dns_zone_ids = [azurerm_private_dns_zone.main[each.value.zone].id]
  }
}

# PostgreSQL flexible server with a delegated subnet uses its own private DNS zone
resource "azurerm_private_dns_zone" "postgres" {
  name                = "${var.name_prefix}.private.postgres.database.azure.com"
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

resource "azurerm_private_dns_zone_virtual_network_link" "postgres" {
  name                  = "link-postgres"
  resource_group_name   = azurerm_resource_group.main.name
  private_dns_zone_name = azurerm_private_dns_zone.postgres.name
  virtual_network_id    = azurerm_virtual_network.main.id
  registration_enabled  = false
  tags                  = local.tags
}
