# The AWS deployment of Precise MRD. A child module: the provider is configured by the caller
# (../main.tf), so one configuration can pick the region, the credentials and the default tags.
terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}
