# syntax=docker/dockerfile:1
# One image for the Joule Ledger agent (DaemonSet) and operator (Deployment): `jouleledger agent|operator ...`.
#   docker build -t jouleledger/jouleledger:0.1.0 .

# --- builder: the package and every dependency as wheels ---------------------------------------------------------
FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY operator ./operator
RUN python -m pip wheel --wheel-dir /wheels .

# --- runtime: slim Python, the wheels installed, no compiler, no sources -----------------------------------------
FROM python:3.11-slim AS runtime
LABEL org.opencontainers.image.title="jouleledger" \
      org.opencontainers.image.description="Kubernetes energy and carbon accounting for AI workloads" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links=/wheels jouleledger \
    && groupadd --system --gid 65532 jouleledger \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin jouleledger
# The operator runs as this user; the agent's pod spec runs it as root without capabilities (see the chart).
USER 65532:65532
EXPOSE 9470 9471
ENTRYPOINT ["jouleledger"]
CMD ["--help"]
