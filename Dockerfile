# syntax=docker/dockerfile:1
# The tickstream image: one binary, every role (`serve`, `engine`, `gateway`, `feed`, `load`).
#
#   docker build -t tickstream .
#   docker run --rm -p 8080:8080 tickstream serve
#
# Build stage: the toolchain rust-toolchain.toml names (rustup installs it from that file), the
# locked dependency graph (--locked), release profile. protoc is vendored (protoc-bin-vendored)
# and nothing links OpenSSL; the one extra package is `make`, which jemalloc's C build (the
# binary's allocator, tikv-jemalloc-sys) runs and the slim image lacks.
ARG RUST_IMAGE=rust:1-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
COPY rust-toolchain.toml ./
# Installs (and caches in its own layer) exactly the toolchain the file pins.
RUN rustup toolchain install && rustc --version && cargo --version
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tickstream --bin tickstream \
    && install -D -m 0755 target/release/tickstream /out/tickstream

FROM ${RUNTIME_IMAGE}
# A fixed, unprivileged uid/gid so volume permissions are predictable; no shell login, no home.
RUN groupadd --system --gid 10001 tickstream \
    && useradd --system --uid 10001 --gid tickstream --no-create-home --shell /usr/sbin/nologin tickstream
COPY --from=build /out/tickstream /usr/local/bin/tickstream
COPY deploy/healthcheck /usr/local/bin/tickstream-healthcheck
# Inside a container the defaults must listen on every interface, not loopback; flags and env
# given at `docker run` / in compose still win.
ENV TICKSTREAM_LISTEN=0.0.0.0:8080 \
    TICKSTREAM_GRPC_LISTEN=0.0.0.0:50051 \
    TICKSTREAM_METRICS_LISTEN=0.0.0.0:9090 \
    TICKSTREAM_LOG_FORMAT=json
# 8080: HTTP + WebSocket (serve, gateway; /metrics and /healthz there too);
# 50051: gRPC (engine); 9090: /metrics and /healthz (engine, feed).
EXPOSE 8080 50051 9090
USER tickstream:tickstream
# /healthz of whichever port this role serves: 8080 (serve, gateway), else 9090 (engine, feed).
# A gateway with no engine answers 503 and so is unhealthy, which is what an orchestrator needs.
# Liveness, not /readyz: swarm restarts unhealthy tasks, and an engine must not be restarted
# because Redis is away (it reconnects by itself). Balancers and readiness probes use /readyz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/tickstream-healthcheck"]
# Exec form: tickstream is PID 1 and receives SIGTERM itself; it installs SIGTERM/SIGINT
# handlers (so PID 1's default-ignore does not apply), closes WebSockets with 1001 and drains.
# No init (tini) is needed: tickstream starts no child processes, so there are no zombies to
# reap. Give `docker stop` more than the default 10 s: draining may take --shutdown-timeout
# (10 s) for HTTP connections and again for WebSockets (compose sets stop_grace_period: 30s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tickstream"]
CMD ["serve"]
