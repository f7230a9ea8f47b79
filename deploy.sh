#!/usr/bin/env bash
# Deploy Precise MRD.
#
#   ./deploy.sh --local-python [--port P] [--host H] [--log-level debug] [--reload]
#       One machine, zero services: creates .venv if needed (make venv), migrates the SQLite
#       database and serves the API on PRECISE_MRD_API_HOST:PRECISE_MRD_API_PORT (default
#       127.0.0.1:8000) with a local artifact directory and the local executor. Data lives under
#       PRECISE_MRD_DATA_DIR (default ./.precise_mrd_data). Ctrl-C stops it; running jobs are
#       re-queued and resume at the next start.
#   ./deploy.sh --local-docker     Docker Compose (compose.yaml: API, worker, PostgreSQL, Redis,
#                                  an S3 store) brought up and waited for until healthy.
#   ./deploy.sh --kubernetes [--overlay dev|staging|prod] [--image REF] [--render]
#                                  Migrate (the Job alone, waited for), then apply
#                                  k8s/overlays/<overlay> to the current kubectl context and wait
#                                  for the rollout; --image pins REGISTRY/NAME@sha256:... (or :TAG);
#                                  --render prints the manifests instead (no cluster needed).
#
# Feature switches (environment): ENABLE_ML_CALLING, ENABLE_DEEP_LEARNING (default true: a job
# may ask for an artefact filter; false makes such a request a 422 naming the variable),
# ENABLE_PARALLEL_PROCESSING (default true), MAX_CONCURRENT_JOBS, JOB_TIMEOUT_SECONDS,
# CLEANUP_OLD_JOBS_HOURS, PRECISE_MRD_LOG_LEVEL. The workers' compiled-kernel cache is
# NUMBA_CACHE_DIR (default PRECISE_MRD_DATA_DIR/numba-cache), filled once before serving.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

die() {
    echo "deploy.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
}

local_python() {
    command -v make >/dev/null 2>&1 || die "make is not installed; install it (apt-get install make) or run: python3 -m venv .venv && .venv/bin/pip install -r requirements.lock && .venv/bin/pip install --no-deps -e ."
    # NB: make venv is a no-op when .venv is up to date with pyproject.toml and the lock file.
    make --no-print-directory venv
    local python="$ROOT/.venv/bin/python"
    "$python" - <<'PY'
from precise_mrd.service.db import upgrade_database
from precise_mrd.service.settings import get_settings

from precise_mrd.pipeline.warmup import is_cache_warm, warm_kernel_cache

settings = get_settings()
upgrade_database(settings.database_url)
print(f"deploy.sh: database migrated ({settings.database_url}); artifacts in {settings.artifact_dir}")
if not is_cache_warm(settings.kernel_cache_dir):
    print(f"deploy.sh: compiling the pipeline's kernels into {settings.kernel_cache_dir} (once, ~40 s)", flush=True)
    warmed = warm_kernel_cache(settings.kernel_cache_dir)
    print(f"deploy.sh: kernels compiled in {warmed.seconds:.0f} s")
print(f"deploy.sh: serving on http://{settings.api_host}:{settings.api_port} (docs: /docs)")
PY
    exec "$python" -m precise_mrd.api "$@"
}

local_docker() {
    local plan="docker compose -f compose.yaml up -d --build --wait (the migration job, then the API on port ${PRECISE_MRD_API_PORT:-8000}, a Celery worker, PostgreSQL, Redis and SeaweedFS; compose.yaml)"
    command -v docker >/dev/null 2>&1 \
        || die "--local-docker needs Docker, but the docker command is not installed. Install Docker Engine (https://docs.docker.com/engine/install/) or use --local-python. It would have run: $plan"
    docker info >/dev/null 2>&1 \
        || die "--local-docker: no Docker engine is reachable (docker info failed). Start the Docker daemon (or set DOCKER_HOST) and retry, or use --local-python. It would have run: $plan"
    docker compose version >/dev/null 2>&1 \
        || die "--local-docker needs the Docker Compose plugin (docker compose version failed); install docker-compose-plugin. It would have run: $plan"
    [[ -f .env ]] || die "--local-docker: no .env; copy .env.example to .env and edit it"
    local secret
    for secret in database_url db_password s3_access_key s3_secret_key s3_config.json jwt_secret; do
        [[ -s "deploy/secrets/$secret" ]] \
            || die "--local-docker: deploy/secrets/$secret is missing; make the secrets as deploy/secrets/README.md shows"
    done
    docker compose -f compose.yaml up -d --build --wait "$@"
    echo "deploy.sh: the stack is healthy; the API: http://127.0.0.1:${PRECISE_MRD_API_PORT:-8000} (docs: /docs)"
}

