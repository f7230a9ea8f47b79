# The JWT signing secret of the API (PRECISE_MRD_JWT_SECRET). Terraform creates the secret
# WITHOUT a value, so no value ever reaches the state: the operator puts it (README.md):
#   aws secretsmanager put-secret-value --secret-id <jwt_secret_arn> --secret-string "$(openssl rand -base64 48)"
# The database password is not here: RDS manages it (database.tf, manage_master_user_password).

resource "aws_secretsmanager_secret" "jwt" {
  #checkov:skip=CKV2_AWS_57:the value is set out of band by the operator; rotating an HS256 signing key invalidates live tokens, so it is rotated by hand (README) rather than by a rotation Lambda
  name_prefix             = "${var.name}/jwt-secret-"
  description             = "Precise MRD: the API's JWT signing secret (value set out of band)"
  kms_key_id              = aws_kms_key.main.arn
  recovery_window_in_days = 7
}
