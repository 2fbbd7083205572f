# Multi-stage build: compile with the Rust toolchain, run from a slim image as a non-root user.
# Untested here (no Docker engine on the development machines); see README.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY data ./data
COPY openapi.yaml ./
RUN cargo build --release --locked --bin backprop-server

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin backprop
COPY --from=build /src/target/release/backprop-server /usr/local/bin/backprop-server
USER backprop
# Inside the container listen on every interface; publish with `docker run -p 8080:8080`.
ENV BACKPROP_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/backprop-server"]
