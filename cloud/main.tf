# `terraform init && terraform apply` here deploys Precise MRD on AWS (./aws).
# For GCP: cd gcp; for Azure: cd azure (README.md).

provider "aws" {
  region = var.region

  default_tags {
    tags = var.tags
  }
}

module "aws" {
  source = "./aws"

  name                                      = var.name
  image                                     = var.image
  lambda_image                              = var.lambda_image
  registry_credentials_secret_arn           = var.registry_credentials_secret_arn
  availability_zones                        = var.availability_zones
  vpc_cidr                                  = var.vpc_cidr
  single_nat_gateway                        = var.single_nat_gateway
  certificate_arn                           = var.certificate_arn
  deletion_protection                       = var.deletion_protection
  db_instance_class                         = var.db_instance_class
  db_allocated_storage                      = var.db_allocated_storage
  db_max_allocated_storage                  = var.db_max_allocated_storage
  db_multi_az                               = var.db_multi_az
  db_backup_retention_days                  = var.db_backup_retention_days
  db_performance_insights_enabled           = var.db_performance_insights_enabled
  redis_node_type                           = var.redis_node_type
  redis_num_cache_clusters                  = var.redis_num_cache_clusters
  noncurrent_version_retention_days         = var.noncurrent_version_retention_days
  log_retention_days                        = var.log_retention_days
  auth_mode                                 = var.auth_mode
  log_level                                 = var.log_level
  job_timeout_seconds                       = var.job_timeout_seconds
  api_cpu                                   = var.api_cpu
  api_memory                                = var.api_memory
  api_min_count                             = var.api_min_count
  api_max_count                             = var.api_max_count
  worker_cpu                                = var.worker_cpu
  worker_memory                             = var.worker_memory
  worker_concurrency                        = var.worker_concurrency
  worker_ephemeral_storage_gib              = var.worker_ephemeral_storage_gib
  worker_min_count                          = var.worker_min_count
  worker_max_count                          = var.worker_max_count
  worker_on_demand_base                     = var.worker_on_demand_base
  api_lambda_reserved_concurrency           = var.api_lambda_reserved_concurrency
  storage_event_lambda_reserved_concurrency = var.storage_event_lambda_reserved_concurrency
}
