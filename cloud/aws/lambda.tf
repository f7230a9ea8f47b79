# Three Lambda functions from the same container image (Lambda pulls it from Amazon ECR):
#   * api: the HTTP API behind an API Gateway HTTP API (payload 2.0, the $default route);
#     the application authenticates every request itself (PRECISE_MRD_AUTH_MODE)
#   * storage_event: one sample, when its incoming/**/manifest.json lands in the data bucket;
#     reads the sample's files there and writes the artifacts under artifacts/
#   * maintenance: every minute (an EventBridge schedule), one at a time: recovers the jobs
#     whose worker died, re-sends the QUEUED jobs whose broker message was lost, and deletes
#     the finished jobs older than CLEANUP_OLD_JOBS_HOURS with their artifacts
# All in the private subnets (they reach RDS and Redis), X-Ray traced, the environment
# encrypted with the module's key. Secrets: the app resolves each <VAR>_SECRET_ARN at cold start.

resource "aws_sqs_queue" "storage_event_dlq" {
  name                      = "${var.name}-storage-event-dlq"
  message_retention_seconds = 1209600
  kms_master_key_id         = aws_kms_key.main.arn
}

resource "aws_sqs_queue" "maintenance_dlq" {
  name                      = "${var.name}-maintenance-dlq"
  message_retention_seconds = 1209600
  kms_master_key_id         = aws_kms_key.main.arn
}

locals {
  lambda_vpc = {
    subnet_ids         = aws_subnet.private[*].id
    security_group_ids = [aws_security_group.lambda.id]
  }
  ecr_image_pattern = "^[0-9]{12}\\.dkr\\.ecr\\.[a-z0-9-]+\\.amazonaws\\.com(\\.cn)?/"
}

resource "aws_lambda_function" "api" {
  #checkov:skip=CKV_AWS_272:code signing applies to .zip packages only; container images are verified by their digest in ECR
  #checkov:skip=CKV_AWS_116:a dead-letter queue only serves asynchronous invocations; API Gateway invokes this function synchronously
  function_name = "${var.name}-api"
  description   = "Precise MRD HTTP API (API Gateway HTTP API)"
  role          = aws_iam_role.lambda_api.arn
  package_type  = "Image"
  image_uri     = local.lambda_image
  architectures = ["x86_64"]
  timeout       = 30
  memory_size   = 1024
  kms_key_arn   = aws_kms_key.main.arn

  reserved_concurrent_executions = var.api_lambda_reserved_concurrency

  image_config {
    entry_point = ["python", "-m", "awslambdaric"]
    command     = ["precise_mrd.service.serverless.aws.api_handler"]
  }

  environment {
    variables = local.lambda_env
  }

  vpc_config {
    subnet_ids         = local.lambda_vpc.subnet_ids
    security_group_ids = local.lambda_vpc.security_group_ids
  }

  tracing_config {
    mode = "Active"
  }

  lifecycle {
    precondition {
      condition     = can(regex(local.ecr_image_pattern, local.lambda_image))
      error_message = "Lambda runs images from Amazon ECR only: set lambda_image (or image) to an ECR URI."
    }
  }

  depends_on = [
    aws_iam_role_policy.lambda_api,
    aws_iam_role_policy_attachment.lambda,
    aws_cloudwatch_log_group.main["lambda_api"],
  ]
}

resource "aws_lambda_function" "storage_event" {
  #checkov:skip=CKV_AWS_272:code signing applies to .zip packages only; container images are verified by their digest in ECR
  function_name = "${var.name}-storage-event"
  description   = "Precise MRD: runs one sample when its manifest.json arrives under incoming/"
  role          = aws_iam_role.lambda_storage_event.arn
  package_type  = "Image"
  image_uri     = local.lambda_image
  architectures = ["x86_64"]
  timeout       = 900
  memory_size   = 3008
  kms_key_arn   = aws_kms_key.main.arn

  reserved_concurrent_executions = var.storage_event_lambda_reserved_concurrency

  ephemeral_storage {
    size = 10240
  }

  image_config {
    entry_point = ["python", "-m", "awslambdaric"]
    command     = ["precise_mrd.service.serverless.aws.storage_event_handler"]
  }

  environment {
    variables = local.lambda_env
  }

  vpc_config {
    subnet_ids         = local.lambda_vpc.subnet_ids
    security_group_ids = local.lambda_vpc.security_group_ids
  }

  tracing_config {
    mode = "Active"
  }

  dead_letter_config {
    target_arn = aws_sqs_queue.storage_event_dlq.arn
  }

  lifecycle {
    precondition {
      condition     = can(regex(local.ecr_image_pattern, local.lambda_image))
      error_message = "Lambda runs images from Amazon ECR only: set lambda_image (or image) to an ECR URI."
    }
  }

  depends_on = [
    aws_iam_role_policy.lambda_storage_event,
    aws_iam_role_policy_attachment.lambda,
    aws_cloudwatch_log_group.main["lambda_evt"],
  ]
}

# NB: one sample per invocation, no retry of a 15-minute run that failed (the DLQ keeps it)
resource "aws_lambda_function_event_invoke_config" "storage_event" {
  function_name                = aws_lambda_function.storage_event.function_name
  maximum_retry_attempts       = 0
  maximum_event_age_in_seconds = 3600
}

