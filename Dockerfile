# syntax=docker/dockerfile:1
# The Pullwarden operator image: `docker build -t ghcr.io/pullwarden/pullwarden:0.1.0 .`
#
# Runtime libraries (from `ldd` of the binary): libssl3 + libcrypto3 (git2's https transport and
# libssh2 link OpenSSL dynamically), libz, libgcc_s, libm, libc. gcr.io/distroless/cc-debian12
# ships all of them except zlib, so zlib is linked statically (LIBZ_SYS_STATIC=1) and the builder
# is Debian 12 (bookworm) too, so the glibc and OpenSSL the binary was linked against match.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
ENV LIBZ_SYS_STATIC=1 \
    CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

# 1. Dependencies only. The workspace manifests, the lock file and stub targets: this layer is
#    rebuilt only when Cargo.toml/Cargo.lock change, not on every source edit.
COPY Cargo.toml Cargo.lock ./
COPY operator/Cargo.toml operator/Cargo.toml
COPY e2e/emulator/Cargo.toml e2e/emulator/Cargo.toml
COPY e2e/harness/Cargo.toml e2e/harness/Cargo.toml
COPY e2e/bench/Cargo.toml e2e/bench/Cargo.toml
COPY e2e/suite/Cargo.toml e2e/suite/Cargo.toml
# Every workspace member needs its targets to exist for cargo to read the workspace.
RUN mkdir -p operator/src e2e/emulator/src/bin e2e/harness/src e2e/bench/src/bin e2e/suite/tests/suite \
 && echo 'fn main() {}' > operator/src/main.rs \
 && touch operator/src/lib.rs e2e/emulator/src/lib.rs e2e/harness/src/lib.rs e2e/bench/src/lib.rs \
          e2e/suite/tests/suite/main.rs \
 && for b in e2e/emulator/src/bin/forge-emulator e2e/bench/src/bin/bench-poll e2e/bench/src/bin/bench-preview \
             e2e/bench/src/bin/bench-webhook e2e/bench/src/bin/demo; do echo 'fn main() {}' > "$b.rs"; done \
 && cargo build --release --locked -p pullwarden \
 && rm -rf operator/src

# 2. The operator itself. COPY keeps the files' original mtimes, which can be older than the stub
#    build above; touch them so cargo never mistakes the stub binary for an up-to-date one.
COPY operator/src operator/src
RUN find operator/src -name '*.rs' -exec touch {} + \
 && cargo build --release --locked -p pullwarden \
 && cp target/release/pullwarden /pullwarden

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /pullwarden /pullwarden
# The same non-root identity as the manifests' securityContext (runAsUser/runAsGroup 65532).
USER 65532:65532
# Admin (/metrics, /healthz, /readyz) and forge webhooks.
EXPOSE 8080 8081
ENTRYPOINT ["/pullwarden"]
CMD ["run"]
