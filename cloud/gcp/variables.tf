variable "project_id" {
  description = "Google Cloud project that receives every resource."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project ID (6-30 lowercase letters, digits, hyphens)."
  }
}

variable "region" {
  description = "Region for Cloud Run, Cloud SQL, Memorystore, Cloud Functions and the buckets (e.g. europe-west1)."
  type        = string
  default     = "europe-west1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must be a Google Cloud region name such as europe-west1."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name; short, lowercase (the VPC connector name allows 25 characters in all)."
  type        = string
  default     = "precise-mrd"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,14}$", var.name_prefix))
    error_message = "name_prefix must be 2-15 characters: a lowercase letter, then lowercase letters, digits or hyphens."
  }
}

variable "labels" {
  description = "Extra labels put on every resource that takes labels."
  type        = map(string)
  default     = {}
}

variable "image" {
  description = "The precise-mrd container image (Artifact Registry path, ideally pinned by digest) for the API, the worker and the migration job."
  type        = string

  validation {
    condition     = length(trimspace(var.image)) > 0
    error_message = "image must name a container image."
  }
}

variable "deletion_protection" {
  description = "Protect the Cloud SQL instance, the Cloud Run services and the job from `terraform destroy`; set false only for a throw-away environment."
  type        = bool
  default     = true
}

# --- network ------------------------------------------------------------------------------

variable "subnet_cidr" {
  description = "Primary range of the VPC subnet of the region."
  type        = string
  default     = "10.10.0.0/20"

  validation {
    condition     = can(cidrnetmask(var.subnet_cidr))
    error_message = "subnet_cidr must be an IPv4 CIDR block."
  }
}

variable "connector_cidr" {
  description = "The /28 range of the subnet used by the Serverless VPC Access connector (Cloud Run and Cloud Functions egress to Cloud SQL and Memorystore)."
  type        = string
  default     = "10.10.16.0/28"

  validation {
    condition     = can(cidrnetmask(var.connector_cidr)) && endswith(var.connector_cidr, "/28")
    error_message = "connector_cidr must be an IPv4 /28 block."
  }
}

variable "private_services_prefix_length" {
  description = "Prefix length of the range reserved for private services access (Cloud SQL private IP and Memorystore)."
  type        = number
  default     = 16

  validation {
    condition     = var.private_services_prefix_length >= 8 && var.private_services_prefix_length <= 24
    error_message = "private_services_prefix_length must be between 8 and 24."
  }
}

# --- Cloud SQL ----------------------------------------------------------------------------

variable "db_version" {
  description = "Cloud SQL PostgreSQL major version."
  type        = string
  default     = "POSTGRES_17"

  validation {
    condition     = contains(["POSTGRES_15", "POSTGRES_16", "POSTGRES_17", "POSTGRES_18"], var.db_version)
    error_message = "db_version must be one of POSTGRES_15, POSTGRES_16, POSTGRES_17, POSTGRES_18."
  }
}

variable "db_tier" {
  description = "Cloud SQL machine tier (db-custom-CPUS-MEMORY_MB or a shared-core tier)."
  type        = string
  default     = "db-custom-2-7680"
}

variable "db_availability_type" {
  description = "ZONAL, or REGIONAL for a standby in a second zone."
  type        = string
  default     = "REGIONAL"

  validation {
    condition     = contains(["ZONAL", "REGIONAL"], var.db_availability_type)
    error_message = "db_availability_type must be ZONAL or REGIONAL."
  }
}

variable "db_disk_size_gb" {
  description = "Initial SSD size of the Cloud SQL instance in GB (it grows automatically)."
  type        = number
  default     = 50

  validation {
    condition     = var.db_disk_size_gb >= 10
    error_message = "db_disk_size_gb must be at least 10."
  }
}

# --- Memorystore --------------------------------------------------------------------------

