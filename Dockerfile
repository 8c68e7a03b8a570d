# syntax=docker/dockerfile:1
# streamproxy container: `docker build -t streamproxy .`, then for example
#   docker run -p 8080:8080 -e STREAMPROXY_AUTH_TOKENS="$(openssl rand -base64 32)" \
#     -e STREAMPROXY_STORAGE=s3://my-recordings/calls/ -e AWS_REGION=eu-central-1 streamproxy
# The image listens on 0.0.0.0, so it refuses to start (exit 2) without an upload token of at least
# 16 characters: STREAMPROXY_AUTH_TOKENS, or a mounted file named by STREAMPROXY_AUTH_TOKEN_FILE.
# Arguments after the image name go to `streamproxy serve`; other commands run with
#   docker run --entrypoint streamproxy streamproxy check   (or: sweep --older-than 24h --dry-run)
# Built and run in CI with podman by deploy/image-test.sh (base image from mmdebstrap: PYTHON_IMAGE).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build stage: the project's wheel and a wheel for every dependency, so the final stage installs
# offline and never needs a compiler or network access. pip's cache is a build cache mount, never a
# layer: a change to the source rebuilds without downloading every dependency again.
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamproxy ./streamproxy
RUN --mount=type=cache,target=/root/.cache/pip pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="streamproxy" \
      org.opencontainers.image.description="Stream call recordings from an IVR platform's REST uploads into S3 or a filesystem, with bounded memory." \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/streamproxy/bin:$PATH \
    STREAMPROXY_HOST=0.0.0.0 \
    STREAMPROXY_PORT=8080 \
    STREAMPROXY_LOG_FORMAT=json

# The wheels are bind-mounted, not copied: they never become a layer of this image. pip and
# setuptools leave the venv once it is filled.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/streamproxy \
    && /opt/streamproxy/bin/pip install --no-cache-dir --no-index --find-links /wheels streamproxy \
    && /opt/streamproxy/bin/python -m pip uninstall --yes pip setuptools \
    && groupadd --system --gid 10001 streamproxy \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/streamproxy --create-home \
       --shell /usr/sbin/nologin streamproxy

# The default storage (file://./recordings) lands in /var/lib/streamproxy/recordings; mount a
# volume there, or set STREAMPROXY_STORAGE=s3://bucket/prefix/.
WORKDIR /var/lib/streamproxy
USER 10001:10001
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('STREAMPROXY_PORT', '8080') + '/healthz', timeout=4)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["streamproxy", "serve"]
