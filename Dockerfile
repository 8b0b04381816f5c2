# The recommend service: `docker build -t loyalty-offers . && docker run -p 8000:8000 loyalty-offers`.
# Configure with RECSYS_* variables (see serving/config.py), e.g. RECSYS_REDIS_URL / REDIS_URL,
# RECSYS_DATABASE_URL=postgresql+psycopg://..., RECSYS_MLFLOW_TRACKING_URI=http://mlflow:5000.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OPENBLAS_NUM_THREADS=1 \
    MKL_NUM_THREADS=1

# libgomp: OpenMP runtime of implicit/faiss wheels.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 app
WORKDIR /app

# The package with its dependencies (one layer: building the wheel needs the code, so a code change
# reinstalls the dependencies too; pip's wheels come from the registry each time).
COPY pyproject.toml README.md ./
COPY recsys ./recsys
COPY training ./training
COPY serving ./serving
RUN pip install .

# The cap policy read at start-up (RECSYS_CAPPING_POLICY_PATH) and the var/ directory of the embedded defaults.
COPY config ./config
RUN mkdir -p /app/var && chown -R app:app /app/var
USER app

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"

CMD ["python", "-m", "serving"]
