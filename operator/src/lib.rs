//! Pullwarden: a Kubernetes operator that owns the pull-request loop.
//!
//! Architecture map (one module per concern):
//! - [`api`]: the custom resource types (`pullwarden.dev/v1alpha1`) and shared conditions.
//! - [`controller`]: one kube-runtime controller per kind, all sharing one [`context::Context`].
//! - [`forge`]: GitHub, GitLab, Gitea and plain-git providers behind one trait, with one API
//!   budget per credential.
//! - [`git`]: git2-based `ls-remote` and shallow fetches of preview templates.
//! - [`net`]: the outbound guard (SSRF): address checks, resolve-once, same-origin redirects,
//!   the loopback proxy that confines libgit2.
//! - [`gate`]: PolicyGate rule logic (pure).
//! - [`webhook`]: the inbound webhook ingress (signature checks, dedupe, routing).
//! - [`telemetry`]: logging and Prometheus metrics.
//! - [`settings`]: operator-level safety settings (flags) tenants cannot override.
pub mod api;
pub mod context;
pub mod controller;
pub mod error;
pub mod forge;
pub mod gate;
pub mod git;
pub mod health;
pub mod leader;
pub mod net;
pub mod render;
pub mod run;
pub mod server;
pub mod settings;
pub mod telemetry;
pub mod webhook;
