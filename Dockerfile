# syntax=docker/dockerfile:1
# The server image: ONNX only at runtime (no scikit-learn, no pickles), non-root, health-checked.

FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY ext ext
COPY serving serving
# The runtime environment: the server, its compiled kernels, boto3 (s3:// registries) and
# OpenTelemetry (serve --tracing).
RUN python -m venv /opt/serving \
 && /opt/serving/bin/pip install --no-cache-dir ".[s3,otel,grpc]"
# A throwaway environment with the packaging extras builds the example registry.
RUN python -m venv /opt/pack \
 && /opt/pack/bin/pip install --no-cache-dir ".[packaging]" \
 && /opt/pack/bin/serving examples --registry /models

FROM python:3.11-slim AS runtime
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin serving
COPY --from=build /opt/serving /opt/serving
COPY --from=build --chown=serving:serving /models /models
ENV PATH=/opt/serving/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SERVING_HOST=0.0.0.0 \
    SERVING_PORT=8000 \
    SERVING_REGISTRY=/models
USER serving
EXPOSE 8000 8001
# Model control and rollout changes answer 403 until an admin token is set
# (`docker run -e SERVING_ADMIN_TOKEN=...`); --admin-open is refused on 0.0.0.0.
# Liveness, not readiness: /v2/health/ready turns 503 while saturated or draining, and an
# orchestrator that replaces unhealthy containers (ECS, Swarm) must not kill a busy server.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/v2/health/live', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["serving", "serve"]
CMD ["--registry", "/models", "--port", "8000"]
