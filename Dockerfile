# safetel image for docker-compose.yml. Build: docker build -t safetel .
# tests/deploy.rs checks the properties below (no Docker engine runs in CI).
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libclang-dev libssl-dev pkg-config cmake && rm -rf /var/lib/apt/lists/*
# A stripped binary without debug info (432 MB unstripped, about 19 MB stripped). Set before the
# dependency layer, so both builds use the same profile and the cached dependencies are reused.
ENV CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=symbols
WORKDIR /src
# Dependency layer: the manifest, the lock file and placeholder sources, so that librdkafka,
# RocksDB and the other dependencies are built once and a change under src/ does not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY benches benches
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin safetel \
    && rm -rf src target/release/safetel target/release/deps/safetel-* target/release/deps/libsafetel-* \
       target/release/.fingerprint/safetel-*
# The project itself.
COPY config config
COPY schemas schemas
COPY src src
RUN cargo build --release --locked --bin safetel

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libstdc++6 libssl3 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/safetel --shell /usr/sbin/nologin safetel \
    && mkdir -p /var/lib/safetel && chown safetel:safetel /var/lib/safetel
COPY --from=build /src/target/release/safetel /usr/local/bin/safetel
COPY config/default.toml /etc/safetel/safetel.toml
# Inside a container the HTTP server must listen on every interface (the built-in default,
# 127.0.0.1, would make the published port answer nothing); state and snapshots in the volume.
ENV SAFETEL_CONFIG=/etc/safetel/safetel.toml \
    SAFETEL_HTTP__LISTEN=0.0.0.0:9464 \
    SAFETEL_STATE__DIR=/var/lib/safetel/state \
    SAFETEL_REFIT__WAREHOUSE_DIR=/var/lib/safetel/warehouse
USER safetel:safetel
WORKDIR /var/lib/safetel
VOLUME /var/lib/safetel
EXPOSE 9464
# The slim image has no curl: bash's /dev/tcp asks /health/live (liveness: a broker outage is
# not a reason to restart) and wants a 200 status line.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9464 && printf 'GET /health/live HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["safetel"]
CMD ["run"]
