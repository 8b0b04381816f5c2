# syntax=docker/dockerfile:1
# The recommend service.
#   docker build -t loyalty-offers .
#   docker run -p 8000:8000 -e RECSYS_ENV=production -e RECSYS_ADMIN_API_KEY=... -e RECSYS_TRACKING_SECRET=... \
#     -e RECSYS_MLFLOW_TRACKING_URI=http://mlflow:5000 -e RECSYS_REDIS_URL=redis://redis:6379/0 \
#     -e RECSYS_DATABASE_URL=postgresql+psycopg://user@db/offers -e RECSYS_WORKERS=4 loyalty-offers
# The model is loaded from the MLflow registry at start (RECSYS_MLFLOW_TRACKING_URI), or baked in at build time:
#   docker build --build-arg MODEL_TRACKING_URI=http://mlflow:5000 -t loyalty-offers .
# copies MODEL_NAME@MODEL_ALIAS into a registry inside the image, served when RECSYS_MLFLOW_TRACKING_URI is unset.
# Dependencies: requirements.lock only (pinned, hash-checked; `make lock` writes it). tests/test_image.py installs
# the same lock in a fresh virtual environment and starts it with this CMD and HEALTHCHECK.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A compiler for the locked packages published only as source (rectools-lightfm).
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential=12.9 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The locked dependencies' wheels: every download checked against the lock's hashes (a source package before
# it is built), nothing else (--no-deps); this layer is rebuilt only when the lock changes.
COPY requirements.lock ./
RUN pip wheel --require-hashes --no-deps --wheel-dir /wheels -r requirements.lock
# The project's own wheel.
COPY pyproject.toml README.md ./
COPY recsys ./recsys
COPY training ./training
COPY serving ./serving
RUN pip wheel --no-deps --wheel-dir /project .

# ---------------------------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OPENBLAS_NUM_THREADS=1 \
    MKL_NUM_THREADS=1

# libgomp1: the OpenMP runtime of the implicit, faiss and lightgbm wheels (pinned to the base's Debian release).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1=12.2.0-14+deb12u1 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --gid 10001 app && useradd --no-log-init --create-home --uid 10001 --gid app app
WORKDIR /app

# Only the runtime dependencies: the builder's wheels of the lock (checked there; a wheel built from source
# cannot match the source's hash), the project's own, nothing from an index, no dependency resolved here; the
# wheels are mounted, not copied, so no layer keeps them. `pip check`: the set is complete and consistent.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    --mount=type=bind,from=builder,source=/project,target=/project \
    pip install --no-index --no-deps /wheels/*.whl /project/*.whl \
    && pip check

# The cap policy (RECSYS_CAPPING_POLICY_PATH defaults to config/caps.yaml) and the writable var/ and model/.
COPY config ./config
RUN mkdir -p /app/var /app/model && chown app:app /app/var /app/model
# Numeric, so that a runtime enforcing non-root (Kubernetes runAsNonRoot) can check it without /etc/passwd.
USER 10001:10001

# Baked model (optional): MODEL_TRACKING_URI must be reachable from the build.
ARG MODEL_TRACKING_URI=""
ARG MODEL_NAME=loyalty-offers
ARG MODEL_ALIAS=champion
RUN if [ -n "$MODEL_TRACKING_URI" ]; then \
        recsys models copy --tracking-uri "$MODEL_TRACKING_URI" --model-name "$MODEL_NAME" \
            --alias "$MODEL_ALIAS" --to sqlite:////app/model/mlflow.db; \
    fi

ENV RECSYS_MLFLOW_TRACKING_URI=sqlite:////app/model/mlflow.db \
    RECSYS_MODEL_NAME=${MODEL_NAME} \
    RECSYS_MODEL_ALIAS=${MODEL_ALIAS} \
    RECSYS_HOST=0.0.0.0 \
    RECSYS_PORT=8000 \
    RECSYS_WORKERS=2

EXPOSE 8000
# Readiness, not liveness: a model loaded and Redis and the event log answering (a model load takes a while).
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "serving.healthcheck"]

CMD ["python", "-m", "serving"]
