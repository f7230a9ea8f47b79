terraform {
  # >= 1.11: the PostgreSQL administrator password is an ephemeral variable sent through a
  # write-only argument (administrator_password_wo), so it is never stored in plan or state
  required_version = ">= 1.11"

  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # ~> 4.0 in spirit; 4.30 is the first minor with administrator_password_wo and its fixes
      version = "~> 4.30"
    }
  }
}

provider "azurerm" {
  subscription_id = var.subscription_id
  # data-plane calls (if any) use Entra ID: the storage accounts refuse shared keys
  storage_use_azuread = true

  features {
    key_vault {
      purge_soft_delete_on_destroy = false
    }
    resource_group {
      prevent_deletion_if_contains_resources = true
    }
  }
}
