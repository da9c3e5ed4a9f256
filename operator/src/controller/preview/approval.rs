//! A fork pull request's newer head waiting for approval (`spec.unapprovedHeadSha`, set by the
//! Repository controller under `forks: requireApproval`, see
//! [`crate::controller::repository::approval`]).
//!
//! Nothing of the new head is fetched, rendered or applied. What the last approved head
//! (`spec.headSha`) deployed stays as it is — it was approved — and TTL expiry still applies to
//! it. The phase is `WaitingForApproval`, and the pull request says so once per waiting head:
//! a pending commit status on the new head and the sticky comment, which tell a maintainer how
//! to approve it.

use super::{Progress, Reporter, Target, short};
use crate::api::{self, Outcome, PreviewEnvironment, PreviewPhase, Repository};
use crate::context::Context;
use crate::controller::publish;
use crate::controller::repository::approval::OK_TO_PREVIEW;
use crate::error::Error;
use crate::forge::Forge;
use crate::render::ReportState;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::time::Duration;

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

/// Reports `pending` as waiting for approval and leaves the deployment alone. Requeues after
/// `recheck` so a TTL still expires the approved deployment.
#[allow(clippy::too_many_arguments)]
pub(super) async fn wait(
    ctx: &Context,
    forge: &dyn Forge,
    pe: &PreviewEnvironment,
    repo: &Repository,
    mut progress: Progress<'_>,
    target: &Target,
    preview_ns: &str,
    pending: &str,
    recheck: Duration,
) -> Result<Action, Error> {
    let status = &progress.status;
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
    let message = waiting_message(pending, deployed, &trust_label);
    let first = !super::writeback::already_reported(
        progress.status.reported.as_ref(),
        pending,
        super::writeback::WriteState::Pending,
    );
    Reporter::new(
        forge,
        pe,
        pending,
        &target.branch,
        preview_ns,
        target.number,
    )
    .say(
        &mut progress.status.reported,
        ReportState::WaitingForApproval,
        &message,
        None,
        &[],
    )
    .await?;
    progress.set(
        PreviewPhase::WaitingForApproval,
        Outcome::progressing("WaitingForApproval", message.clone()),
        None,
        message.clone(),
    );
    // Waiting on a person, not working: kstatus must not read it as in progress.
    api::remove_condition(&mut progress.status.common.conditions, api::RECONCILING);
    if first {
        publish(
            ctx,
            pe,
            EventType::Normal,
            "WaitingForApproval",
            "Deploy",
            &message,
        )
        .await;
    }
    progress.write(ctx).await?;
    Ok(Action::requeue(recheck))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::repository::approval::{Command, find_command};

    #[test]
    fn the_message_says_what_runs_and_how_to_approve() {
        let (a, b) = ("a".repeat(40), "b".repeat(40));
        let m = waiting_message(
            &b,
            Some((&a, Some("https://pr-1.example"))),
            "ok-to-preview",
        );
        assert!(
            m.starts_with("new head bbbbbbb from the fork is not deployed"),
            "{m}"
        );
        assert!(m.contains("aaaaaaa (approved) stays deployed at https://pr-1.example."));
        assert!(m.contains("remove and add the label ok-to-preview again"));
        assert!(waiting_message(&b, None, "x").contains("Nothing is deployed."));
        // Pullwarden's own comment never reads as an approval.
        assert_eq!(find_command(&m), Command::Absent);
    }
}