resource "aws_lambda_permission" "storage_event_from_s3" {
  statement_id   = "AllowS3DataBucket"
  action         = "lambda:InvokeFunction"
  function_name  = aws_lambda_function.storage_event.function_name
  principal      = "s3.amazonaws.com"
  source_arn     = aws_s3_bucket.data.arn
  source_account = local.account_id
}

resource "aws_lambda_function" "maintenance" {
  #checkov:skip=CKV_AWS_272:code signing applies to .zip packages only; container images are verified by their digest in ECR
  function_name = "${var.name}-maintenance"
  description   = "Precise MRD: recovers orphaned jobs, re-sends lost ones, deletes expired ones"
  role          = aws_iam_role.lambda_maintenance.arn
  package_type  = "Image"
  image_uri     = local.lambda_image
  architectures = ["x86_64"]
  timeout       = 120
  memory_size   = 512
  kms_key_arn   = aws_kms_key.main.arn

  # NB: one run at a time: two would recover or re-send the same jobs
  reserved_concurrent_executions = 1

  image_config {
    entry_point = ["python", "-m", "awslambdaric"]
    command     = ["precise_mrd.service.serverless.aws.maintenance_handler"]
  }

  environment {
    variables = local.lambda_env
  }

  vpc_config {
    subnet_ids         = local.lambda_vpc.subnet_ids
    security_group_ids = local.lambda_vpc.security_group_ids
  }

  tracing_config {
    mode = "Active"
  }

  dead_letter_config {
    target_arn = aws_sqs_queue.maintenance_dlq.arn
  }

  lifecycle {
    precondition {
      condition     = can(regex(local.ecr_image_pattern, local.lambda_image))
      error_message = "Lambda runs images from Amazon ECR only: set lambda_image (or image) to an ECR URI."
    }
  }

  depends_on = [
    aws_iam_role_policy.lambda_maintenance,
    aws_iam_role_policy_attachment.lambda,
    aws_cloudwatch_log_group.main["lambda_mnt"],
  ]
}

# NB: no retry and no backlog: the next minute's run does the same work (a run that failed, or
# an event throttled behind a run still going, goes to the DLQ after two minutes)
resource "aws_lambda_function_event_invoke_config" "maintenance" {
  function_name                = aws_lambda_function.maintenance.function_name
  maximum_retry_attempts       = 0
  maximum_event_age_in_seconds = 120
}

resource "aws_cloudwatch_event_rule" "maintenance" {
  name                = "${var.name}-maintenance"
  description         = "Precise MRD: runs the maintenance function every minute"
  schedule_expression = "rate(1 minute)"
}

resource "aws_cloudwatch_event_target" "maintenance" {
  rule      = aws_cloudwatch_event_rule.maintenance.name
  target_id = "maintenance"
  arn       = aws_lambda_function.maintenance.arn
}

resource "aws_lambda_permission" "maintenance_from_events" {
  statement_id   = "AllowEventBridgeSchedule"
  action         = "lambda:InvokeFunction"
  function_name  = aws_lambda_function.maintenance.function_name
  principal      = "events.amazonaws.com"
  source_arn     = aws_cloudwatch_event_rule.maintenance.arn
  source_account = local.account_id
}

# --- API Gateway HTTP API ----------------------------------------------------------------

resource "aws_apigatewayv2_api" "main" {
  name          = "${var.name}-api"
  description   = "Precise MRD HTTP API (Lambda)"
  protocol_type = "HTTP"
}

resource "aws_apigatewayv2_integration" "api" {
  api_id                 = aws_apigatewayv2_api.main.id
  integration_type       = "AWS_PROXY"
  integration_method     = "POST"
  integration_uri        = aws_lambda_function.api.invoke_arn
  payload_format_version = "2.0"
  timeout_milliseconds   = 30000
}

resource "aws_apigatewayv2_route" "default" {
  #checkov:skip=CKV_AWS_309:the application authenticates every request itself (API keys and JWTs, PRECISE_MRD_AUTH_MODE); its health and metrics endpoints are public by design
  api_id    = aws_apigatewayv2_api.main.id
  route_key = "$default"
  target    = "integrations/${aws_apigatewayv2_integration.api.id}"
}

resource "aws_apigatewayv2_stage" "default" {
  api_id      = aws_apigatewayv2_api.main.id
  name        = "$default"
  auto_deploy = true

  default_route_settings {
    throttling_burst_limit = 100
    throttling_rate_limit  = 50
  }

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.main["api_gw"].arn
    format = jsonencode({
      requestId          = "$context.requestId"
      ip                 = "$context.identity.sourceIp"
      requestTime        = "$context.requestTime"
      httpMethod         = "$context.httpMethod"
      path               = "$context.path"
      status             = "$context.status"
      responseLength     = "$context.responseLength"
      integrationError   = "$context.integrationErrorMessage"
      integrationLatency = "$context.integrationLatency"
    })
  }
}

resource "aws_lambda_permission" "api_from_apigateway" {
  statement_id  = "AllowApiGateway"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.api.function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.main.execution_arn}/*"
}
