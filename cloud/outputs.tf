output "vpc_id" {
  description = "ID of the VPC."
  value       = module.aws.vpc_id
}

output "private_subnet_ids" {
  description = "The private subnets (tasks, Lambda, RDS, Redis)."
  value       = module.aws.private_subnet_ids
}

output "alb_dns_name" {
  description = "DNS name of the ALB: point the certificate's domain at it (CNAME or alias)."
  value       = module.aws.alb_dns_name
}

output "alb_zone_id" {
  description = "Hosted zone of the ALB, for a Route 53 alias record."
  value       = module.aws.alb_zone_id
}

output "http_api_url" {
  description = "Invoke URL of the API Gateway HTTP API (the Lambda flavour of the API)."
  value       = module.aws.http_api_url
}

output "ecs_cluster_name" {
  description = "Name of the ECS cluster."
  value       = module.aws.ecs_cluster_name
}

output "api_service_name" {
  description = "ECS service of the API."
  value       = module.aws.api_service_name
}

output "worker_service_name" {
  description = "ECS service of the Celery workers."
  value       = module.aws.worker_service_name
}

output "migrate_task_definition_arn" {
  description = "Task definition of the one-off migration (precise-mrd db upgrade)."
  value       = module.aws.migrate_task_definition_arn
}

output "migrate_run_task_command" {
  description = "The aws CLI command that runs the migration once; run it before each rollout."
  value       = module.aws.migrate_run_task_command
}

output "db_endpoint" {
  description = "Address of the PostgreSQL instance."
  value       = module.aws.db_endpoint
}

output "db_master_user_secret_arn" {
  description = "The RDS-managed secret with the database password (no value in the state)."
  value       = module.aws.db_master_user_secret_arn
}

output "jwt_secret_arn" {
  description = "The JWT signing secret, created empty: put its value (README) before the first rollout."
  value       = module.aws.jwt_secret_arn
}

output "redis_primary_endpoint" {
  description = "Primary endpoint of the Redis replication group (TLS, port 6379)."
  value       = module.aws.redis_primary_endpoint
}

output "data_bucket" {
  description = "The data bucket: uploads under incoming/ (a manifest.json starts a sample), artifacts under artifacts/."
  value       = module.aws.data_bucket
}

output "storage_url" {
  description = "PRECISE_MRD_STORAGE_URL of the deployment."
  value       = module.aws.storage_url
}

output "logs_bucket" {
  description = "The bucket of the ALB and S3 access logs."
  value       = module.aws.logs_bucket
}

output "api_function_name" {
  description = "The HTTP API Lambda function."
  value       = module.aws.api_function_name
}

output "storage_event_function_name" {
  description = "The S3-event Lambda function."
  value       = module.aws.storage_event_function_name
}

output "maintenance_function_name" {
  description = "The scheduled Lambda function that recovers, re-sends and cleans up jobs every minute."
  value       = module.aws.maintenance_function_name
}

output "storage_event_dlq_url" {
  description = "Dead-letter queue of the storage-event function (failed sample events)."
  value       = module.aws.storage_event_dlq_url
}

output "kms_key_arn" {
  description = "The customer-managed KMS key of the deployment's data at rest."
  value       = module.aws.kms_key_arn
}
