# IAM, least privilege: each role may do exactly what its service needs.
#   * the ECS task execution role: pull the image, write the tasks' logs, read the two secrets
#   * the API and worker task roles: the artifacts prefix of the data bucket
#   * the Lambda roles: VPC networking, their log group, X-Ray, the secrets, S3 as needed
#   * RDS enhanced monitoring and VPC flow logs: the AWS service roles

data "aws_iam_policy_document" "assume_ecs_tasks" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

data "aws_iam_policy_document" "assume_lambda" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

locals {
  data_bucket_arn = aws_s3_bucket.data.arn
  artifacts_arn   = "${aws_s3_bucket.data.arn}/${local.artifacts_prefix}/*"
  incoming_arn    = "${aws_s3_bucket.data.arn}/${local.incoming_prefix}/*"
  # the secrets the application reads, as IAM resources (the RDS one is the whole secret)
  app_secret_arns = [local.db_secret_arn, local.jwt_secret_arn]
}

# --- ECS: the task execution role --------------------------------------------------------

resource "aws_iam_role" "ecs_execution" {
  name_prefix        = "${var.name}-ecs-exec-"
  description        = "Precise MRD ECS task execution: image pull, logs, secrets"
  assume_role_policy = data.aws_iam_policy_document.assume_ecs_tasks.json
}

data "aws_iam_policy_document" "ecs_execution" {
  statement {
    sid     = "WriteTaskLogs"
    actions = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [
      for key in ["api", "worker", "migrate"] : "${aws_cloudwatch_log_group.main[key].arn}:*"
    ]
  }

  statement {
    sid       = "ReadTheSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = concat(local.app_secret_arns, var.registry_credentials_secret_arn == null ? [] : [var.registry_credentials_secret_arn])
  }

  statement {
    sid       = "DecryptTheSecrets"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.main.arn]
  }

  dynamic "statement" {
    for_each = length(local.ecs_ecr_repository_arns) > 0 ? [1] : []

    content {
      sid       = "EcrLogin"
      actions   = ["ecr:GetAuthorizationToken"]
      resources = ["*"]
    }
  }

  dynamic "statement" {
    for_each = length(local.ecs_ecr_repository_arns) > 0 ? [1] : []

    content {
      sid       = "PullTheImage"
      actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
      resources = local.ecs_ecr_repository_arns
    }
  }
}

resource "aws_iam_role_policy" "ecs_execution" {
  name   = "execution"
  role   = aws_iam_role.ecs_execution.id
  policy = data.aws_iam_policy_document.ecs_execution.json
}

# --- ECS: the task roles of the API and of the workers -----------------------------------

