# The root module deploys the AWS stack (./aws); these variables are passed through to it.
# GCP and Azure have their own root modules: cloud/gcp and cloud/azure (README.md).

variable "region" {
  description = "AWS region of the deployment, e.g. eu-west-1."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region: an AWS region name such as eu-west-1."
  }
}

variable "tags" {
  description = "Tags applied to every resource (provider default_tags)."
  type        = map(string)
  default = {
    Application = "precise-mrd"
    ManagedBy   = "terraform"
  }
}

# --- naming, image -----------------------------------------------------------------------

variable "name" {
  description = "Prefix of every resource name (lower case, 2-20 characters: ALB and target group names are limited to 32)."
  type        = string
  default     = "precise-mrd"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,19}$", var.name))
    error_message = "name: 2-20 characters, lower-case letters, digits and '-', starting with a letter."
  }
}

variable "image" {
  description = "The container image of the API, the workers and the migration, pinned by tag or digest, e.g. ghcr.io/acme/precise-mrd-api:<git sha>."
  type        = string

  validation {
    condition     = can(regex("^[^\\s]+(:[A-Za-z0-9_.-]+|@sha256:[0-9a-f]{64})$", var.image)) && !endswith(var.image, ":latest")
    error_message = "image: a reference with an explicit tag (not :latest) or a sha256 digest."
  }
}

variable "lambda_image" {
  description = "The same image in Amazon ECR, for the Lambda functions (Lambda pulls from ECR only). Null: var.image, which must then be an ECR URI."
  type        = string
  default     = null

  validation {
    condition     = var.lambda_image == null || can(regex("^[0-9]{12}\\.dkr\\.ecr\\.[a-z0-9-]+\\.amazonaws\\.com(\\.cn)?/[^\\s]+(:[A-Za-z0-9_.-]+|@sha256:[0-9a-f]{64})$", var.lambda_image))
    error_message = "lambda_image: an ECR image URI with a tag or a digest (<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>)."
  }
}

variable "registry_credentials_secret_arn" {
  description = "Secrets Manager secret ({\"username\",\"password\"}) for a private non-ECR registry such as ghcr.io; null when the image is public or in ECR."
  type        = string
  default     = null

  validation {
    condition     = var.registry_credentials_secret_arn == null || can(regex("^arn:aws[a-z-]*:secretsmanager:", var.registry_credentials_secret_arn))
    error_message = "registry_credentials_secret_arn: a Secrets Manager secret ARN, or null."
  }
}

# --- network, entry ----------------------------------------------------------------------

variable "vpc_cidr" {
  description = "CIDR block of the VPC (/16 to /20); the four subnets are /4 subdivisions of it."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr)) && tonumber(split("/", var.vpc_cidr)[1]) >= 16 && tonumber(split("/", var.vpc_cidr)[1]) <= 20
    error_message = "vpc_cidr: an IPv4 CIDR block from /16 to /20."
  }
}

variable "availability_zones" {
  description = "The two availability zones of the subnets, RDS and Redis, e.g. [\"eu-west-1a\", \"eu-west-1b\"]."
  type        = list(string)

  validation {
    condition     = length(var.availability_zones) == 2 && length(distinct(var.availability_zones)) == 2
    error_message = "availability_zones: exactly two distinct zone names."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for both AZs (cheaper; egress depends on one AZ) instead of one per AZ."
  type        = bool
  default     = false
}

variable "certificate_arn" {
  description = "ARN of the ACM certificate of the API's domain, for the ALB's HTTPS listener (same region)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/", var.certificate_arn))
    error_message = "certificate_arn: an ACM certificate ARN."
  }
}

variable "deletion_protection" {
  description = "Deletion protection of the RDS instance and of the ALB (set false only to tear a test stack down)."
  type        = bool
  default     = true
}

# --- database ----------------------------------------------------------------------------

variable "db_instance_class" {
  description = "RDS instance class of the PostgreSQL database."
  type        = string
  default     = "db.t4g.medium"

  validation {
    condition     = startswith(var.db_instance_class, "db.")
    error_message = "db_instance_class: an RDS instance class such as db.t4g.medium."
  }
}

