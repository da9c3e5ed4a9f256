//! Writing a preview's state back to the forge: commit status `pullwarden/preview` on the head
//! SHA, a deployment with `environment_url`, and one sticky comment per pull request.
//!
//! At most one write per (SHA, state): what was last reported is kept in
//! `status.reported` and compared before writing, so neither a resync nor an operator restart
//! writes twice. Deployments are found again by environment + SHA, and the comment by its hidden
//! marker, so even a crash between the forge write and the status write cannot duplicate them.

use crate::api::ReportedState;
use crate::error::Error;
use crate::forge::{
    CommitStatus, DeploymentId, DeploymentRequest, DeploymentState, DeploymentStatusUpdate, Forge,
    ForgeError, StatusState,
};
use crate::render::ReportState;
use tracing::debug;

/// Commit status context of previews.
pub const STATUS_CONTEXT: &str = "pullwarden/preview";
/// Hidden marker of the sticky comment.
pub use crate::render::report::COMMENT_MARKER;

/// The state written to the forge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteState {
    Pending,
    Success,
    Failure,
    /// Torn down: the deployment becomes inactive.
    Inactive,
}

impl WriteState {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteState::Pending => "pending",
            WriteState::Success => "success",
            WriteState::Failure => "failure",
            WriteState::Inactive => "inactive",
        }
    }
}

impl From<ReportState> for WriteState {
    /// How a preview's state is written to the forge.
    fn from(state: ReportState) -> Self {
        match state {
            ReportState::Pending
            | ReportState::Waiting
            | ReportState::WaitingForApproval
            | ReportState::Deploying => WriteState::Pending,
            ReportState::Ready => WriteState::Success,
            ReportState::Failed | ReportState::Refused => WriteState::Failure,
            ReportState::Expired | ReportState::Deleted => WriteState::Inactive,
        }
    }
}

/// One write-back.
#[derive(Clone, Debug)]
pub struct Report<'a> {
    pub sha: &'a str,
    /// Branch of the head (GitLab deployments need it next to the SHA).
    pub git_ref: &'a str,
    pub state: WriteState,
    /// ≤ 140 characters (truncated by the forge layer otherwise).
    pub description: String,
    pub url: Option<String>,
    /// Forge environment name (e.g. `preview/web-pr-7`).
    pub environment: String,
    /// Pull request number for the sticky comment (branch previews have none).
    pub pull_request: Option<u64>,
    pub comment: String,
}

fn unsupported(e: &ForgeError) -> bool {
    matches!(e, ForgeError::Unsupported { .. })
}

/// Whether `report` was already written.
pub fn already_reported(previous: Option<&ReportedState>, sha: &str, state: WriteState) -> bool {
    previous.is_some_and(|p| p.sha == sha && p.state == state.as_str())
}

/// Writes `report` unless it was already written; returns the new bookkeeping.
pub async fn write(
    forge: &dyn Forge,
    previous: Option<&ReportedState>,
    report: &Report<'_>,
) -> Result<ReportedState, Error> {
    if already_reported(previous, report.sha, report.state) {
        return Ok(previous.cloned().expect("checked above"));
    }
    let mut out = ReportedState {
        sha: report.sha.to_owned(),
        state: report.state.as_str().to_owned(),
        deployment_id: previous
            .filter(|p| p.sha == report.sha)
            .and_then(|p| p.deployment_id.clone()),
        comment_id: previous.and_then(|p| p.comment_id.clone()),
    };

    // Commit status (not for teardown: the SHA's last status stays as history).
    let status_state = match report.state {
        WriteState::Pending => Some(StatusState::Pending),
        WriteState::Success => Some(StatusState::Success),
        WriteState::Failure => Some(StatusState::Failure),
        WriteState::Inactive => None,
    };
    if let Some(state) = status_state {
        let status = CommitStatus::new(
            STATUS_CONTEXT,
            state,
            &report.description,
            report.url.clone(),
        );
        match forge.set_commit_status(report.sha, &status).await {
            Err(e) if unsupported(&e) => debug!("commit statuses unsupported by this provider"),
            other => other?,
        }
    }

    // Deployment + deployment status.
    match deployment(forge, &out, report).await {
        Ok(id) => out.deployment_id = id.map(|d| d.0.to_string()),
        Err(e) if unsupported(&e) => debug!("deployments unsupported by this provider"),
        Err(e) => return Err(e.into()),
    }

    // Sticky comment.
    if let Some(number) = report.pull_request {
        match forge
            .upsert_sticky_comment(number, COMMENT_MARKER, &report.comment)
            .await
        {
            Ok(id) => out.comment_id = Some(id.0.to_string()),
            Err(e) if unsupported(&e) => debug!("comments unsupported by this provider"),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

async fn deployment(
    forge: &dyn Forge,
    known: &ReportedState,
    report: &Report<'_>,
) -> Result<Option<DeploymentId>, ForgeError> {
    let existing = match known
        .deployment_id
        .as_deref()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(id) => Some(DeploymentId(id)),
        None => {
            forge
                .find_deployment(&report.environment, report.sha)
                .await?
        }
    };
    let id = match (existing, report.state) {
        (Some(id), _) => id,
        // Nothing was ever deployed for this SHA: nothing to mark inactive.
        (None, WriteState::Inactive) => return Ok(None),
        (None, _) => {
            forge
                .create_deployment(&DeploymentRequest {
                    git_ref: report.git_ref.to_owned(),
                    sha: report.sha.to_owned(),
                    environment: report.environment.clone(),
                    description: report.description.clone(),
                    transient: true,
                    production: false,
                })
                .await?
        }
    };
    let state = match report.state {
        WriteState::Pending => DeploymentState::InProgress,
        WriteState::Success => DeploymentState::Success,
        WriteState::Failure => DeploymentState::Failure,
        WriteState::Inactive => DeploymentState::Inactive,
    };
    let update = DeploymentStatusUpdate {
        environment_url: report
            .url
            .clone()
            .filter(|_| report.state == WriteState::Success),
        log_url: None,
        description: Some(report.description.clone()),
    };
    forge.set_deployment_status(id, state, &update).await?;
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_write_per_sha_and_state() {
        let prev = ReportedState {
            sha: "a".into(),
            state: "success".into(),
            deployment_id: None,
            comment_id: None,
        };
        assert!(already_reported(Some(&prev), "a", WriteState::Success));
        assert!(!already_reported(Some(&prev), "a", WriteState::Failure));
        assert!(!already_reported(Some(&prev), "b", WriteState::Success));
        assert!(!already_reported(None, "a", WriteState::Success));
    }
}
