# Multi-stage build: compile in the Rust image, run from a small Debian image as a non-root
# user. The same image runs every role: `serve`, `edge`, `worker`.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p switchboard \
 && cp target/release/switchboard /switchboard

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home switchboard
COPY --from=build /switchboard /usr/local/bin/switchboard
COPY deploy/examples /etc/switchboard
USER switchboard
ENV SWITCHBOARD_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["switchboard"]
CMD ["serve"]
