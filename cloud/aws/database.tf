# PostgreSQL 16 on RDS: encrypted, private, TLS required, the master password managed by RDS
# in Secrets Manager (never in the Terraform state), logs to CloudWatch.

resource "aws_db_subnet_group" "main" {
  name        = "${var.name}-postgres"
  description = "Precise MRD PostgreSQL: the private subnets"
  subnet_ids  = aws_subnet.private[*].id
}

resource "aws_db_parameter_group" "main" {
  name_prefix = "${var.name}-postgres16-"
  family      = "postgres16"
  description = "Precise MRD PostgreSQL 16: TLS only, DDL and slow statements logged"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  parameter {
    name  = "log_statement"
    value = "ddl"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }

  # NB: slow statements are logged without their bound values (sample identifiers, PHI)
  parameter {
    name  = "log_parameter_max_length"
    value = "0"
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_db_instance" "main" {
  identifier     = "${var.name}-postgres"
  engine         = "postgres"
  engine_version = "16"
  instance_class = var.db_instance_class

  db_name  = local.db_name
  username = local.db_username
  # NB: RDS generates the password and keeps it in Secrets Manager (encrypted with our key)
  manage_master_user_password   = true
  master_user_secret_kms_key_id = aws_kms_key.main.arn

  allocated_storage     = var.db_allocated_storage
  max_allocated_storage = var.db_max_allocated_storage
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.main.arn

  db_subnet_group_name   = aws_db_subnet_group.main.name
  vpc_security_group_ids = [aws_security_group.db.id]
  parameter_group_name   = aws_db_parameter_group.main.name
  publicly_accessible    = false
  multi_az               = var.db_multi_az
  port                   = 5432

  iam_database_authentication_enabled = true

  backup_retention_period   = var.db_backup_retention_days
  backup_window             = "03:00-04:00"
  maintenance_window        = "sun:04:30-sun:05:30"
  copy_tags_to_snapshot     = true
  deletion_protection       = var.deletion_protection
  skip_final_snapshot       = false
  final_snapshot_identifier = "${var.name}-postgres-final"

  auto_minor_version_upgrade  = true
  allow_major_version_upgrade = false

  enabled_cloudwatch_logs_exports = ["postgresql", "upgrade"]
  monitoring_interval             = 60
  monitoring_role_arn             = aws_iam_role.rds_monitoring.arn

  performance_insights_enabled          = var.db_performance_insights_enabled
  performance_insights_kms_key_id       = var.db_performance_insights_enabled ? aws_kms_key.main.arn : null
  performance_insights_retention_period = var.db_performance_insights_enabled ? 7 : null

  depends_on = [
    aws_iam_role_policy_attachment.rds_monitoring,
    aws_cloudwatch_log_group.main["rds_postgresql"],
    aws_cloudwatch_log_group.main["rds_upgrade"],
  ]
}
