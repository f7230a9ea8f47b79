variable "subscription_id" {
  description = "Azure subscription that receives every resource."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", var.subscription_id))
    error_message = "subscription_id must be a subscription GUID."
  }
}

variable "location" {
  description = "Azure region (e.g. westeurope); it should offer availability zones for the zone-redundant defaults."
  type        = string
  default     = "westeurope"
}

variable "name_prefix" {
  description = "Short lowercase prefix of every resource name (letters and digits only: it is part of storage account names)."
  type        = string
  default     = "pmrd"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,9}$", var.name_prefix))
    error_message = "name_prefix must be 2-10 characters: a lowercase letter, then lowercase letters or digits."
  }
}

variable "unique_suffix" {
  description = "4-6 lowercase letters or digits appended to globally unique names (storage accounts, Key Vault, Redis, PostgreSQL, the function app)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]{4,6}$", var.unique_suffix))
    error_message = "unique_suffix must be 4-6 lowercase letters or digits."
  }
}

variable "tags" {
  description = "Extra tags put on every resource that takes tags."
  type        = map(string)
  default     = {}
}

variable "image" {
  description = "The precise-mrd container image (registry/repository:tag or @digest) for the API, the worker and the migration job."
  type        = string

  validation {
    condition     = length(trimspace(var.image)) > 0
    error_message = "image must name a container image."
  }
}

variable "registry_server" {
  description = "Login server of a private registry holding the image (e.g. myacr.azurecr.io), pulled with the apps' managed identity; null for a public image."
  type        = string
  default     = null
}

variable "acr_id" {
  description = "Resource ID of an Azure Container Registry on which the apps' identity gets AcrPull; null when the registry is not an ACR in reach or the role is granted elsewhere."
  type        = string
  default     = null

  validation {
    condition     = var.acr_id == null || can(regex("(?i)^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\\.ContainerRegistry/registries/[^/]+$", var.acr_id))
    error_message = "acr_id must be null or the resource ID of a container registry."
  }
}

variable "operator_ip_ranges" {
  description = "Public IPv4 addresses or CIDR ranges of the operators, let through the Key Vault and storage firewalls (to set secret values and upload the function package). Workloads use private endpoints."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for range in var.operator_ip_ranges : can(cidrhost(strcontains(range, "/") ? range : "${range}/32", 0))])
    error_message = "operator_ip_ranges must hold IPv4 addresses or CIDR ranges."
  }
}

# --- network ------------------------------------------------------------------------------

variable "vnet_address_space" {
  description = "Address space of the virtual network (a /16 is carved into the Container Apps, PostgreSQL, Functions and private-endpoint subnets)."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.vnet_address_space)) && tonumber(split("/", var.vnet_address_space)[1]) <= 16
    error_message = "vnet_address_space must be an IPv4 CIDR block of /16 or larger."
  }
}

# --- PostgreSQL ---------------------------------------------------------------------------

variable "db_admin_password" {
  description = "Password of the PostgreSQL administrator (the application's user). Ephemeral: sent through a write-only argument, never stored in plan or state. Give it as TF_VAR_db_admin_password, read from the Key Vault secret database-password (README)."
  type        = string
  sensitive   = true
  ephemeral   = true

  validation {
    condition     = length(var.db_admin_password) >= 16
    error_message = "db_admin_password must have at least 16 characters."
  }
}

variable "db_admin_password_version" {
  description = "Increase by one to send a new db_admin_password to the server (write-only arguments are applied only when their version changes)."
  type        = number
  default     = 1

  validation {
    condition     = var.db_admin_password_version >= 1 && floor(var.db_admin_password_version) == var.db_admin_password_version
    error_message = "db_admin_password_version must be a positive integer."
  }
}

variable "db_version" {
  description = "PostgreSQL major version of the flexible server."
  type        = string
  default     = "16"

  validation {
    condition     = contains(["14", "15", "16", "17"], var.db_version)
    error_message = "db_version must be 14, 15, 16 or 17."
  }
}

variable "db_sku" {
  description = "SKU of the flexible server (GP_* or MO_* for high availability; B_* burstable has none)."
  type        = string
  default     = "GP_Standard_D2ds_v5"

  validation {
    condition     = can(regex("^(B|GP|MO)_", var.db_sku))
    error_message = "db_sku must be a B_, GP_ or MO_ flexible server SKU."
  }
}

variable "db_storage_mb" {
  description = "Storage of the flexible server in MB (it grows automatically)."
  type        = number
  default     = 65536

  validation {
    condition     = contains([32768, 65536, 131072, 262144, 524288, 1048576, 2097152, 4193280, 4194304, 8388608, 16777216, 33553408], var.db_storage_mb)
    error_message = "db_storage_mb must be one of the flexible server storage sizes (32768, 65536, 131072, ...)."
  }
}

variable "db_high_availability_mode" {
  description = "Standby of the flexible server: ZoneRedundant, SameZone, or Disabled."
  type        = string
  default     = "ZoneRedundant"

  validation {
    condition     = contains(["ZoneRedundant", "SameZone", "Disabled"], var.db_high_availability_mode)
    error_message = "db_high_availability_mode must be ZoneRedundant, SameZone or Disabled."
  }
}

variable "db_geo_redundant_backup" {
  description = "Keep the flexible server's backups in the paired region too."
  type        = bool
  default     = true
}

# --- Redis --------------------------------------------------------------------------------

