# syntax=docker/dockerfile:1
# The `ridgeline` binary in two images, from one multi-stage file:
#
#     docker build --target cpu  -t ridgeline:latest .
#     docker build --target cuda -t ridgeline-cuda:latest --build-arg CUDA_COMPUTE_CAP=90 .
#
# Both run as an unprivileged user (65532) and write nothing outside the volumes the
# deployment mounts (deploy/k8s runs them with a read-only root file system). The build
# needs no protoc and no system libraries: the .proto files are compiled in Rust and
# SQLite is bundled. CUDA_COMPUTE_CAP is the GPUs' compute capability (90: H100/H200,
# 80: A100, 89: L4/L40S); candle compiles its kernels for it (about 12 min on 2 cores).
ARG RUST_VERSION=1.85
ARG CUDA_VERSION=12.6.3

# ---- CPU build and image -----------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=ridgeline-target-cpu \
    cargo build --release --locked --bin ridgeline \
    && strip -o /ridgeline target/release/ridgeline

FROM debian:bookworm-slim AS cpu
# python3 runs the command-trial examples; bring your own training stack on top
# (FROM ridgeline, pip install ...).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /ridgeline /usr/local/bin/ridgeline
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["ridgeline"]
CMD ["--help"]

# ---- CUDA build and image ----------------------------------------------------------
FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu24.04 AS build-cuda
ARG RUST_VERSION
ARG CUDA_COMPUTE_CAP=90
ENV CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP} \
    PATH=/root/.cargo/bin:${PATH}
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl build-essential \
    && rm -rf /var/lib/apt/lists/* \
    && curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain "${RUST_VERSION}"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/root/.cargo/registry \
    --mount=type=cache,target=/src/target,id=ridgeline-target-cuda \
    cargo build --release --locked --features cuda --bin ridgeline \
    && strip -o /ridgeline target/release/ridgeline

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu24.04 AS cuda
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build-cuda /ridgeline /usr/local/bin/ridgeline
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["ridgeline"]
CMD ["--help"]