render_overlay() {
    # Print the overlay's manifests, with the image replaced by $2 when given (a tag or a digest
    # reference: REGISTRY/NAME:TAG or REGISTRY/NAME@sha256:...), as they would be applied.
    local overlay="$1" image="${2:-}"
    if [[ -z "$image" ]]; then
        kubectl kustomize "k8s/overlays/$overlay"
        return
    fi
    local work name
    work="$(mktemp -d)"
    # NB: kustomize only loads files below the kustomization's root: copy the tree, then layer
    # an images: override on the overlay (the name its images: entry gives the image)
    cp -r k8s "$work/"
    name="$(sed -n 's/^ *newName: //p' "k8s/overlays/$overlay/kustomization.yaml" | head -n 1)"
    mkdir -p "$work/k8s/deploy"
    {
        echo "apiVersion: kustomize.config.k8s.io/v1beta1"
        echo "kind: Kustomization"
        echo "resources: [../overlays/$overlay]"
        echo "images:"
        echo "  - name: ${name:-precise-mrd-api}"
        if [[ "$image" == *@sha256:* ]]; then
            echo "    newName: ${image%@*}"
            echo "    digest: ${image#*@}"
        else
            echo "    newName: ${image%:*}"
            echo "    newTag: \"${image##*:}\""
        fi
    } > "$work/k8s/deploy/kustomization.yaml"
    kubectl kustomize "$work/k8s/deploy"
    rm -rf "$work"
}

kubernetes() {
    local overlay=dev image="" render=0
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --overlay) overlay="${2:-}"; shift 2 ;;
            --overlay=*) overlay="${1#--overlay=}"; shift ;;
            --image) image="${2:-}"; shift 2 ;;
            --image=*) image="${1#--image=}"; shift ;;
            --render) render=1; shift ;;
            *) die "--kubernetes: unknown option $1 (use --overlay dev|staging|prod, --image REF, --render)" ;;
        esac
    done
    [[ -d "k8s/overlays/$overlay" ]] \
        || die "--kubernetes: no overlay '$overlay'; use one of dev, staging, prod (k8s/overlays/)"
    if [[ -n "$image" && ! "$image" =~ ^[a-z0-9./_-]+(:[A-Za-z0-9._-]+|@sha256:[0-9a-f]{64})$ ]]; then
        die "--kubernetes: --image '$image' is not REGISTRY/NAME:TAG or REGISTRY/NAME@sha256:<64 hex>"
    fi
    local plan="kubectl apply -k k8s/overlays/$overlay${image:+ with the image $image} (the namespace and the migration Job first, waited for), then wait for the precise-mrd-api and precise-mrd-worker rollouts"
    command -v kubectl >/dev/null 2>&1 \
        || die "--kubernetes needs kubectl, which is not installed. Install it and point it at a cluster, or use --local-python. It would have run: $plan"
    if [[ "$render" == 1 ]]; then
        render_overlay "$overlay" "$image"
        return
    fi
    kubectl cluster-info --request-timeout=5s >/dev/null 2>&1 \
        || die "--kubernetes: no Kubernetes cluster is reachable from the current kubectl context ($(kubectl config current-context 2>/dev/null || echo none)). Check KUBECONFIG, or use --local-python. It would have run: $plan"
    local manifests namespace
    manifests="$(mktemp)"
    trap 'rm -f "$manifests"' RETURN
    render_overlay "$overlay" "$image" > "$manifests"
    namespace="$(sed -n 's/^  namespace: //p' "$manifests" | head -n 1)"
    kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f -
    kubectl -n "$namespace" get secret precise-mrd-secrets >/dev/null 2>&1 \
        || die "--kubernetes: the Secret precise-mrd-secrets is missing in namespace $namespace; make it as k8s/README.md shows"
    # NB: the migration first, alone, and waited for: the new pods start on the new schema. A
    # Job's template cannot change in place, so the previous run's Job is replaced.
    kubectl -n "$namespace" delete job precise-mrd-migrate --ignore-not-found
    kubectl apply -f "$manifests" -l app.kubernetes.io/name=precise-mrd-migrate
    kubectl -n "$namespace" wait --for=condition=complete job/precise-mrd-migrate --timeout=600s \
        || die "--kubernetes: the migration Job did not complete; see kubectl -n $namespace logs job/precise-mrd-migrate (nothing else was changed)"
    kubectl apply -f "$manifests"
    kubectl -n "$namespace" rollout status deployment/precise-mrd-api --timeout=600s
    kubectl -n "$namespace" rollout status deployment/precise-mrd-worker --timeout=600s
    echo "deploy.sh: overlay $overlay rolled out in namespace $namespace${image:+ with $image}"
}

mode="${1:-}"
[[ $# -gt 0 ]] && shift
case "$mode" in
    --local-python) local_python "$@" ;;
    --local-docker) local_docker "$@" ;;
    --kubernetes) kubernetes "$@" ;;
    -h | --help) usage ;;
    "") usage >&2; exit 2 ;;
    *) echo "deploy.sh: unknown mode '$mode'" >&2; usage >&2; exit 2 ;;
esac