variable "db_allocated_storage" {
  description = "Initial storage of the database, GiB (gp3)."
  type        = number
  default     = 50

  validation {
    condition     = var.db_allocated_storage >= 20 && var.db_allocated_storage <= 65536
    error_message = "db_allocated_storage: 20 to 65536 GiB."
  }
}

variable "db_max_allocated_storage" {
  description = "Upper bound of storage autoscaling, GiB (0 disables autoscaling)."
  type        = number
  default     = 500

  validation {
    condition     = var.db_max_allocated_storage == 0 || (var.db_max_allocated_storage >= 20 && var.db_max_allocated_storage <= 65536)
    error_message = "db_max_allocated_storage: 0, or 20 to 65536 GiB."
  }
}

variable "db_multi_az" {
  description = "A synchronous standby in the second AZ (doubles the instance cost)."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "Days of automated RDS backups (point-in-time recovery window)."
  type        = number
  default     = 14

  validation {
    condition     = var.db_backup_retention_days >= 1 && var.db_backup_retention_days <= 35
    error_message = "db_backup_retention_days: 1 to 35."
  }
}

variable "db_performance_insights_enabled" {
  description = "RDS Performance Insights (7 days, free tier), encrypted with the module's key."
  type        = bool
  default     = true
}

# --- Redis -------------------------------------------------------------------------------

variable "redis_node_type" {
  description = "ElastiCache node type of the Redis broker and cache."
  type        = string
  default     = "cache.t4g.small"

  validation {
    condition     = startswith(var.redis_node_type, "cache.")
    error_message = "redis_node_type: an ElastiCache node type such as cache.t4g.small."
  }
}

variable "redis_num_cache_clusters" {
  description = "Redis nodes (a primary and replicas), at least 2 for automatic failover across the AZs."
  type        = number
  default     = 2

  validation {
    condition     = var.redis_num_cache_clusters >= 2 && var.redis_num_cache_clusters <= 6
    error_message = "redis_num_cache_clusters: 2 to 6."
  }
}

# --- storage, logs -----------------------------------------------------------------------

variable "noncurrent_version_retention_days" {
  description = "Days a replaced or deleted object version of the data bucket is kept."
  type        = number
  default     = 90

  validation {
    condition     = var.noncurrent_version_retention_days >= 1
    error_message = "noncurrent_version_retention_days: at least 1."
  }
}

variable "log_retention_days" {
  description = "Retention of the CloudWatch log groups and of the access logs, days."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days: one of the values CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ..., 365, ..., 3653)."
  }
}

# --- the application ---------------------------------------------------------------------

variable "auth_mode" {
  description = "PRECISE_MRD_AUTH_MODE: how the API authenticates (api_key, jwt or both; none is refused on a public deployment)."
  type        = string
  default     = "both"

  validation {
    condition     = contains(["api_key", "jwt", "both"], var.auth_mode)
    error_message = "auth_mode: api_key, jwt or both."
  }
}

variable "log_level" {
  description = "PRECISE_MRD_LOG_LEVEL of every process."
  type        = string
  default     = "info"

  validation {
    condition     = contains(["debug", "info", "warning", "error", "critical"], var.log_level)
    error_message = "log_level: debug, info, warning, error or critical."
  }
}

variable "job_timeout_seconds" {
  description = "JOB_TIMEOUT_SECONDS: a job running longer is killed."
  type        = number
  default     = 3600

  validation {
    condition     = var.job_timeout_seconds > 0
    error_message = "job_timeout_seconds: positive."
  }
}

# --- ECS: the API ------------------------------------------------------------------------

variable "api_cpu" {
  description = "CPU units of an API task (1024 = 1 vCPU; a Fargate size)."
  type        = number
  default     = 1024

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.api_cpu)
    error_message = "api_cpu: a Fargate CPU size (256 ... 16384)."
  }
}

