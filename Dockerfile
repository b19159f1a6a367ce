# blf-bridge container image.
#
#   docker build -t blf-bridge .
#   docker run -d --name blf-bridge --network host --restart unless-stopped \
#     --env-file /etc/blf-bridge/blf-bridge.env \
#     -v /etc/blf-bridge/blf-bridge.toml:/etc/blf-bridge/blf-bridge.toml:ro \
#     -v blf-bridge-state:/var/lib/blf-bridge blf-bridge
#
# Host networking is recommended: SIP carries addresses inside messages, and the
# phones must reach the bridge at the address it advertises (see README). The
# process runs as uid 10001: the mounted configuration must be readable by it
# (chgrp 10001 + chmod 0640); account passwords come from --env-file.
# The health check asks /readyz of [http] listen (blf-bridge health).

FROM rust:1-bookworm AS build
WORKDIR /src
# dependencies first, for layer caching
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
RUN mkdir src && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/.fingerprint/blf-bridge-* target/release/deps/*blf_bridge* \
       target/release/blf-bridge*
COPY src ./src
COPY profiles ./profiles
RUN touch src/lib.rs src/main.rs && cargo build --release --locked \
    && strip target/release/blf-bridge

FROM debian:bookworm-slim
# uid and gid 10001: a configuration with group 10001 and mode 0640 is readable
# ca-certificates: the system roots that [upstream] transport = "tls" trusts
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 blf \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin blf \
    && mkdir -p /etc/blf-bridge/profiles /var/lib/blf-bridge \
    && chown blf /var/lib/blf-bridge && chmod 0700 /var/lib/blf-bridge
COPY --from=build /src/target/release/blf-bridge /usr/local/bin/blf-bridge
COPY blf-bridge.example.toml /etc/blf-bridge/blf-bridge.example.toml
COPY profiles/*.toml /usr/share/blf-bridge/profiles/
# subscriptions, registrations and the flow-token key survive restarts here
ENV BLF_STATE_DIR=/var/lib/blf-bridge
VOLUME /var/lib/blf-bridge
USER blf
EXPOSE 5060/udp 5060/tcp 8080/tcp
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 \
    CMD ["blf-bridge", "health", "--config", "/etc/blf-bridge/blf-bridge.toml"]
ENTRYPOINT ["blf-bridge"]
CMD ["run", "--config", "/etc/blf-bridge/blf-bridge.toml"]
