# syntax=docker/dockerfile:1
# Multi-stage image for the API and the scan workers.
#   CPU (API, small CPU workers): docker build -t unitscope .
#   CUDA (GPU workers):           docker build --build-arg TORCH_VARIANT=cuda -t unitscope:cuda .
# The CPU variant takes torch from PyTorch's CPU wheel index (no CUDA libraries, ~10x smaller);
# the CUDA variant takes PyPI's default torch wheels, which bundle the CUDA runtime, so the host
# only needs the NVIDIA driver and container toolkit.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VARIANT=cpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN if [ "$TORCH_VARIANT" = "cpu" ]; then \
        pip install --index-url "$TORCH_CPU_INDEX" torch==2.14.1 torchvision==0.29.1; \
    else \
        pip install torch==2.14.1 torchvision==0.29.1; \
    fi
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install .

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    UNITSCOPE_DATA_DIR=/data \
    PYTORCH_NVML_BASED_CUDA_CHECK=1
RUN groupadd --system --gid 10001 unitscope && useradd --system --uid 10001 --gid unitscope --home-dir /app unitscope \
    && mkdir -p /data /app && chown unitscope:unitscope /data /app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=unitscope:unitscope alembic.ini openapi.yaml ./
COPY --chown=unitscope:unitscope migrations ./migrations
COPY --chown=unitscope:unitscope docker/entrypoint.sh /usr/local/bin/unitscope-entrypoint
USER 10001:10001
EXPOSE 8000
VOLUME ["/data"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/v1/health', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["unitscope-entrypoint"]
CMD ["unitscope", "serve", "--host", "0.0.0.0", "--port", "8000"]