data "aws_iam_policy_document" "artifacts_rw" {
  statement {
    sid       = "ArtifactsReadWrite"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = [local.artifacts_arn]
  }

  statement {
    sid       = "ListArtifacts"
    actions   = ["s3:ListBucket"]
    resources = [local.data_bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.artifacts_prefix}/*"]
    }
  }

  statement {
    sid       = "BucketKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
}

resource "aws_iam_role" "api_task" {
  name_prefix        = "${var.name}-api-task-"
  description        = "Precise MRD API tasks: the artifacts prefix of the data bucket"
  assume_role_policy = data.aws_iam_policy_document.assume_ecs_tasks.json
}

resource "aws_iam_role_policy" "api_task" {
  name   = "artifacts"
  role   = aws_iam_role.api_task.id
  policy = data.aws_iam_policy_document.artifacts_rw.json
}

resource "aws_iam_role" "worker_task" {
  name_prefix        = "${var.name}-worker-task-"
  description        = "Precise MRD worker tasks: the artifacts prefix of the data bucket"
  assume_role_policy = data.aws_iam_policy_document.assume_ecs_tasks.json
}

resource "aws_iam_role_policy" "worker_task" {
  name   = "artifacts"
  role   = aws_iam_role.worker_task.id
  policy = data.aws_iam_policy_document.artifacts_rw.json
}

# --- Lambda ------------------------------------------------------------------------------

data "aws_iam_policy_document" "lambda_common" {
  statement {
    sid       = "ReadTheSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.app_secret_arns
  }

  # NB: the secrets, the environment variables and the S3 objects are encrypted with this key
  statement {
    sid       = "UseTheKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
}

data "aws_iam_policy_document" "lambda_api" {
  source_policy_documents = [
    data.aws_iam_policy_document.lambda_common.json,
    data.aws_iam_policy_document.artifacts_rw.json,
  ]

  statement {
    sid       = "WriteLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.main["lambda_api"].arn}:*"]
  }
}

data "aws_iam_policy_document" "lambda_storage_event" {
  source_policy_documents = [
    data.aws_iam_policy_document.lambda_common.json,
    data.aws_iam_policy_document.artifacts_rw.json,
  ]

  statement {
    sid       = "WriteLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.main["lambda_evt"].arn}:*"]
  }

  statement {
    sid       = "ReadIncoming"
    actions   = ["s3:GetObject"]
    resources = [local.incoming_arn]
  }

  statement {
    sid       = "DeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.storage_event_dlq.arn]
  }
}

# NB: no lambda_common: this function writes nothing to S3, so it gets kms:Decrypt only
# (secrets, environment, artifacts it reads) and GenerateDataKey only through SQS (its DLQ)
data "aws_iam_policy_document" "lambda_maintenance" {
  statement {
    sid       = "WriteLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.main["lambda_mnt"].arn}:*"]
  }

  statement {
    sid       = "ReadTheSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.app_secret_arns
  }

  statement {
    sid       = "DecryptWithTheKey"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.main.arn]
  }

  statement {
    sid       = "ExpireArtifacts"
    actions   = ["s3:GetObject", "s3:DeleteObject"]
    resources = [local.artifacts_arn]
  }

  statement {
    sid       = "ListArtifacts"
    actions   = ["s3:ListBucket"]
    resources = [local.data_bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.artifacts_prefix}/*"]
    }
  }

  statement {
    sid       = "DeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.maintenance_dlq.arn]
  }

  # NB: sending to the KMS-encrypted DLQ needs a data key; only through SQS
  statement {
    sid       = "DeadLettersKey"
    actions   = ["kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["sqs.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "lambda_api" {
  name_prefix        = "${var.name}-lambda-api-"
  description        = "Precise MRD HTTP API Lambda"
  assume_role_policy = data.aws_iam_policy_document.assume_lambda.json
}

resource "aws_iam_role_policy" "lambda_api" {
  name   = "api"
  role   = aws_iam_role.lambda_api.id
  policy = data.aws_iam_policy_document.lambda_api.json
}

resource "aws_iam_role" "lambda_storage_event" {
  name_prefix        = "${var.name}-lambda-evt-"
  description        = "Precise MRD S3-event Lambda"
  assume_role_policy = data.aws_iam_policy_document.assume_lambda.json
}

resource "aws_iam_role_policy" "lambda_storage_event" {
  name   = "storage-event"
  role   = aws_iam_role.lambda_storage_event.id
  policy = data.aws_iam_policy_document.lambda_storage_event.json
}

resource "aws_iam_role" "lambda_maintenance" {
  name_prefix        = "${var.name}-lambda-mnt-"
  description        = "Precise MRD scheduled maintenance Lambda"
  assume_role_policy = data.aws_iam_policy_document.assume_lambda.json
}

resource "aws_iam_role_policy" "lambda_maintenance" {
  name   = "maintenance"
  role   = aws_iam_role.lambda_maintenance.id
  policy = data.aws_iam_policy_document.lambda_maintenance.json
}

# NB: the ENI actions (ec2:CreateNetworkInterface, ...) of a VPC function cannot be scoped to
# resources; the AWS-managed policies are the documented minimum for VPC access and X-Ray
locals {
  lambda_managed_policies = {
    vpc  = "arn:${local.partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
    xray = "arn:${local.partition}:iam::aws:policy/AWSXRayDaemonWriteAccess"
  }
  lambda_role_policy_attachments = merge(
    { for k, arn in local.lambda_managed_policies : "api-${k}" => { role = aws_iam_role.lambda_api.name, arn = arn } },
    { for k, arn in local.lambda_managed_policies : "evt-${k}" => { role = aws_iam_role.lambda_storage_event.name, arn = arn } },
    { for k, arn in local.lambda_managed_policies : "mnt-${k}" => { role = aws_iam_role.lambda_maintenance.name, arn = arn } },
  )
}

resource "aws_iam_role_policy_attachment" "lambda" {
  for_each = local.lambda_role_policy_attachments

  role       = each.value.role
  policy_arn = each.value.arn
}

# --- AWS service roles: RDS enhanced monitoring, VPC flow logs ---------------------------

data "aws_iam_policy_document" "assume_rds_monitoring" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "rds_monitoring" {
  name_prefix        = "${var.name}-rds-mon-"
  description        = "RDS enhanced monitoring of the Precise MRD database"
  assume_role_policy = data.aws_iam_policy_document.assume_rds_monitoring.json
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

data "aws_iam_policy_document" "assume_flow_logs" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "flow_logs" {
  name_prefix        = "${var.name}-flow-logs-"
  description        = "VPC flow logs of the Precise MRD VPC"
  assume_role_policy = data.aws_iam_policy_document.assume_flow_logs.json
}

data "aws_iam_policy_document" "flow_logs" {
  statement {
    actions = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = [
      aws_cloudwatch_log_group.flow_logs.arn,
      "${aws_cloudwatch_log_group.flow_logs.arn}:*",
    ]
  }
}

resource "aws_iam_role_policy" "flow_logs" {
  name   = "flow-logs"
  role   = aws_iam_role.flow_logs.id
  policy = data.aws_iam_policy_document.flow_logs.json
}
