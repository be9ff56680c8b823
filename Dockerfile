# ironbridge container image.
# Build:  docker build -t ironbridge .
# Run:    docker run -d -p 8080:8080 -v $PWD/config:/config:ro -v ironbridge-state:/state \
#           -e IRONCLAD_CLIENT_SECRET=... ironbridge
#         (the default command is `serve --config /config/ironbridge.toml`; its [serve] listen
#         must be 0.0.0.0:8080 and its [state] path and audit_log under /state, see
#         docs/serve.md). One-shot commands work too:
#         docker run --rm -v ... ironbridge check --config /config/ironbridge.toml
#
# Stage 1 builds the release binary; stage 2 holds only `ironbridge` on a small Debian base,
# running as an unprivileged user.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY mappings ./mappings
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --bin ironbridge \
 && strip target/release/ironbridge

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 ironbridge \
 && useradd --system --uid 10001 --gid ironbridge --home-dir /state --shell /usr/sbin/nologin ironbridge \
 && mkdir -p /state /config \
 && chown ironbridge:ironbridge /state
COPY --from=build /src/target/release/ironbridge /usr/local/bin/ironbridge
COPY mappings /usr/share/ironbridge/mappings
USER 10001:10001
WORKDIR /state
VOLUME ["/state", "/config"]
EXPOSE 8080
# The runtime image has no curl: the binary probes itself.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/ironbridge", "health", "--url", "http://127.0.0.1:8080/healthz"]
# SIGTERM stops `serve` gracefully (it finishes the write in flight; see docs/serve.md).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ironbridge"]
CMD ["serve", "--config", "/config/ironbridge.toml"]
