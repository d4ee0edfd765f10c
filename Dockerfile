# safetel image for docker-compose.yml. Build: docker build -t safetel .
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libclang-dev libssl-dev pkg-config cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --bin safetel

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libstdc++6 libssl3 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/safetel /usr/local/bin/safetel
COPY config/default.toml /etc/safetel/safetel.toml
ENV SAFETEL_CONFIG=/etc/safetel/safetel.toml
ENTRYPOINT ["safetel"]
CMD ["run"]
