# Redis 7 (ElastiCache), the Celery broker (db 0) and the cache (db 1): a primary and a
# replica in two AZs with automatic failover, TLS in transit, encrypted at rest.
# NB: no AUTH token (it would be in the Terraform state): the isolation is the network (the
# private subnets, and aws_security_group.redis: the tasks and the Lambda functions only) and
# TLS. README.md says how to add AUTH out of band. SQS is not an option: the Celery executor
# of the service supports Redis and RabbitMQ brokers only.

resource "aws_elasticache_subnet_group" "main" {
  name        = "${var.name}-redis"
  description = "Precise MRD Redis: the private subnets"
  subnet_ids  = aws_subnet.private[*].id
}

resource "aws_elasticache_replication_group" "main" {
  #checkov:skip=CKV_AWS_31:no AUTH token on purpose (it would be stored in the Terraform state); TLS and security-group isolation instead, AUTH can be added out of band (README)
  replication_group_id = "${var.name}-redis"
  description          = "Precise MRD: Celery broker and cache"
  engine               = "redis"
  engine_version       = "7.1"
  parameter_group_name = "default.redis7"
  node_type            = var.redis_node_type
  num_cache_clusters   = var.redis_num_cache_clusters
  port                 = 6379

  subnet_group_name  = aws_elasticache_subnet_group.main.name
  security_group_ids = [aws_security_group.redis.id]

  automatic_failover_enabled = true
  multi_az_enabled           = true

  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.main.arn
  transit_encryption_enabled = true

  snapshot_retention_limit   = 7
  snapshot_window            = "02:00-03:00"
  maintenance_window         = "sun:05:30-sun:06:30"
  auto_minor_version_upgrade = true

  log_delivery_configuration {
    destination      = aws_cloudwatch_log_group.main["redis_slow"].name
    destination_type = "cloudwatch-logs"
    log_format       = "json"
    log_type         = "slow-log"
  }

  log_delivery_configuration {
    destination      = aws_cloudwatch_log_group.main["redis_eng"].name
    destination_type = "cloudwatch-logs"
    log_format       = "json"
    log_type         = "engine-log"
  }
}
