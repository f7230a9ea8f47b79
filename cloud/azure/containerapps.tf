# Container Apps: the API (external ingress, probes on /health/*), the Celery worker (no
# ingress, KEDA redis rule on the precise-mrd list in db 0) and the migration job, started by
# hand before each rollout (README). Secrets are Key Vault references read with the apps'
# user-assigned identity.

resource "azurerm_container_app_environment" "main" {
  name                               = "cae-${var.name_prefix}"
  location                           = azurerm_resource_group.main.location
  resource_group_name                = azurerm_resource_group.main.name
  log_analytics_workspace_id         = azurerm_log_analytics_workspace.main.id
  infrastructure_subnet_id           = azurerm_subnet.main["apps"].id
  infrastructure_resource_group_name = "rg-${var.name_prefix}-apps-infra"
  internal_load_balancer_enabled     = false
  tags                               = local.tags

  workload_profile {
    name                  = "Consumption"
    workload_profile_type = "Consumption"
  }

  depends_on = [azurerm_subnet_network_security_group_association.main]
}

resource "azurerm_container_app" "api" {
  name                         = "ca-${var.name_prefix}-api"
  container_app_environment_id = azurerm_container_app_environment.main.id
  resource_group_name          = azurerm_resource_group.main.name
  revision_mode                = "Single"
  workload_profile_name        = "Consumption"
  tags                         = local.tags

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.app.id]
  }

  dynamic "registry" {
    for_each = var.registry_server == null ? [] : [var.registry_server]
    content {
      server   = registry.value
      identity = azurerm_user_assigned_identity.app.id
    }
  }

  dynamic "secret" {
    for_each = local.secret_env
    content {
      name                = secret.key
      key_vault_secret_id = local.secret_ids[secret.key]
      identity            = azurerm_user_assigned_identity.app.id
    }
  }

  ingress {
    external_enabled           = true
    target_port                = local.api_port
    transport                  = "auto"
    allow_insecure_connections = false

    traffic_weight {
      latest_revision = true
      percentage      = 100
    }
  }

  template {
    min_replicas = var.api_min_replicas
    max_replicas = var.api_max_replicas

    container {
      name    = "api"
      image   = var.image
      cpu     = var.api_cpu
      memory  = var.api_memory
      command = local.api_command

      dynamic "env" {
        for_each = local.api_env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = local.secret_env
        content {
          name        = env.value
          secret_name = env.key
        }
      }

      volume_mounts {
        name = "data"
        path = "/data"
      }

      startup_probe {
        transport               = "HTTP"
        port                    = local.api_port
        path                    = "/health/ready"
        interval_seconds        = 10
        timeout                 = 5
        failure_count_threshold = 10
      }

      readiness_probe {
        transport               = "HTTP"
        port                    = local.api_port
        path                    = "/health/ready"
        interval_seconds        = 10
        timeout                 = 5
        failure_count_threshold = 3
      }

      liveness_probe {
        transport               = "HTTP"
        port                    = local.api_port
        path                    = "/health/live"
        interval_seconds        = 30
        timeout                 = 5
        failure_count_threshold = 3
      }
    }

    volume {
      name         = "data"
      storage_type = "EmptyDir"
    }

    http_scale_rule {
      name                = "http-concurrency"
      concurrent_requests = "40"
    }
  }

  # secrets come from the vault, and Redis and blobs are reached, through the private endpoints
  depends_on = [
    azurerm_role_assignment.secrets_user,
    azurerm_role_assignment.app_acr_pull,
    azurerm_private_endpoint.main,
    azurerm_private_dns_zone_virtual_network_link.main,
  ]
}

resource "azurerm_container_app" "worker" {
  name                         = "ca-${var.name_prefix}-worker"
  container_app_environment_id = azurerm_container_app_environment.main.id
  resource_group_name          = azurerm_resource_group.main.name
  revision_mode                = "Single"
  workload_profile_name        = "Consumption"
  tags                         = local.tags

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.app.id]
  }

  dynamic "registry" {
    for_each = var.registry_server == null ? [] : [var.registry_server]
    content {
      server   = registry.value
      identity = azurerm_user_assigned_identity.app.id
    }
  }

  dynamic "secret" {
    for_each = local.secret_ids
    content {
      name                = secret.key
      key_vault_secret_id = secret.value
      identity            = azurerm_user_assigned_identity.app.id
    }
  }

  # no ingress block: the worker takes its work from the queue

  template {
    min_replicas = var.worker_min_replicas
    max_replicas = var.worker_max_replicas

    container {
      name    = "worker"
      image   = var.image
      cpu     = var.worker_cpu
      memory  = var.worker_memory
      command = local.worker_command

      dynamic "env" {
        for_each = local.container_env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = local.secret_env
        content {
          name        = env.value
          secret_name = env.key
        }
      }

      volume_mounts {
        name = "data"
        path = "/data"
      }
    }

    volume {
      name         = "data"
      storage_type = "EmptyDir"
    }

    # KEDA: one more replica per 2 jobs waiting in the Celery list (db 0, TLS port)
    custom_scale_rule {
      name             = "celery-queue"
      custom_rule_type = "redis"
      metadata = {
        address       = "${azurerm_redis_cache.main.hostname}:${azurerm_redis_cache.main.ssl_port}"
        listName      = local.celery_queue
        listLength    = "2"
        databaseIndex = "0"
        enableTLS     = "true"
      }

      authentication {
        secret_name       = local.keda_secret
        trigger_parameter = "password"
      }
    }
  }

  # secrets come from the vault, and Redis and blobs are reached, through the private endpoints
  depends_on = [
    azurerm_role_assignment.secrets_user,
    azurerm_role_assignment.app_acr_pull,
    azurerm_private_endpoint.main,
    azurerm_private_dns_zone_virtual_network_link.main,
  ]
}

# `az containerapp job start --name <job> --resource-group <rg>` before each rollout (README)
resource "azurerm_container_app_job" "migrate" {
  name                         = "caj-${var.name_prefix}-migrate"
  location                     = azurerm_resource_group.main.location
  resource_group_name          = azurerm_resource_group.main.name
  container_app_environment_id = azurerm_container_app_environment.main.id
  workload_profile_name        = "Consumption"
  replica_timeout_in_seconds   = 1800
  replica_retry_limit          = 1
  tags                         = local.tags

  manual_trigger_config {
    parallelism              = 1
    replica_completion_count = 1
  }

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.app.id]
  }

  dynamic "registry" {
    for_each = var.registry_server == null ? [] : [var.registry_server]
    content {
      server   = registry.value
      identity = azurerm_user_assigned_identity.app.id
    }
  }

  dynamic "secret" {
    for_each = local.secret_env
    content {
      name                = secret.key
      key_vault_secret_id = local.secret_ids[secret.key]
      identity            = azurerm_user_assigned_identity.app.id
    }
  }

  template {
    container {
      name    = "migrate"
      image   = var.image
      cpu     = 1
      memory  = "2Gi"
      command = local.migrate_command

      dynamic "env" {
        for_each = local.container_env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = local.secret_env
        content {
          name        = env.value
          secret_name = env.key
        }
      }

      volume_mounts {
        name = "data"
        path = "/data"
      }
    }

    volume {
      name         = "data"
      storage_type = "EmptyDir"
    }
  }

  # secrets come from the vault, and Redis and blobs are reached, through the private endpoints
  depends_on = [
    azurerm_role_assignment.secrets_user,
    azurerm_role_assignment.app_acr_pull,
    azurerm_private_endpoint.main,
    azurerm_private_dns_zone_virtual_network_link.main,
  ]
}
