# One customer-managed key for the data at rest of this deployment: the S3 bucket, the RDS
# storage, its master secret and Performance Insights, the JWT secret, Redis, the CloudWatch
# log groups, the Lambda environments and the dead-letter queue. Rotated yearly.

resource "aws_kms_key" "main" {
  description             = "Precise MRD (${var.name}): data at rest"
  enable_key_rotation     = true
  deletion_window_in_days = 30

  # NB: the account administers the key through IAM (the roles of this module are granted
  # their uses in iam.tf); CloudWatch Logs may use it for the log groups of this account only
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministersThroughIam"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsOfThisAccount"
        Effect    = "Allow"
        Principal = { Service = "logs.${local.region}.amazonaws.com" }
        Action = [
          "kms:Encrypt*",
          "kms:Decrypt*",
          "kms:ReEncrypt*",
          "kms:GenerateDataKey*",
          "kms:Describe*",
        ]
        Resource = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"
          }
        }
      },
    ]
  })
}

resource "aws_kms_alias" "main" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.main.key_id
}
