# Pullwarden developer tasks. Start with `./dev --list` on a fresh machine (installs just).

set shell := ["bash", "-euo", "pipefail", "-c"]

# Build outputs live outside the checkout so clean clones (CI) reuse them.
export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", env_var("HOME") / ".cache/pullwarden/target")
export PULLWARDEN_CACHE := env_var_or_default("PULLWARDEN_CACHE", env_var("HOME") / ".cache/pullwarden")

# List recipes.
default:
    @just --list

# Build the operator and the test tools.
build:
    cargo build --workspace --bins

# Every test: formatting, clippy, unit tests and the end-to-end suite against a real local
# control plane, a real Gitea and a real Argo CD (built once from their Go modules into
# $PULLWARDEN_CACHE).
test: lint k8s-binaries helm-binary gitea-binary argocd-binary
    cargo build --workspace --bins
    cargo test --workspace --all-targets

# Unit tests only: no cluster, no external binaries (seconds once built).
test-unit:
    cargo test --workspace --lib --bins
    cargo test -p pullwarden --test crds

# The end-to-end scenarios matching FILTER (e.g. preview_recovery::healthy) on a local control plane.
e2e FILTER: k8s-binaries helm-binary gitea-binary argocd-binary
    cargo build --workspace --bins
    cargo test -p pullwarden-suite --test suite -- {{FILTER}}

# Formatting and clippy with warnings as errors.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Format the code.
fmt:
    cargo fmt --all

# Regenerate crds/ from the Rust types (a test fails when they drift) and refresh the chart's
# copies of the CRDs and RBAC rules.
crds:
    cargo run -q -p pullwarden -- crd --out-dir crds
    charts/sync-from-config.sh

# Build etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and kwok once.
k8s-binaries:
    e2e/scripts/build-k8s.sh

# Build the pinned Gitea once from its Go module (the real-forge scenarios use it).
gitea-binary:
    e2e/scripts/build-gitea.sh

# Build helm once from its Go module (chart tests use it).
helm-binary:
    e2e/scripts/build-helm.sh

# Build the Argo CD application controller and repo-server once from their Go module (the
# `delivery: argocd` scenarios run them; first time ≈ 7 min) and install redis-server if missing.
argocd-binary:
    e2e/scripts/build-argocd.sh

# helm, built from its Go module.
helm *ARGS:
    "$(e2e/scripts/build-helm.sh)" {{ARGS}}

# Copy crds/ and config/rbac rules into the Helm chart (a test fails when they drift).
chart-sync:
    charts/sync-from-config.sh

# Start a local control plane (etcd, apiserver, controller-manager, scheduler, kwok nodes).
# Use: eval "$(just cluster-up | tail -n 1)"
cluster-up *ARGS:
    e2e/scripts/cluster-up.sh {{ARGS}}

# Stop the local control plane started by cluster-up.
cluster-down *ARGS:
    e2e/scripts/cluster-down.sh {{ARGS}}

# kubectl built from the same Kubernetes release as the local control plane.
kubectl *ARGS:
    "$(e2e/scripts/build-k8s.sh)/kubectl" {{ARGS}}

# Run the forge emulator (GitHub, GitLab and Gitea stand-in) on a local port.
emulator *ARGS:
    cargo run -q -p pullwarden-emulator --bin forge-emulator -- {{ARGS}}

# Benchmarks run the operator as a release build (what users deploy); the harness and the
# emulator stay debug builds.
#
# Benchmark: requests per poll cycle, quota spent and operator memory for 1,000 unchanged
# repositories behind one credential (JSON on stdout).
bench-poll *ARGS: k8s-binaries
    cargo build -q --release -p pullwarden
    cargo build -q -p pullwarden-bench --bins
    PULLWARDEN_BIN="$CARGO_TARGET_DIR/release/pullwarden" "$CARGO_TARGET_DIR/debug/bench-poll" {{ARGS}}

# Benchmark: per preview lifetime (open → Ready → push → Ready → close), the timings and the
# kube-apiserver (audit log), forge and operator-log counts of each phase; operator RSS (JSON).
bench-preview *ARGS: k8s-binaries
    cargo build -q --release -p pullwarden
    cargo build -q -p pullwarden-bench --bin bench-preview
    PULLWARDEN_BIN="$CARGO_TARGET_DIR/release/pullwarden" "$CARGO_TARGET_DIR/debug/bench-preview" {{ARGS}}

# Benchmark: the webhook server under slowloris, slow-body, pinning and connection-flood attacks
# on loopback: operator peak RSS and the latency of valid signed deliveries meanwhile (JSON).
bench-webhook *ARGS: k8s-binaries
    cargo build -q --release -p pullwarden
    cargo build -q -p pullwarden-bench --bins
    PULLWARDEN_BIN="$CARGO_TARGET_DIR/release/pullwarden" "$CARGO_TARGET_DIR/debug/bench-webhook" {{ARGS}}

# Benchmark: 5,000 HealthChecks at a 10 s interval against a loopback HTTP server: operator CPU
# cores and RSS above idle, probe start-delay p50/p99, probes per second, status writes per
# minute (JSON; docs/benchmarks.md). Small trial: just bench-health --checks 200 --window 30s
bench-health *ARGS: k8s-binaries
    cargo build -q --release -p pullwarden
    cargo build -q -p pullwarden-bench --bin bench-health
    PULLWARDEN_BIN="$CARGO_TARGET_DIR/release/pullwarden" "$CARGO_TARGET_DIR/debug/bench-health" {{ARGS}}

# Benchmark: the secretScan patterns' false positives on the local cargo registry's source (every
# line treated as added) and their detection rate on generated fake credentials (JSON).
bench-secrets *ARGS:
    cargo run -q --release -p pullwarden --example bench-secrets -- {{ARGS}}

# Benchmark: PolicyGate evaluation in process — evaluations per second, p50/p99 per evaluation
# and compile time for a generated 200-file pull request and 13 rules, plus each rule alone (JSON).
bench-gate *ARGS: k8s-binaries
    cargo run -q --release -p pullwarden-bench --bin bench-gate -- {{ARGS}}
    cargo build -q --release -p pullwarden
    cargo build -q -p pullwarden-bench --bin bench-gate-forge
    PULLWARDEN_BIN="$CARGO_TARGET_DIR/release/pullwarden" "$CARGO_TARGET_DIR/debug/bench-gate-forge"
    PULLWARDEN_BIN="$CARGO_TARGET_DIR/release/pullwarden" "$CARGO_TARGET_DIR/debug/bench-gate-forge" --without-checks

# The whole loop on this machine: local control plane + forge emulator + Pullwarden + examples,
# a pull request opened in the emulator, its preview URL and status printed. Ctrl-C stops it.
demo *ARGS: k8s-binaries
    cargo build -q -p pullwarden -p pullwarden-bench --bins
    "$CARGO_TARGET_DIR/debug/demo" {{ARGS}}
