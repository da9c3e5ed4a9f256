//! Writing a preview's state back to the forge — the one write-back path of previews: commit
//! status `pullwarden/preview` on the head SHA, a deployment with `environment_url` (GitHub
//! deployments, GitLab environments; Gitea has none), and one sticky comment per pull request.
//! The words are in [`crate::render::report`] (pure text); what is written when is decided here.
//!
//! Exactly once per (SHA, state), also across restarts and non-consecutive states: what was
//! last written is kept in `status.reported` ([`ReportedState`]) and [`should_write`] compares
//! before anything is sent. A redeploy of a revision that is already reported ready (a new
//! generation, a wake-up, a retry) writes nothing new. Deployments are found again by
//! environment + SHA, and the comment by its hidden marker, so even a crash between the forge
//! write and the status write cannot duplicate them.
//!
//! A failed write never blocks or hides the deployment: the caller records the
//! [`WriteError`] (which names the forge call) in the `Reported` condition and retries later.

use crate::api::{InventoryEntry, ReportedState};
use crate::forge::{
    CommitStatus, DeploymentId, DeploymentRequest, DeploymentState, DeploymentStatusUpdate, Forge,
    ForgeError, StatusState,
};
use crate::render::report::{self, CommentInput};
use crate::render::{RenderError, ReportState};
use tracing::debug;

/// Commit status context of previews.
pub const STATUS_CONTEXT: &str = "pullwarden/preview";
/// Hidden marker of the sticky comment.
pub use crate::render::report::COMMENT_MARKER;
/// The preview's section of the sticky comment (gates own `gate/<name>`).
pub const COMMENT_SECTION: &str = "preview";

/// How a state is recorded in `status.reported.state` (and compared).
pub fn recorded_as(state: ReportState) -> &'static str {
    match state {
        ReportState::Pending
        | ReportState::Waiting
        | ReportState::WaitingForApproval
        | ReportState::Deploying => "pending",
        ReportState::Ready => "success",
        ReportState::Failed | ReportState::Refused => "failure",
        ReportState::Sleeping => "sleeping",
        ReportState::Expired | ReportState::Deleted => "inactive",
    }
}

fn commit_status(state: ReportState) -> Option<StatusState> {
    match recorded_as(state) {
        "pending" => Some(StatusState::Pending),
        "success" => Some(StatusState::Success),
        "failure" => Some(StatusState::Failure),
        // Teardown keeps the SHA's last status as history; a sleeping preview is still the
        // successful deployment of its SHA.
        _ => None,
    }
}

fn deployment_state(state: ReportState) -> Option<DeploymentState> {
    match recorded_as(state) {
        "pending" => Some(DeploymentState::InProgress),
        "success" => Some(DeploymentState::Success),
        "failure" => Some(DeploymentState::Failure),
        "inactive" => Some(DeploymentState::Inactive),
        _ => None,
    }
}

/// Whether `state` on `sha` is news for the pull request, given what was written last.
pub fn should_write(previous: Option<&ReportedState>, sha: &str, state: ReportState) -> bool {
    let Some(previous) = previous.filter(|p| p.sha == sha) else {
        return true;
    };
    let record = recorded_as(state);
    if previous.state == record {
        return false;
    }
    // A redeploy of a revision already reported ready does not flip it back to pending.
    !(record == "pending" && previous.state == "success")
}

/// A failed write-back, naming the forge call.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {source}")]
pub struct WriteError {
    pub call: String,
    #[source]
    pub source: ForgeError,
}

fn unsupported(e: &ForgeError) -> bool {
    matches!(e, ForgeError::Unsupported { .. })
}

/// What one write-back says.
#[derive(Clone, Copy, Debug)]
pub struct Say<'a> {
    pub state: ReportState,
    /// The SHA it is about (a fork's waiting head, or the preview's head).
    pub sha: &'a str,
    /// One line for the commit status and the comment's detail.
    pub message: &'a str,
    pub url: Option<&'a str>,
    pub objects: &'a [InventoryEntry],
    /// A refused render: the comment lists every problem.
    pub refusal: Option<&'a RenderError>,
}

/// Where a preview's write-backs go.
#[derive(Clone, Copy, Debug)]
pub struct Reporter<'a> {
    pub forge: &'a dyn Forge,
    /// The PreviewEnvironment's name (the forge environment is `preview/<name>`).
    pub preview: &'a str,
    /// Branch of the head (GitLab deployments need it next to the SHA).
    pub git_ref: &'a str,
    pub namespace: &'a str,
    pub pull_request: Option<u64>,
}

