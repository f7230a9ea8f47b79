# ECS on Fargate: the API service (behind the ALB), the Celery workers (mostly Fargate Spot)
# and the migration task definition (run once per release, before the rollout: README.md).
# One image, three commands. Every container: a read-only root filesystem, user 10001:10001,
# no Linux capabilities, writable ephemeral volumes at /data and /tmp, logs to CloudWatch.

resource "aws_ecs_cluster" "main" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  configuration {
    execute_command_configuration {
      kms_key_id = aws_kms_key.main.arn
      logging    = "OVERRIDE"

      log_configuration {
        cloud_watch_encryption_enabled = true
        cloud_watch_log_group_name     = aws_cloudwatch_log_group.main["ecs_exec"].name
      }
    }
  }
}

resource "aws_ecs_cluster_capacity_providers" "main" {
  cluster_name       = aws_ecs_cluster.main.name
  capacity_providers = ["FARGATE", "FARGATE_SPOT"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

locals {
  # NB: ECS environments are lists; a map's keys come out sorted, so the diff stays stable
  ecs_environment = [for name, value in local.ecs_env : { name = name, value = value }]

  repository_credentials = var.registry_credentials_secret_arn == null ? {} : {
    repositoryCredentials = { credentialsParameter = var.registry_credentials_secret_arn }
  }

  # What every container of the three task definitions shares
  container_base = merge(local.repository_credentials, {
    image                  = var.image
    essential              = true
    user                   = "10001:10001"
    readonlyRootFilesystem = true
    privileged             = false
    environment            = local.ecs_environment
    secrets                = [local.ecs_db_secret]
    mountPoints = [
      { sourceVolume = "data", containerPath = "/data", readOnly = false },
      { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
    ]
    linuxParameters = {
      initProcessEnabled = true
      capabilities       = { drop = ["ALL"] }
    }
  })
}

# --- task definitions --------------------------------------------------------------------

resource "aws_ecs_task_definition" "api" {
  family                   = "${var.name}-api"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.api_cpu
  memory                   = var.api_memory
  execution_role_arn       = aws_iam_role.ecs_execution.arn
  task_role_arn            = aws_iam_role.api_task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  # NB: no host path: Fargate ephemeral storage (the image's /data is owned by 10001)
  volume {
    name = "data"
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([merge(local.container_base, {
    name    = "api"
    command = ["precise-mrd", "serve"]
    secrets = [local.ecs_db_secret, local.ecs_jwt_secret]
    environment = [for name, value in merge(local.ecs_env, { PRECISE_MRD_API_HOST = "0.0.0.0" }) :
    { name = name, value = value }]
    portMappings = [{ containerPort = local.api_port, protocol = "tcp" }]
    # NB: liveness only (the ALB checks readiness); the image has no curl
    healthCheck = {
      command = ["CMD", "python", "-c",
      "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=4).status != 200)"]
      interval    = 30
      timeout     = 5
      retries     = 3
      startPeriod = 60
    }
    stopTimeout = 30
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.main["api"].name
        awslogs-region        = local.region
        awslogs-stream-prefix = "api"
      }
    }
  })])
}

resource "aws_ecs_task_definition" "worker" {
  family                   = "${var.name}-worker"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.worker_cpu
  memory                   = var.worker_memory
  execution_role_arn       = aws_iam_role.ecs_execution.arn
  task_role_arn            = aws_iam_role.worker_task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  ephemeral_storage {
    size_in_gib = var.worker_ephemeral_storage_gib
  }

  volume {
    name = "data"
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([merge(local.container_base, {
    name    = "worker"
    command = ["precise-mrd", "worker", "--concurrency", tostring(var.worker_concurrency)]
    # NB: a Spot interruption gives two minutes: SIGTERM puts the running jobs back in the
    # queue, and ECS waits this long (the Fargate maximum) before SIGKILL
    stopTimeout = 120
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.main["worker"].name
        awslogs-region        = local.region
        awslogs-stream-prefix = "worker"
      }
    }
  })])
}

# The one-off migration: `aws ecs run-task` (README.md, and the output migrate_run_task_command)
resource "aws_ecs_task_definition" "migrate" {
  family                   = "${var.name}-migrate"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 512
  memory                   = 1024
  execution_role_arn       = aws_iam_role.ecs_execution.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  volume {
    name = "data"
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([merge(local.container_base, {
    name        = "migrate"
    command     = ["precise-mrd", "db", "upgrade"]
    stopTimeout = 30
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.main["migrate"].name
        awslogs-region        = local.region
        awslogs-stream-prefix = "migrate"
      }
    }
  })])
}

# --- services ----------------------------------------------------------------------------

resource "aws_ecs_service" "api" {
  name                              = "api"
  cluster                           = aws_ecs_cluster.main.id
  task_definition                   = aws_ecs_task_definition.api.arn
  desired_count                     = var.api_min_count
  launch_type                       = "FARGATE"
  platform_version                  = "LATEST"
  health_check_grace_period_seconds = 120
  propagate_tags                    = "SERVICE"
  enable_ecs_managed_tags           = true

  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.api.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.api.arn
    container_name   = "api"
    container_port   = local.api_port
  }

  # NB: the autoscaler owns the count after the first apply
  lifecycle {
    ignore_changes = [desired_count]
  }

  depends_on = [aws_lb_listener.https]
}

resource "aws_ecs_service" "worker" {
  name                    = "worker"
  cluster                 = aws_ecs_cluster.main.id
  task_definition         = aws_ecs_task_definition.worker.arn
  desired_count           = var.worker_min_count
  platform_version        = "LATEST"
  propagate_tags          = "SERVICE"
  enable_ecs_managed_tags = true

  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  # NB: mostly Spot (interrupted jobs are re-queued); var.worker_on_demand_base on demand
  capacity_provider_strategy {
    capacity_provider = "FARGATE_SPOT"
    weight            = 4
  }

  capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
    base              = var.worker_on_demand_base
  }

  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.worker.id]
    assign_public_ip = false
  }

  lifecycle {
    ignore_changes = [desired_count]
  }

  depends_on = [aws_ecs_cluster_capacity_providers.main]
}

# --- autoscaling -------------------------------------------------------------------------
# NB: on CPU and memory here; scaling the workers on the queue length is what KEDA does in
# the Kubernetes deployment (k8s/base/worker.yaml)

resource "aws_appautoscaling_target" "api" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.main.name}/${aws_ecs_service.api.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.api_min_count
  max_capacity       = var.api_max_count
}

resource "aws_appautoscaling_target" "worker" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.main.name}/${aws_ecs_service.worker.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.worker_min_count
  max_capacity       = var.worker_max_count
}

locals {
  scaling_policies = {
    api-cpu = {
      target = aws_appautoscaling_target.api, metric = "ECSServiceAverageCPUUtilization", value = 60
    }
    api-memory = {
      target = aws_appautoscaling_target.api, metric = "ECSServiceAverageMemoryUtilization", value = 75
    }
    worker-cpu = {
      target = aws_appautoscaling_target.worker, metric = "ECSServiceAverageCPUUtilization", value = 60
    }
  }
}

resource "aws_appautoscaling_policy" "main" {
  for_each = local.scaling_policies

  name               = "${var.name}-${each.key}"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = each.value.target.service_namespace
  resource_id        = each.value.target.resource_id
  scalable_dimension = each.value.target.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = each.value.value
    scale_in_cooldown  = 300
    scale_out_cooldown = 60

    predefined_metric_specification {
      predefined_metric_type = each.value.metric
    }
  }
}
