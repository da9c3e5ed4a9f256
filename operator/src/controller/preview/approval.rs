//! A fork pull request's newer head waiting for approval (`spec.unapprovedHeadSha`, set by the
//! Repository controller under `forks: requireApproval`, see
//! [`crate::controller::repository::approval`]).
//!
//! Nothing of the new head is fetched, rendered or applied. What the last approved head
//! (`spec.headSha`) deployed stays as it is — it was approved — and TTL expiry still applies to
//! it. The phase is `WaitingForApproval`, and the pull request says so once per waiting head:
//! a pending commit status on the new head and the sticky comment, which tell a maintainer how
//! to approve it.

use super::plan::short;
use crate::api::{self, PreviewEnvironmentStatus, PreviewPhase, Repository};
use crate::controller::repository::approval::OK_TO_PREVIEW;

/// What the preview says while `pending` waits. `deployed`: the approved revision still
/// running, with its URL.
pub fn waiting_message(
    pending: &str,
    deployed: Option<(&str, Option<&str>)>,
    trust_label: &str,
) -> String {
    let running = match deployed {
        Some((sha, Some(url))) => format!(" {} (approved) stays deployed at {url}.", short(sha)),
        Some((sha, None)) => format!(" {} (approved) stays deployed.", short(sha)),
        None => " Nothing is deployed.".to_string(),
    };
    format!(
        "new head {} from the fork is not deployed: a trusted user must approve this head after \
         it was pushed.{running} To approve it, comment {OK_TO_PREVIEW} on a line of its own (not \
         in a code block or quote), or remove and add the label {trust_label} again.",
        short(pending)
    )
}

/// What a preview says while its fork's head `pending` waits for approval (the trust label
/// comes from the Repository's pull-request selector).
pub(super) fn message(
    repo: &Repository,
    status: &PreviewEnvironmentStatus,
    pending: &str,
) -> String {
    let deployed = status
        .deployed_sha
        .as_deref()
        .filter(|_| status.phase != PreviewPhase::Expired && !status.inventory.is_empty())
        .map(|sha| (sha, status.url.as_deref()));
    let trust_label = repo
        .spec
        .pull_requests
        .as_ref()
        .map(|p| p.trust_label.clone())
        .unwrap_or_else(|| api::PullRequestSelector::default().trust_label);
    waiting_message(pending, deployed, &trust_label)
}
