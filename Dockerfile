# syntax=docker/dockerfile:1
# Two stages: the locked environment is built with uv, then copied into a slim runtime image.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
ENV UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/venv
RUN python -m pip install --no-cache-dir "uv==0.13.*"
WORKDIR /srv
# Dependencies first: this layer is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev

FROM python:${PYTHON_VERSION}-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/srv/app \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000
RUN groupadd --gid 10001 gateway && useradd --create-home --uid 10001 --gid 10001 gateway
WORKDIR /srv
COPY --from=builder /opt/venv /opt/venv
COPY app ./app
RUN mkdir -p logs benchmarks && chown 10001:10001 logs benchmarks
USER 10001:10001
VOLUME ["/srv/logs", "/srv/benchmarks"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]
CMD ["python", "-m", "src.serve"]
