# swarmd app image: the API and the workflow worker (`swarmd serve`, port 8000).
#
#   docker build -t ghcr.io/swarmd/swarmd:0.1.0 .
#
# Two stages: the build stage installs the package and its pinned
# dependencies (constraints.txt) into a virtualenv; the runtime stage copies
# only that virtualenv onto the same slim base and runs as a non-root user.
# No secret is baked in: credentials come from the environment at run time
# (the Helm chart maps them from a Kubernetes Secret).
# Pinned by exact tag; pin by digest too (FROM python:...@sha256:...) where
# the build can resolve it.

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The whole build context (trimmed by .dockerignore): pyproject.toml maps
# workflows/, activities/ and watchdog/ into the swarmd package (package-dir).
COPY . .
RUN pip install -c constraints.txt .
# Compile the python tool's WebAssembly interpreter once, here, so no pod pays for it
# (a node whose CPU cannot load it recompiles in memory; see docs/sandbox.md).
RUN python -m swarmd.activities.sandbox --cache-dir /opt/sandbox-cache

FROM python:3.11.14-slim-bookworm
RUN groupadd --system --gid 10001 swarmd \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin swarmd
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/sandbox-cache /opt/sandbox-cache
ENV PATH=/opt/venv/bin:$PATH \
    SWARMD_SANDBOX_CACHE_DIR=/opt/sandbox-cache \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000
CMD ["swarmd", "serve"]
