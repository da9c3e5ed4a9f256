//! Outbound network safety: THE one guard every tenant-chosen connection goes through (forge
//! APIs, git; HealthChecks and Plugins reuse it).
//!
//! - [`guard`]: pure address and name classification ([`Guard::check_addr`]), resolve-once
//!   ([`Guard::resolve`]), the reqwest resolver ([`GuardResolver`]) and the same-origin redirect
//!   policy ([`redirect_policy`]). Built from the operator's settings:
//!   `Guard::from(&ctx.config.settings.network)`.
//! - [`proxy`]: a loopback HTTP CONNECT/forward proxy for libgit2 (which takes no resolver),
//!   bound to one remote authority and checking every target with the guard at connect time.
//!
//! Recipe for a new outbound client: build it with [`Guard::reqwest_builder`], call
//! [`Guard::check_url`] on its base URL (IP literals never reach a resolver), and map errors
//! with [`find_refusal`] so a refusal becomes the `OutboundRefused` category.

pub mod guard;
pub mod proxy;
#[cfg(test)]
pub mod test_dns;

pub use guard::{
    AddrClass, Guard, GuardResolver, RedirectDecision, Refusal, ResolveError, find_refusal,
    redirect_decision, redirect_policy, same_origin,
};
pub use proxy::{Authority, GitProxy};
