# Security groups, least privilege: the world reaches the ALB only (443, and 80 to redirect),
# the ALB reaches the API tasks on 8000, the tasks and the Lambda functions reach PostgreSQL
# (5432) and Redis (6379), and leave the VPC on 443 only (AWS APIs through the NAT gateways,
# S3 through the gateway endpoint). RDS and Redis have no egress at all.

resource "aws_security_group" "alb" {
  name        = "${var.name}-alb"
  description = "Precise MRD ALB: HTTPS (and HTTP, redirected) from the internet"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${var.name}-alb" }
}

resource "aws_security_group" "api" {
  name        = "${var.name}-api"
  description = "Precise MRD API tasks: port 8000 from the ALB only"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${var.name}-api" }
}

resource "aws_security_group" "worker" {
  name        = "${var.name}-worker"
  description = "Precise MRD workers and the migration task: no inbound traffic"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${var.name}-worker" }
}

resource "aws_security_group" "lambda" {
  name        = "${var.name}-lambda"
  description = "Precise MRD Lambda functions: no inbound traffic"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${var.name}-lambda" }
}

resource "aws_security_group" "db" {
  name        = "${var.name}-db"
  description = "Precise MRD PostgreSQL: 5432 from the tasks and the Lambda functions"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${var.name}-db" }
}

resource "aws_security_group" "redis" {
  name        = "${var.name}-redis"
  description = "Precise MRD Redis: 6379 from the tasks and the Lambda functions"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${var.name}-redis" }
}

# --- the ALB -----------------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "alb_http" {
  #checkov:skip=CKV_AWS_260:port 80 only answers with a redirect to HTTPS (aws_lb_listener.http)
  security_group_id = aws_security_group.alb.id
  description       = "HTTP from the internet, redirected to HTTPS by the listener"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
}

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  security_group_id = aws_security_group.alb.id
  description       = "HTTPS from the internet"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "alb_to_api" {
  security_group_id            = aws_security_group.alb.id
  description                  = "To the API tasks"
  referenced_security_group_id = aws_security_group.api.id
  ip_protocol                  = "tcp"
  from_port                    = local.api_port
  to_port                      = local.api_port
}

resource "aws_vpc_security_group_ingress_rule" "api_from_alb" {
  security_group_id            = aws_security_group.api.id
  description                  = "From the ALB"
  referenced_security_group_id = aws_security_group.alb.id
  ip_protocol                  = "tcp"
  from_port                    = local.api_port
  to_port                      = local.api_port
}

# --- the clients of the database and of Redis: API and worker tasks, Lambda functions -----

locals {
  client_security_groups = {
    api    = aws_security_group.api.id
    worker = aws_security_group.worker.id
    lambda = aws_security_group.lambda.id
  }
}

resource "aws_vpc_security_group_egress_rule" "client_https" {
  for_each = local.client_security_groups

  security_group_id = each.value
  description       = "HTTPS to AWS APIs (Secrets Manager, ECR, CloudWatch, S3) and the image registry"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "client_to_db" {
  for_each = local.client_security_groups

  security_group_id            = each.value
  description                  = "To PostgreSQL"
  referenced_security_group_id = aws_security_group.db.id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

resource "aws_vpc_security_group_egress_rule" "client_to_redis" {
  for_each = local.client_security_groups

  security_group_id            = each.value
  description                  = "To Redis"
  referenced_security_group_id = aws_security_group.redis.id
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
}

resource "aws_vpc_security_group_ingress_rule" "db_from_clients" {
  for_each = local.client_security_groups

  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from the ${each.key} security group"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

resource "aws_vpc_security_group_ingress_rule" "redis_from_clients" {
  for_each = local.client_security_groups

  security_group_id            = aws_security_group.redis.id
  description                  = "Redis from the ${each.key} security group"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
}
