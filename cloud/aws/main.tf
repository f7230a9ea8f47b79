# Shared lookups and the names and settings every other file of the module uses.

data "aws_region" "current" {}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

# NB: the two AZs are named by the operator, not "the first two available": an AZ that is
# impaired (or a new one) must never shift the subnets, RDS or Redis to other zones
data "aws_availability_zones" "selected" {
  filter {
    name   = "zone-name"
    values = var.availability_zones
  }

  lifecycle {
    postcondition {
      condition     = length(self.names) == 2
      error_message = "availability_zones: both zones must exist in the region (aws ec2 describe-availability-zones)."
    }
  }
}

locals {
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  # NB: two AZs: the ALB, RDS Multi-AZ and the Redis failover all need two
  azs = data.aws_availability_zones.selected.names

  artifacts_prefix = "artifacts"
  incoming_prefix  = "incoming"
  celery_queue     = "precise-mrd"
  api_port         = 8000

  db_name     = "precise_mrd"
  db_username = "precise_mrd"

  # Lambda pulls images from Amazon ECR only; the ECS tasks may pull from any registry
  lambda_image = coalesce(var.lambda_image, var.image)

  # The ECR repository of the ECS image (none when it comes from e.g. ghcr.io): the task
  # execution role may pull from exactly this one. Lambda pulls with the deployer's rights.
  ecr_pattern = "^([0-9]{12})\\.dkr\\.ecr\\.([a-z0-9-]+)\\.amazonaws\\.com(?:\\.cn)?/([^:@]+)"
  ecs_ecr_repository_arns = [
    for m in regexall(local.ecr_pattern, var.image) :
    "arn:${local.partition}:ecr:${m[1]}:${m[0]}:repository/${m[2]}"
  ]

  # The RDS-managed master secret (JSON with "username" and "password") and the JWT secret,
  # which Terraform creates empty: the operator puts its value (README)
  db_secret_arn  = aws_db_instance.main.master_user_secret[0].secret_arn
  jwt_secret_arn = aws_secretsmanager_secret.jwt.arn

  database_url = format("postgresql+psycopg://%s@%s:%d/%s", local.db_username,
  aws_db_instance.main.address, aws_db_instance.main.port, local.db_name)
  redis_host = aws_elasticache_replication_group.main.primary_endpoint_address
  broker_url = "rediss://${local.redis_host}:6379/0?ssl_cert_reqs=required"
  cache_url  = "rediss://${local.redis_host}:6379/1?ssl_cert_reqs=required"

  storage_url = "s3://${aws_s3_bucket.data.bucket}/${local.artifacts_prefix}"

  # The settings the API, the workers and the Lambda functions share (docs/deployment.md)
  common_env = {
    PRECISE_MRD_DATABASE_URL          = local.database_url
    PRECISE_MRD_EXECUTOR              = "celery"
    PRECISE_MRD_BROKER_URL            = local.broker_url
    PRECISE_MRD_REDIS_URL             = local.cache_url
    PRECISE_MRD_CELERY_QUEUE          = local.celery_queue
    PRECISE_MRD_STORAGE_URL           = local.storage_url
    PRECISE_MRD_AUTH_MODE             = var.auth_mode
    PRECISE_MRD_LOG_LEVEL             = var.log_level
    MAX_CONCURRENT_JOBS               = tostring(var.worker_concurrency)
    JOB_TIMEOUT_SECONDS               = tostring(var.job_timeout_seconds)
    NUMBA_CACHE_DIR                   = "/opt/numba-cache"
    PRECISE_MRD_WARM_KERNELS_ON_START = "false"
    PRECISE_MRD_PUBLIC_METRICS        = "true"
  }

  # ECS: AWS_REGION set explicitly, /data a writable ephemeral volume (read-only root FS)
  ecs_env = merge(local.common_env, {
    AWS_REGION           = local.region
    PRECISE_MRD_DATA_DIR = "/data"
  })

  # ECS injects the secrets itself (task definition "secrets", read by the execution role);
  # the JWT secret only into the API, the one process that verifies tokens
  ecs_db_secret  = { name = "PRECISE_MRD_DATABASE_PASSWORD", valueFrom = "${local.db_secret_arn}:password::" }
  ecs_jwt_secret = { name = "PRECISE_MRD_JWT_SECRET", valueFrom = local.jwt_secret_arn }

  # Lambda: AWS_REGION is reserved (Lambda sets it), /tmp is the only writable path, and the
  # app resolves every <VAR>_SECRET_ARN into <VAR> at cold start
  lambda_env = merge(local.common_env, {
    PRECISE_MRD_DATA_DIR                     = "/tmp/precise-mrd"
    PRECISE_MRD_DATABASE_PASSWORD_SECRET_ARN = "${local.db_secret_arn}:password::"
    PRECISE_MRD_JWT_SECRET_SECRET_ARN        = local.jwt_secret_arn
  })
}
