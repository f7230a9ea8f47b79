# Azure Cache for Redis behind a private endpoint, TLS only (port 6380). Its access key is the
# password inside PRECISE_MRD_BROKER_URL / PRECISE_MRD_REDIS_URL: the operator copies it into
# Key Vault (README step 2); nothing in this module passes it on.

resource "azurerm_redis_cache" "main" {
  name                          = "redis-${local.base}"
  location                      = azurerm_resource_group.main.location
  resource_group_name           = azurerm_resource_group.main.name
  sku_name                      = var.redis_sku
  family                        = var.redis_sku == "Premium" ? "P" : "C"
  capacity                      = var.redis_capacity
  redis_version                 = "6"
  non_ssl_port_enabled          = false
  minimum_tls_version           = "1.2"
  public_network_access_enabled = false
  tags                          = local.tags

  redis_configuration {
    # a broker must never lose queued jobs to eviction
    maxmemory_policy = "noeviction"
  }
}
