# Multi-stage build: compile with the Rust toolchain, run from a slim image as a non-root user.
# Untested here (no Docker engine on the development machines); see README.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The bench targets must exist for Cargo to read the manifest; they are not built.
COPY benches ./benches
# Compiled into the binary: the schema migrations (sqlx::migrate!), the built-in data and the
# dashboard's page (include_str!).
COPY migrations ./migrations
COPY data ./data
COPY web ./web
COPY openapi.yaml ./
# SQLite is compiled in (sqlx bundles it): the runtime image needs no database library.
RUN cargo build --release --locked --bin backprop-server

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin backprop \
    && mkdir -p /var/lib/backprop \
    && chown backprop:backprop /var/lib/backprop
COPY --from=build /src/target/release/backprop-server /usr/local/bin/backprop-server
USER backprop
# The default store is a SQLite file: keep it in a volume, writable by the server's user, so
# sessions outlive the container. For several replicas, set BACKPROP_DATABASE=postgres://...
# (compose.yaml does).
VOLUME /var/lib/backprop
WORKDIR /var/lib/backprop
ENV BACKPROP_DATABASE=sqlite:/var/lib/backprop/backprop.db
# Inside the container listen on every interface; publish with `docker run -p 8080:8080`.
ENV BACKPROP_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/backprop-server"]