impl Reporter<'_> {
    fn environment(&self) -> String {
        format!("preview/{}", self.preview)
    }

    /// Writes `say` unless [`should_write`] says it was already written. Returns the new
    /// record (`None`: nothing was written).
    pub async fn say(
        &self,
        previous: Option<&ReportedState>,
        say: &Say<'_>,
    ) -> Result<Option<ReportedState>, WriteError> {
        if !should_write(previous, say.sha, say.state) {
            return Ok(None);
        }
        let short = crate::controller::preview::plan::short(say.sha);
        let description = report::status_description(
            say.state,
            &match say.refusal {
                Some(err) => err.summary(),
                None => say.message.to_owned(),
            },
        );
        let mut out = ReportedState {
            sha: say.sha.to_owned(),
            state: recorded_as(say.state).to_owned(),
            deployment_id: previous
                .filter(|p| p.sha == say.sha)
                .and_then(|p| p.deployment_id.clone()),
            comment_id: previous.and_then(|p| p.comment_id.clone()),
        };

        if let Some(state) = commit_status(say.state) {
            let url = say.url.map(str::to_owned);
            let status = CommitStatus::new(STATUS_CONTEXT, state, &description, url);
            match self.forge.set_commit_status(say.sha, &status).await {
                Err(e) if unsupported(&e) => debug!("commit statuses unsupported by this provider"),
                Err(source) => {
                    return Err(WriteError {
                        call: format!("setting commit status {STATUS_CONTEXT} on {short}"),
                        source,
                    });
                }
                Ok(()) => {}
            }
        }

        if let Some(state) = deployment_state(say.state) {
            match self.deployment(&out, say, state, &description).await {
                Ok(id) => out.deployment_id = id.map(|d| d.0.to_string()),
                Err((_, e)) if unsupported(&e) => {
                    debug!("deployments unsupported by this provider")
                }
                Err((call, source)) => return Err(WriteError { call, source }),
            }
        }

        if let Some(number) = self.pull_request {
            let body = match say.refusal {
                Some(err) => report::refusal_comment(self.preview, say.sha, self.namespace, err),
                None => report::comment_body(&CommentInput {
                    preview: self.preview,
                    state: say.state,
                    url: say.url,
                    sha: say.sha,
                    namespace: self.namespace,
                    detail: say.message,
                    objects: say.objects,
                    error: None,
                }),
            };
            match self
                .forge
                .upsert_sticky_section(number, COMMENT_MARKER, COMMENT_SECTION, &body)
                .await
            {
                Ok(id) => out.comment_id = id.map(|id| id.0.to_string()).or(out.comment_id),
                Err(e) if unsupported(&e) => debug!("comments unsupported by this provider"),
                Err(source) => {
                    return Err(WriteError {
                        call: format!("updating the sticky comment on pull request #{number}"),
                        source,
                    });
                }
            }
        }
        Ok(Some(out))
    }

    async fn deployment(
        &self,
        known: &ReportedState,
        say: &Say<'_>,
        state: DeploymentState,
        description: &str,
    ) -> Result<Option<DeploymentId>, (String, ForgeError)> {
        let environment = self.environment();
        let short = crate::controller::preview::plan::short(say.sha);
        let existing = match known
            .deployment_id
            .as_deref()
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(id) => Some(DeploymentId(id)),
            None => self
                .forge
                .find_deployment(&environment, say.sha)
                .await
                .map_err(|e| (format!("finding deployment {environment} of {short}"), e))?,
        };
        let id = match (existing, state) {
            (Some(id), _) => id,
            // Nothing was ever deployed for this SHA: nothing to mark inactive.
            (None, DeploymentState::Inactive) => return Ok(None),
            (None, _) => self
                .forge
                .create_deployment(&DeploymentRequest {
                    git_ref: self.git_ref.to_owned(),
                    sha: say.sha.to_owned(),
                    environment: environment.clone(),
                    description: description.to_owned(),
                    transient: true,
                    production: false,
                })
                .await
                .map_err(|e| (format!("creating deployment {environment} of {short}"), e))?,
        };
        let update = DeploymentStatusUpdate {
            environment_url: say
                .url
                .map(str::to_owned)
                .filter(|_| state == DeploymentState::Success),
            log_url: None,
            description: Some(description.to_owned()),
        };
        self.forge
            .set_deployment_status(id, state, &update)
            .await
            .map_err(|e| {
                (
                    format!("setting the status of deployment {id} ({environment})"),
                    e,
                )
            })?;
        Ok(Some(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forge::fake::FakeForge;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn say(state: ReportState, sha: &str) -> Say<'_> {
        Say {
            state,
            sha,
            message: "detail",
            url: Some("https://pr-7.preview.example.com"),
            objects: &[],
            refusal: None,
        }
    }

    fn reporter(forge: &FakeForge) -> Reporter<'_> {
        Reporter {
            forge,
            preview: "web-pr-7",
            git_ref: "feature",
            namespace: "team-web-pr-7",
            pull_request: Some(7),
        }
    }

    #[test]
    fn once_per_sha_and_state_and_no_pending_over_a_live_revision() {
        let record = |sha: &str, state: &str| ReportedState {
            sha: sha.into(),
            state: state.into(),
            ..Default::default()
        };
        assert!(should_write(None, A, ReportState::Deploying));
        assert!(!should_write(
            Some(&record(A, "pending")),
            A,
            ReportState::Waiting
        ));
        assert!(should_write(
            Some(&record(A, "pending")),
            A,
            ReportState::Ready
        ));
        assert!(!should_write(
            Some(&record(A, "success")),
            A,
            ReportState::Deploying
        ));
        assert!(!should_write(
            Some(&record(A, "success")),
            A,
            ReportState::Ready
        ));
        assert!(should_write(
            Some(&record(A, "success")),
            A,
            ReportState::Failed
        ));
        assert!(should_write(
            Some(&record(A, "failure")),
            A,
            ReportState::Deploying
        ));
        assert!(should_write(
            Some(&record(A, "success")),
            B,
            ReportState::Deploying
        ));
        assert!(should_write(
            Some(&record(A, "success")),
            A,
            ReportState::Sleeping
        ));
        assert!(should_write(
            Some(&record(A, "sleeping")),
            A,
            ReportState::Ready
        ));
    }

    #[tokio::test]
    async fn a_lifecycle_writes_each_thing_once_and_one_comment() {
        let forge = FakeForge::github();
        let r = reporter(&forge);
        let mut reported = None;
        for (state, sha) in [
            (ReportState::Deploying, A),
            (ReportState::Ready, A),
            (ReportState::Deploying, A), // redeploy of the same revision
            (ReportState::Ready, A),
            (ReportState::Deploying, B),
            (ReportState::Ready, B),
            (ReportState::Deleted, B),
        ] {
            if let Some(new) = r.say(reported.as_ref(), &say(state, sha)).await.unwrap() {
                reported = Some(new);
            }
        }
        let state = forge.state();
        let statuses: Vec<(String, StatusState)> = state
            .statuses
            .iter()
            .map(|(sha, s)| (sha[..1].to_string(), s.state))
            .collect();
        assert_eq!(
            statuses,
            vec![
                ("a".into(), StatusState::Pending),
                ("a".into(), StatusState::Success),
                ("b".into(), StatusState::Pending),
                ("b".into(), StatusState::Success),
            ]
        );
        assert_eq!(state.deployments.len(), 2, "one deployment per SHA");
        let last = state.deployments.values().last().unwrap();
        assert_eq!(last.1.last().unwrap().0, DeploymentState::Inactive);
        let url = last.1.iter().find_map(|(_, u)| u.environment_url.clone());
        assert_eq!(url.as_deref(), Some("https://pr-7.preview.example.com"));
        assert_eq!(state.comments[&7].len(), 1, "one sticky comment");
        assert_eq!(state.count("upsert_sticky_section"), 5);
    }

    #[tokio::test]
    async fn a_failed_call_is_named_and_nothing_is_recorded() {
        let forge = FakeForge::github();
        forge.fail("create_deployment", || ForgeError::NotFound {
            message: "404 Not Found".into(),
        });
        let r = reporter(&forge);
        let err = r.say(None, &say(ReportState::Ready, A)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "creating deployment preview/web-pr-7 of aaaaaaa: not found: 404 Not Found"
        );
        forge.heal("create_deployment");
        let written = r.say(None, &say(ReportState::Ready, A)).await.unwrap();
        assert_eq!(written.unwrap().state, "success", "retried in full");
    }

    #[tokio::test]
    async fn unsupported_deployments_are_skipped_on_gitea() {
        let forge = FakeForge::new(crate::forge::ForgeKind::Gitea);
        forge.fail("find_deployment", || ForgeError::Unsupported {
            operation: "deployments",
            provider: "gitea".into(),
        });
        let r = reporter(&forge);
        let written = r
            .say(None, &say(ReportState::Ready, A))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(written.deployment_id, None);
        assert_eq!(forge.state().statuses.len(), 1);
        assert_eq!(forge.state().comments[&7].len(), 1);
    }
}