variable "redis_tier" {
  description = "Memorystore tier: BASIC (one node) or STANDARD_HA (replicated, automatic failover)."
  type        = string
  default     = "STANDARD_HA"

  validation {
    condition     = contains(["BASIC", "STANDARD_HA"], var.redis_tier)
    error_message = "redis_tier must be BASIC or STANDARD_HA."
  }
}

variable "redis_memory_size_gb" {
  description = "Memorystore capacity in GiB."
  type        = number
  default     = 1

  validation {
    condition     = var.redis_memory_size_gb >= 1 && var.redis_memory_size_gb <= 300
    error_message = "redis_memory_size_gb must be between 1 and 300."
  }
}

# --- storage ------------------------------------------------------------------------------

variable "storage_data_access_logs" {
  description = "Turn on Cloud Audit Logs data access logs (DATA_READ, DATA_WRITE) for Cloud Storage in the project, so every object read and write is recorded. Takes over the project's audit config for storage.googleapis.com."
  type        = bool
  default     = true
}

variable "kms_key_name" {
  description = "Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K) for the buckets' default encryption; null keeps Google-managed keys. The Cloud Storage service agent needs roles/cloudkms.cryptoKeyEncrypterDecrypter on it."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_name == null || can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", var.kms_key_name))
    error_message = "kms_key_name must be null or a full Cloud KMS crypto key name."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Days a replaced or deleted object version is kept before the lifecycle rule deletes it."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_retention_days >= 1
    error_message = "noncurrent_version_retention_days must be at least 1."
  }
}

# --- Cloud Run ----------------------------------------------------------------------------

variable "api_public" {
  description = "Let anyone invoke the API service and the API function (allUsers run.invoker); the application still authenticates every request (PRECISE_MRD_AUTH_MODE=both). False keeps them IAM-only."
  type        = bool
  default     = true
}

variable "api_min_instances" {
  description = "Minimum instances of the API service."
  type        = number
  default     = 1

  validation {
    condition     = var.api_min_instances >= 0
    error_message = "api_min_instances must be 0 or more."
  }
}

variable "api_max_instances" {
  description = "Maximum instances of the API service."
  type        = number
  default     = 10

  validation {
    condition     = var.api_max_instances >= 1
    error_message = "api_max_instances must be at least 1."
  }
}

variable "api_cpu" {
  description = "vCPUs of one API instance (Cloud Run limit)."
  type        = string
  default     = "2"
}

variable "api_memory" {
  description = "Memory of one API instance (Cloud Run limit, e.g. 4Gi)."
  type        = string
  default     = "4Gi"
}

variable "worker_min_instances" {
  description = "Minimum (always-on) instances of the Celery worker service; at least 1, since a worker takes work from the queue rather than from requests."
  type        = number
  default     = 1

  validation {
    condition     = var.worker_min_instances >= 1
    error_message = "worker_min_instances must be at least 1: nothing sends requests to a worker to start it."
  }
}

variable "worker_max_instances" {
  description = "Maximum instances of the Celery worker service."
  type        = number
  default     = 4

  validation {
    condition     = var.worker_max_instances >= 1
    error_message = "worker_max_instances must be at least 1."
  }
}

variable "worker_cpu" {
  description = "vCPUs of one worker instance (Cloud Run limit)."
  type        = string
  default     = "4"
}

variable "worker_memory" {
  description = "Memory of one worker instance (Cloud Run limit, e.g. 16Gi)."
  type        = string
  default     = "16Gi"
}

variable "data_volume_size" {
  description = "Size limit of the in-memory /data volume of each Cloud Run container (counts against its memory)."
  type        = string
  default     = "1Gi"
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

# --- Cloud Functions ----------------------------------------------------------------------

variable "function_max_instances" {
  description = "Maximum instances of each Cloud Function."
  type        = number
  default     = 10

  validation {
    condition     = var.function_max_instances >= 1
    error_message = "function_max_instances must be at least 1."
  }
}