variable "api_memory" {
  description = "Memory of an API task, MiB (a valid Fargate combination with api_cpu)."
  type        = number
  default     = 2048

  validation {
    condition     = var.api_memory >= 512 && var.api_memory <= 122880 && var.api_memory % 512 == 0
    error_message = "api_memory: 512 to 122880 MiB, a multiple of 512."
  }
}

variable "api_min_count" {
  description = "Minimum number of API tasks (autoscaling on CPU and memory)."
  type        = number
  default     = 1

  validation {
    condition     = var.api_min_count >= 1
    error_message = "api_min_count: at least 1."
  }
}

variable "api_max_count" {
  description = "Maximum number of API tasks."
  type        = number
  default     = 10

  validation {
    condition     = var.api_max_count >= 1 && var.api_max_count <= 100
    error_message = "api_max_count: 1 to 100 (and not below api_min_count)."
  }
}

# --- ECS: the workers --------------------------------------------------------------------

variable "worker_cpu" {
  description = "CPU units of a worker task (a Fargate size)."
  type        = number
  default     = 2048

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.worker_cpu)
    error_message = "worker_cpu: a Fargate CPU size (256 ... 16384)."
  }
}

variable "worker_memory" {
  description = "Memory of a worker task, MiB (a valid Fargate combination with worker_cpu)."
  type        = number
  default     = 4096

  validation {
    condition     = var.worker_memory >= 512 && var.worker_memory <= 122880 && var.worker_memory % 512 == 0
    error_message = "worker_memory: 512 to 122880 MiB, a multiple of 512."
  }
}

variable "worker_concurrency" {
  description = "Jobs one worker task runs at once (Celery --concurrency and MAX_CONCURRENT_JOBS)."
  type        = number
  default     = 2

  validation {
    condition     = var.worker_concurrency >= 1 && var.worker_concurrency <= 64 && floor(var.worker_concurrency) == var.worker_concurrency
    error_message = "worker_concurrency: an integer from 1 to 64."
  }
}

variable "worker_ephemeral_storage_gib" {
  description = "Fargate ephemeral storage of a worker task (its /data and /tmp), GiB."
  type        = number
  default     = 100

  validation {
    condition     = var.worker_ephemeral_storage_gib >= 21 && var.worker_ephemeral_storage_gib <= 200
    error_message = "worker_ephemeral_storage_gib: 21 to 200."
  }
}

variable "worker_min_count" {
  description = "Minimum number of worker tasks (autoscaling on CPU)."
  type        = number
  default     = 1

  validation {
    condition     = var.worker_min_count >= 0
    error_message = "worker_min_count: 0 or more."
  }
}

variable "worker_max_count" {
  description = "Maximum number of worker tasks."
  type        = number
  default     = 10

  validation {
    condition     = var.worker_max_count >= 1 && var.worker_max_count <= 200
    error_message = "worker_max_count: 1 to 200 (and not below worker_min_count)."
  }
}

variable "worker_on_demand_base" {
  description = "Worker tasks always on regular (on-demand) Fargate; the others run 4:1 on Fargate Spot."
  type        = number
  default     = 1

  validation {
    condition     = contains([0, 1], var.worker_on_demand_base)
    error_message = "worker_on_demand_base: 0 or 1."
  }
}

# --- Lambda ------------------------------------------------------------------------------

variable "api_lambda_reserved_concurrency" {
  description = "Reserved concurrency of the API Lambda (bounds its database connections); -1 for none."
  type        = number
  default     = 20

  validation {
    condition     = var.api_lambda_reserved_concurrency >= -1
    error_message = "api_lambda_reserved_concurrency: -1 or more."
  }
}

variable "storage_event_lambda_reserved_concurrency" {
  description = "Reserved concurrency of the storage-event Lambda: samples processed at once; -1 for none."
  type        = number
  default     = 10

  validation {
    condition     = var.storage_event_lambda_reserved_concurrency >= -1
    error_message = "storage_event_lambda_reserved_concurrency: -1 or more."
  }
}
