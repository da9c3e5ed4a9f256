//! Outbound network safety: THE one guard every tenant-chosen connection goes through (forge
//! APIs, git, HealthCheck probes; Plugins will reuse it).
//!
//! - [`guard`]: pure address and name classification ([`Guard::check_addr`], and
//!   [`Guard::check_addr_fixed_classes`] for a Service's own endpoints), resolve-once
//!   ([`Guard::resolve`], through `--dns-server` when set), the reqwest resolver
//!   ([`GuardResolver`]) and the same-origin redirect policy ([`redirect_policy`]). Built from
//!   the operator's settings: `Guard::from(&ctx.config.settings.network)`.
//! - [`proxy`]: a loopback HTTP CONNECT/forward proxy for libgit2 (which takes no resolver),
//!   bound to one remote authority and checking every target with the guard at connect time.
//!
//! - `test_dns` (tests only): an in-process DNS server answering from a table.
//!
//! Recipe for a new outbound client: build it with [`Guard::reqwest_builder`], call
//! [`Guard::check_url`] on its base URL (IP literals never reach a resolver), and map errors
//! with [`find_refusal`] so a refusal becomes the `OutboundRefused` category. A client that
//! connects by itself (`crate::health::probe`) calls [`Guard::resolve`] once and connects to
//! exactly the addresses it returns.

pub mod guard;
pub mod proxy;
#[cfg(test)]
pub mod test_dns;

pub use guard::{
    AddrClass, Guard, GuardResolver, RedirectDecision, Refusal, ResolveError, find_refusal,
    redirect_decision, redirect_policy, same_origin,
};
pub use proxy::{Authority, GitProxy};
