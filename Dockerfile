# interlock: a small image running `interlock serve`.
#   docker build -t interlock .
#   docker run -p 4141:4141 -p 4142:4142 -v interlock-data:/data -e INTERLOCK_ADMIN_TOKEN=... interlock
# Config: docker/interlock.yaml, copied to /etc/interlock/interlock.yaml (INTERLOCK_SERVE_CONFIG):
# listen/admin on 0.0.0.0 (a container's loopback is useless), the store on the /data volume, the admin
# token from INTERLOCK_ADMIN_TOKEN. Your own: -e INTERLOCK_SERVE_CONFIG=/config/interlock.yaml
# -v ./config:/config:ro.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY interlock ./interlock
RUN python -m venv /opt/interlock \
 && /opt/interlock/bin/pip install ".[all]" \
 && find /opt/interlock -name '__pycache__' -prune -exec rm -rf {} +

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin interlock \
 && mkdir -p /data /config && chown interlock /data
COPY --from=build /opt/interlock /opt/interlock
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
# /ready answers 200 once config, policies and store are loaded; python is the only tool in the image.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:4142/ready', timeout=2).status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["interlock"]
CMD ["serve"]