variable "redis_sku" {
  description = "Azure Cache for Redis SKU: Standard (replicated) or Premium."
  type        = string
  default     = "Standard"

  validation {
    condition     = contains(["Standard", "Premium"], var.redis_sku)
    error_message = "redis_sku must be Standard or Premium."
  }
}

variable "redis_capacity" {
  description = "Cache size within the SKU family (C0-C6 for Standard, P1-P5 for Premium)."
  type        = number
  default     = 1

  validation {
    condition     = var.redis_capacity >= 0 && var.redis_capacity <= 6
    error_message = "redis_capacity must be between 0 and 6."
  }
}

# --- Container Apps -----------------------------------------------------------------------

variable "api_min_replicas" {
  description = "Minimum replicas of the API container app."
  type        = number
  default     = 1

  validation {
    condition     = var.api_min_replicas >= 0 && var.api_min_replicas <= 30
    error_message = "api_min_replicas must be between 0 and 30."
  }
}

variable "api_max_replicas" {
  description = "Maximum replicas of the API container app."
  type        = number
  default     = 10

  validation {
    condition     = var.api_max_replicas >= 1 && var.api_max_replicas <= 300
    error_message = "api_max_replicas must be between 1 and 300."
  }
}

variable "api_cpu" {
  description = "vCPUs of one API replica (Consumption profile: 0.25-4 in steps of 0.25, memory 2 GiB per vCPU)."
  type        = number
  default     = 1
}

variable "api_memory" {
  description = "Memory of one API replica, matching api_cpu (e.g. 2Gi for 1 vCPU)."
  type        = string
  default     = "2Gi"
}

variable "worker_min_replicas" {
  description = "Minimum replicas of the worker; 1 keeps a worker up between bursts (scaling to 0 on an empty queue would also stop jobs that are running)."
  type        = number
  default     = 1

  validation {
    condition     = var.worker_min_replicas >= 0 && var.worker_min_replicas <= 30
    error_message = "worker_min_replicas must be between 0 and 30."
  }
}

variable "worker_max_replicas" {
  description = "Maximum replicas of the worker (KEDA adds one per 2 queued jobs)."
  type        = number
  default     = 5

  validation {
    condition     = var.worker_max_replicas >= 1 && var.worker_max_replicas <= 300
    error_message = "worker_max_replicas must be between 1 and 300."
  }
}

variable "worker_cpu" {
  description = "vCPUs of one worker replica (Consumption profile: at most 4)."
  type        = number
  default     = 4
}

variable "worker_memory" {
  description = "Memory of one worker replica, matching worker_cpu (e.g. 8Gi for 4 vCPUs)."
  type        = string
  default     = "8Gi"
}

# --- Functions ----------------------------------------------------------------------------

variable "functions_max_instances" {
  description = "Maximum elastic instances of the Functions Premium plan."
  type        = number
  default     = 5

  validation {
    condition     = var.functions_max_instances >= 1 && var.functions_max_instances <= 100
    error_message = "functions_max_instances must be between 1 and 100."
  }
}

variable "functions_zone_redundant" {
  description = "Spread the Functions Premium plan over availability zones (3 always-ready instances); false keeps 1."
  type        = bool
  default     = true
}

variable "storage_replication_type" {
  description = "Replication of both storage accounts (GZRS: three zones plus the paired region)."
  type        = string
  default     = "GZRS"

  validation {
    condition     = contains(["LRS", "ZRS", "GRS", "RAGRS", "GZRS", "RAGZRS"], var.storage_replication_type)
    error_message = "storage_replication_type must be LRS, ZRS, GRS, RAGRS, GZRS or RAGZRS."
  }
}

variable "blob_event_subscription_enabled" {
  description = "Create the Event Grid subscription that sends BlobCreated events for incoming/**/manifest.json to the on_blob_created function. Event Grid checks that the function exists, so turn it on once the function package is published (README step 5)."
  type        = bool
  default     = false
}

# --- application settings -----------------------------------------------------------------

variable "log_level" {
  description = "PRECISE_MRD_LOG_LEVEL of every component."
  type        = string
  default     = "info"

  validation {
    condition     = contains(["debug", "info", "warning", "error", "critical"], var.log_level)
    error_message = "log_level must be debug, info, warning, error or critical."
  }
}

variable "max_concurrent_jobs" {
  description = "MAX_CONCURRENT_JOBS of the API and the functions."
  type        = number
  default     = 2

  validation {
    condition     = var.max_concurrent_jobs >= 1 && var.max_concurrent_jobs <= 256
    error_message = "max_concurrent_jobs must be between 1 and 256."
  }
}

variable "job_timeout_seconds" {
  description = "JOB_TIMEOUT_SECONDS: a job running longer is stopped."
  type        = number
  default     = 3600

  validation {
    condition     = var.job_timeout_seconds > 0
    error_message = "job_timeout_seconds must be positive."
  }
}

variable "log_retention_days" {
  description = "Retention of the Log Analytics workspace (Container Apps logs, Application Insights data)."
  type        = number
  default     = 90

  validation {
    condition     = var.log_retention_days >= 30 && var.log_retention_days <= 730
    error_message = "log_retention_days must be between 30 and 730."
  }
}

variable "blob_soft_delete_days" {
  description = "Days deleted blobs, versions and containers stay recoverable; old versions are deleted after the same number of days."
  type        = number
  default     = 30

  validation {
    condition     = var.blob_soft_delete_days >= 7 && var.blob_soft_delete_days <= 365
    error_message = "blob_soft_delete_days must be between 7 and 365."
  }
}
