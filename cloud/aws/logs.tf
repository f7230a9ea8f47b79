# CloudWatch log groups, created here (not on first write) so that each has the retention of
# var.log_retention_days and the module's KMS key.

locals {
  log_groups = {
    api        = "/ecs/${var.name}/api"
    worker     = "/ecs/${var.name}/worker"
    migrate    = "/ecs/${var.name}/migrate"
    ecs_exec   = "/ecs/${var.name}/exec"
    lambda_api = "/aws/lambda/${var.name}-api"
    lambda_evt = "/aws/lambda/${var.name}-storage-event"
    lambda_mnt = "/aws/lambda/${var.name}-maintenance"
    api_gw     = "/aws/apigateway/${var.name}"
    redis_slow = "/elasticache/${var.name}/slow-log"
    redis_eng  = "/elasticache/${var.name}/engine-log"
    # NB: RDS writes to these names; created first so they do not default to "never expire"
    rds_postgresql = "/aws/rds/instance/${var.name}-postgres/postgresql"
    rds_upgrade    = "/aws/rds/instance/${var.name}-postgres/upgrade"
  }
}

resource "aws_cloudwatch_log_group" "main" {
  for_each = local.log_groups

  name              = each.value
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_cloudwatch_log_group" "flow_logs" {
  name              = "/vpc/${var.name}/flow-logs"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

# NB: WAF requires the "aws-waf-logs-" prefix
resource "aws_cloudwatch_log_group" "waf" {
  name              = "aws-waf-logs-${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}
