# `terraform test` of the module with a mocked AWS provider: no credentials, no AWS API call,
# nothing created. It evaluates every expression, the variable validations and the
# preconditions, runs the provider's own plan-time checks, and reads the rendered values.
# tests/integration/test_terraform.py runs it (after `terraform init`).

mock_provider "aws" {
  mock_data "aws_availability_zones" {
    defaults = { names = ["eu-west-1a", "eu-west-1b"] }
  }
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
  mock_data "aws_elb_service_account" {
    defaults = { arn = "arn:aws:iam::156460612806:root" }
  }
  mock_resource "aws_db_instance" {
    defaults = {
      address = "precise-mrd-postgres.abc.eu-west-1.rds.amazonaws.com"
      port    = 5432
      master_user_secret = [{
        secret_arn    = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-abc"
        kms_key_id    = "arn:aws:kms:eu-west-1:123456789012:key/abc"
        secret_status = "active"
      }]
    }
  }
  mock_resource "aws_elasticache_replication_group" {
    defaults = { primary_endpoint_address = "master.precise-mrd-redis.abc.euw1.cache.amazonaws.com" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:eu-west-1:123456789012:key/abc" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:eu-west-1:123456789012:log-group:mocked" }
  }
  mock_resource "aws_secretsmanager_secret" {
    defaults = { arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:precise-mrd/jwt-secret-abc" }
  }
  mock_resource "aws_s3_bucket" {
    defaults = { arn = "arn:aws:s3:::precise-mrd-data-x", bucket = "precise-mrd-data-x" }
  }
  mock_resource "aws_sqs_queue" {
    defaults = { arn = "arn:aws:sqs:eu-west-1:123456789012:precise-mrd-storage-event-dlq" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mocked" }
  }
  mock_resource "aws_lambda_function" {
    defaults = {
      arn        = "arn:aws:lambda:eu-west-1:123456789012:function:mocked"
      invoke_arn = "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:mocked/invocations"
    }
  }
  mock_resource "aws_cloudwatch_event_rule" {
    defaults = { arn = "arn:aws:events:eu-west-1:123456789012:rule/precise-mrd-maintenance" }
  }
  mock_resource "aws_lb" {
    defaults = { arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/mocked/1" }
  }
  mock_resource "aws_lb_target_group" {
    defaults = { arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/mocked/1" }
  }
  mock_resource "aws_lb_listener" {
    defaults = { arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/mocked/1/2" }
  }
  mock_resource "aws_wafv2_web_acl" {
    defaults = { arn = "arn:aws:wafv2:eu-west-1:123456789012:regional/webacl/mocked/1" }
  }
  mock_resource "aws_apigatewayv2_api" {
    defaults = { execution_arn = "arn:aws:execute-api:eu-west-1:123456789012:abc123" }
  }
  mock_resource "aws_ecs_task_definition" {
    defaults = { arn = "arn:aws:ecs:eu-west-1:123456789012:task-definition/mocked:1" }
  }
}

variables {
  availability_zones = ["eu-west-1a", "eu-west-1b"]
  image              = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/precise-mrd-api:0123abc"
  certificate_arn    = "arn:aws:acm:eu-west-1:123456789012:certificate/11111111-2222-3333-4444-555555555555"
}

run "the_stack_renders" {
  command = apply

  assert {
    condition     = output.storage_url == "s3://precise-mrd-data-x/artifacts"
    error_message = "PRECISE_MRD_STORAGE_URL: ${output.storage_url}"
  }

  assert {
    condition = alltrue([
      for td in [aws_ecs_task_definition.api, aws_ecs_task_definition.worker, aws_ecs_task_definition.migrate] :
      alltrue([for c in jsondecode(td.container_definitions) :
      c.readonlyRootFilesystem && c.user == "10001:10001" && c.logConfiguration.logDriver == "awslogs"])
    ])
    error_message = "every container: read-only root filesystem, user 10001:10001, awslogs"
  }

  assert {
    condition     = jsondecode(aws_ecs_task_definition.worker.container_definitions)[0].stopTimeout == 120
    error_message = "the workers' stopTimeout is 120 s (a Spot interruption's notice)"
  }

  assert {
    condition = (
      jsondecode(aws_ecs_task_definition.api.container_definitions)[0].secrets[0].valueFrom ==
      "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-abc:password::"
    )
    error_message = "PRECISE_MRD_DATABASE_PASSWORD comes from the RDS-managed secret's password key"
  }

  assert {
    condition = (
      aws_lambda_function.api.environment[0].variables["PRECISE_MRD_DATABASE_PASSWORD_SECRET_ARN"] ==
      "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-abc:password::"
      && !contains(keys(aws_lambda_function.api.environment[0].variables), "AWS_REGION")
    )
    error_message = "the Lambda resolves the password from its secret; AWS_REGION is Lambda's own"
  }

  assert {
    condition     = aws_lambda_function.api.environment[0].variables["PRECISE_MRD_BROKER_URL"] == "rediss://master.precise-mrd-redis.abc.euw1.cache.amazonaws.com:6379/0?ssl_cert_reqs=required"
    error_message = "the broker is Redis over TLS, db 0"
  }

  assert {
    condition = (
      aws_lambda_function.maintenance.image_config[0].command == tolist(["precise_mrd.service.serverless.aws.maintenance_handler"])
      && aws_cloudwatch_event_rule.maintenance.schedule_expression == "rate(1 minute)"
      && aws_lambda_function.maintenance.reserved_concurrent_executions == 1
    )
    error_message = "the maintenance function runs maintenance_handler every minute, one at a time"
  }

  assert {
    condition     = local.ecs_ecr_repository_arns == ["arn:aws:ecr:eu-west-1:123456789012:repository/precise-mrd-api"]
    error_message = "the execution role pulls from the image's ECR repository only"
  }
}

run "a_ghcr_image_needs_an_ecr_copy_for_lambda" {
  command = plan

  variables {
    image = "ghcr.io/acme/precise-mrd-api:0123abc"
  }

  expect_failures = [aws_lambda_function.api, aws_lambda_function.storage_event, aws_lambda_function.maintenance]
}

run "bad_inputs_are_refused" {
  command = plan

  variables {
    image              = "ghcr.io/acme/precise-mrd-api:latest"
    availability_zones = ["eu-west-1a"]
    auth_mode          = "none"
  }

  expect_failures = [var.image, var.availability_zones, var.auth_mode]
}
