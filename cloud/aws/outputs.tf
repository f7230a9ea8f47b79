output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.main.id
}

output "private_subnet_ids" {
  description = "The private subnets (tasks, Lambda, RDS, Redis)."
  value       = aws_subnet.private[*].id
}

output "alb_dns_name" {
  description = "DNS name of the ALB: point the certificate's domain at it (CNAME or alias)."
  value       = aws_lb.api.dns_name
}

output "alb_zone_id" {
  description = "Hosted zone of the ALB, for a Route 53 alias record."
  value       = aws_lb.api.zone_id
}

output "http_api_url" {
  description = "Invoke URL of the API Gateway HTTP API (the Lambda flavour of the API)."
  value       = aws_apigatewayv2_stage.default.invoke_url
}

output "ecs_cluster_name" {
  description = "Name of the ECS cluster."
  value       = aws_ecs_cluster.main.name
}

output "api_service_name" {
  description = "ECS service of the API."
  value       = aws_ecs_service.api.name
}

output "worker_service_name" {
  description = "ECS service of the Celery workers."
  value       = aws_ecs_service.worker.name
}

output "migrate_task_definition_arn" {
  description = "Task definition of the one-off migration (precise-mrd db upgrade)."
  value       = aws_ecs_task_definition.migrate.arn
}

output "migrate_run_task_command" {
  description = "The aws CLI command that runs the migration once; run it before each rollout."
  value = join(" ", [
    "aws ecs run-task",
    "--region ${local.region}",
    "--cluster ${aws_ecs_cluster.main.name}",
    "--task-definition ${aws_ecs_task_definition.migrate.arn}",
    "--launch-type FARGATE",
    "--network-configuration 'awsvpcConfiguration={subnets=[${join(",", aws_subnet.private[*].id)}],securityGroups=[${aws_security_group.worker.id}],assignPublicIp=DISABLED}'",
  ])
}

output "db_endpoint" {
  description = "Address of the PostgreSQL instance."
  value       = aws_db_instance.main.address
}

output "db_master_user_secret_arn" {
  description = "The RDS-managed secret with the database password (no value in the state)."
  value       = local.db_secret_arn
}

output "jwt_secret_arn" {
  description = "The JWT signing secret, created empty: put its value (README) before the first rollout."
  value       = local.jwt_secret_arn
}

output "redis_primary_endpoint" {
  description = "Primary endpoint of the Redis replication group (TLS, port 6379)."
  value       = local.redis_host
}

output "data_bucket" {
  description = "The data bucket: uploads under incoming/ (a manifest.json starts a sample), artifacts under artifacts/."
  value       = aws_s3_bucket.data.bucket
}

output "storage_url" {
  description = "PRECISE_MRD_STORAGE_URL of the deployment."
  value       = local.storage_url
}

output "logs_bucket" {
  description = "The bucket of the ALB and S3 access logs."
  value       = aws_s3_bucket.logs.bucket
}

output "api_function_name" {
  description = "The HTTP API Lambda function."
  value       = aws_lambda_function.api.function_name
}

output "storage_event_function_name" {
  description = "The S3-event Lambda function."
  value       = aws_lambda_function.storage_event.function_name
}

output "storage_event_dlq_url" {
  description = "Dead-letter queue of the storage-event function (failed sample events)."
  value       = aws_sqs_queue.storage_event_dlq.url
}

output "maintenance_function_name" {
  description = "The scheduled maintenance Lambda function (every minute)."
  value       = aws_lambda_function.maintenance.function_name
}

output "maintenance_dlq_url" {
  description = "Dead-letter queue of the maintenance function (failed or expired scheduled runs)."
  value       = aws_sqs_queue.maintenance_dlq.url
}

output "kms_key_arn" {
  description = "The customer-managed KMS key of the deployment's data at rest."
  value       = aws_kms_key.main.arn
}
