# Builds all voice-push programs; the compose file runs each with its own command.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --workspace --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/cdr-pusher /src/target/release/status-pusher /src/target/release/callsim /usr/local/bin/
COPY config /app/config
WORKDIR /app
