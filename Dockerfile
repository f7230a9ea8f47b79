# syntax=docker/dockerfile:1
# Precise MRD: the API, the Celery worker and the migration job, from one image.
#
#   docker build -t precise-mrd-api .
#   docker run -p 8000:8000 -e PRECISE_MRD_AUTH_MODE=api_key precise-mrd-api         # the API
#   docker run precise-mrd-api precise-mrd worker --concurrency 2                     # a worker
#   docker run precise-mrd-api precise-mrd db upgrade                                 # migrations
#
# The base is pinned by digest; refresh it with
#   docker buildx imagetools inspect python:3.11-slim-bookworm
# Dependencies are pinned by requirements.lock (the test environment's exact versions), used as
# constraints: the runtime and ML extras only; the deep-learning filter's torch is optional
# (--build-arg WITH_TORCH=1, the CPU wheel). The AWS Lambda functions run this image too, built
# with --build-arg EXTRAS=ml,aws (Mangum, the Lambda runtime client, boto3; see
# serverless/template.yaml) and started as `python -m awslambdaric <handler>`.
# The numba kernels are compiled at build time into /opt/numba-cache, which the runtime only
# reads: a new pod's first job does not compile, and a read-only root filesystem is fine.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

# checkov:skip=CKV_DOCKER_7:the base is ARG PYTHON_IMAGE above, pinned by tag and sha256 digest (checkov reads the ARG's name, not its value)
FROM ${PYTHON_IMAGE} AS build
ARG WITH_TORCH=0
ARG EXTRAS=ml
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    NUMBA_CACHE_DIR=/opt/numba-cache
RUN python -m venv /opt/venv
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY src ./src
# NB: the package with its runtime and ML dependencies, each at the lock's version (the lock
# also pins the test tools, which the image leaves out); torch only on request, CPU build
RUN if [ "$WITH_TORCH" = "1" ]; then \
        pip install --no-compile --extra-index-url https://download.pytorch.org/whl/cpu \
            -c requirements.lock ".[${EXTRAS},dl]"; \
    else \
        pip install --no-compile -c requirements.lock ".[${EXTRAS}]"; \
    fi \
    && precise-mrd warm-cache --cache-dir /opt/numba-cache

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="precise-mrd" \
      org.opencontainers.image.description="Tumour-informed ctDNA MRD detection: pipeline and job service" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 mrd \
    && useradd --system --uid 10001 --gid mrd --home-dir /data --no-create-home --shell /usr/sbin/nologin mrd \
    && mkdir -p /data \
    && chown mrd:mrd /data
# NB: the virtual environment and the kernel cache at the paths they were built at, with their
# files' times: the cache's index names the source files it was compiled from
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/numba-cache /opt/numba-cache
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/opt/numba-cache \
    PRECISE_MRD_DATA_DIR=/data \
    PRECISE_MRD_API_HOST=0.0.0.0 \
    PRECISE_MRD_API_PORT=8000 \
    PRECISE_MRD_WARM_KERNELS_ON_START=false
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
# NB: no curl in the image: the interpreter probes liveness itself
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=4).status != 200)"]
# NB: 0.0.0.0 without auth refuses to start: set PRECISE_MRD_AUTH_MODE (see docs/security.md)
CMD ["precise-mrd", "serve"]
