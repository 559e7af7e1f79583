# interlock: a small image running `interlock serve`, installed from uv.lock (hashes checked).
#   docker build -t interlock .
#   docker run -p 4141:4141 -p 4142:4142 -v interlock-data:/data -e INTERLOCK_ADMIN_TOKEN=... interlock
# Config: docker/interlock.yaml, copied to /etc/interlock/interlock.yaml (INTERLOCK_SERVE_CONFIG):
# listen/admin on 0.0.0.0 (a container's loopback is useless), the store on the /data volume, the admin
# token from INTERLOCK_ADMIN_TOKEN. Your own: -e INTERLOCK_SERVE_CONFIG=/config/interlock.yaml
# -v ./config:/config:ro.
# BASE: any Debian-like image with python3 (3.11+) and its venv module. Where no registry is reachable,
# `make image` builds one from Debian's mirror (docker/base.sh) and passes it here (docs/image.md).
ARG BASE=python:3.11-slim

# deps: uv (pinned by hash, as `make` installs it), then uv.lock's dependencies in a layer of their own,
# kept while uv.lock does not change. --locked: a pyproject.toml that disagrees with uv.lock fails the build.
FROM ${BASE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PROJECT_ENVIRONMENT=/opt/interlock UV_PYTHON=python3 UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy UV_NO_CACHE=1
# A machine whose HTTPS goes through its own CA passes that bundle as a build secret; it is never in a layer:
#   --secret id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt  (`make image` does).
ARG CA=/run/secrets/ca-certificates
COPY tools/uv.requirements.lock /tmp/uv.requirements.lock
RUN --mount=type=secret,id=ca-certificates \
    if [ -f "$CA" ]; then export PIP_CERT="$CA" SSL_CERT_FILE="$CA"; fi \
 && python3 -m venv /opt/uv && /opt/uv/bin/pip install -q --require-hashes --no-deps -r /tmp/uv.requirements.lock
WORKDIR /src
COPY pyproject.toml uv.lock ./
RUN --mount=type=secret,id=ca-certificates \
    if [ -f "$CA" ]; then export SSL_CERT_FILE="$CA"; fi \
 && /opt/uv/bin/uv sync --locked --no-dev --extra all --no-install-project

# build: interlock's own wheel (its build backend pinned in pyproject.toml's [tool.uv]).
FROM deps AS build
ARG CA=/run/secrets/ca-certificates
COPY README.md LICENSE ./
COPY interlock ./interlock
RUN --mount=type=secret,id=ca-certificates \
    if [ -f "$CA" ]; then export SSL_CERT_FILE="$CA"; fi \
 && /opt/uv/bin/uv build --quiet --wheel --out-dir /dist

FROM ${BASE}
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin interlock \
 && mkdir -p /data /config && chown interlock /data
COPY --from=deps /opt/interlock /opt/interlock
# interlock itself in a layer of its own (a code change does not copy the dependencies again), installed
# with the build stage's uv, which stays out of the image.
RUN --mount=type=bind,from=build,source=/,target=/build \
    /build/opt/uv/bin/uv pip install --quiet --no-cache --offline --no-deps --python /opt/interlock/bin/python \
    /build/dist/interlock-*.whl
COPY docker/interlock.yaml /etc/interlock/interlock.yaml
ENV PATH=/opt/interlock/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    INTERLOCK_SERVE_CONFIG=/etc/interlock/interlock.yaml \
    HF_HUB_OFFLINE=1 \
    TLDEXTRACT_CACHE=/data/.tldextract
USER interlock
WORKDIR /data
VOLUME ["/data"]
EXPOSE 4141 4142
# /ready answers 200 once config, policies and store are loaded and the guardrails engine is built; python
# is the only tool in the image. The admin port moved by INTERLOCK_SERVE_ADMIN_PORT is followed.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('INTERLOCK_SERVE_ADMIN_PORT') or '4142'; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/ready', timeout=2).status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["interlock"]
CMD ["serve"]
