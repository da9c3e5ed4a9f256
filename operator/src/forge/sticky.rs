//! The one sticky-comment algorithm, shared by every provider: find our comment by its marker
//! (the oldest of ours carrying it), splice one writer's section into it
//! ([`splice_section`]), and edit or create it — serialised per pull request inside the
//! process ([`CredentialState::sticky_lock`]).
//!
//! What this process last wrote is remembered per comment: only the leader writes sticky
//! comments, so that is the comment's body, and the next section update is an edit without
//! listing the pull request's comments first (the memory is dropped whenever the process
//! becomes leader: another replica may have written meanwhile). A comment deleted meanwhile (the edit answers
//! `404`) is looked for, and created, again. Someone else's edit of our comment is overwritten
//! by our next one (the comment is Pullwarden's).

use async_trait::async_trait;

use super::RepoCoordinates;
use super::error::ForgeError;
use super::shared::CredentialState;
use super::types::{
    Comment, CommentId, find_sticky, splice_section, validate_marker, validate_section,
};

/// The comment calls of one provider.
#[async_trait]
pub(crate) trait CommentApi: Send + Sync {
    /// The pull request's comments written by this credential.
    async fn own_comments(&self, number: u64) -> Result<Vec<Comment>, ForgeError>;
    async fn edit_comment(
        &self,
        number: u64,
        id: CommentId,
        body: &str,
    ) -> Result<CommentId, ForgeError>;
    async fn create_comment(&self, number: u64, body: &str) -> Result<CommentId, ForgeError>;
}

/// [`super::Forge::upsert_sticky_section`] for any provider.
pub(crate) async fn upsert_section(
    api: &impl CommentApi,
    state: &CredentialState,
    coords: &RepoCoordinates,
    number: u64,
    marker: &str,
    section: &str,
    text: &str,
) -> Result<Option<CommentId>, ForgeError> {
    validate_marker(marker)?;
    validate_section(section)?;
    let key = format!("{}#{number}#{marker}", coords.canonical_url());
    let _guard = state.sticky_lock(key.clone()).await;
    if let Some((id, body)) = state.sticky_body(&key) {
        let wanted = splice_section(marker, Some(&body), section, text);
        if wanted == body {
            return Ok(Some(id));
        }
        match api.edit_comment(number, id, &wanted).await {
            Ok(id) => {
                state.remember_sticky(key, id, wanted);
                return Ok(Some(id));
            }
            Err(ForgeError::NotFound { .. }) => state.forget_sticky(&key),
            Err(e) => return Err(e),
        }
    }
    let comments = api.own_comments(number).await?;
    let found = find_sticky(&comments, marker, |_| true);
    let wanted = splice_section(marker, found.map(|c| c.body.as_str()), section, text);
    let id = match found {
        Some(c) if c.body == wanted => c.id,
        None if text.trim().is_empty() => return Ok(None),
        Some(c) => api.edit_comment(number, c.id, &wanted).await?,
        None => api.create_comment(number, &wanted).await?,
    };
    state.remember_sticky(key, id, wanted);
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forge::budget::{ApiRequest, Budget, BudgetConfig, RawResponse, Transport};
    use crate::forge::{ForgeKind, ForgeMetrics};
    use std::sync::{Arc, Mutex};

    /// Comments kept in memory; every call is logged.
    #[derive(Default)]
    struct Comments {
        bodies: Mutex<Vec<(CommentId, String)>>,
        calls: Mutex<Vec<&'static str>>,
    }

    impl Comments {
        fn log(&self, call: &'static str) {
            self.calls.lock().unwrap().push(call);
        }
        fn calls(&self) -> Vec<&'static str> {
            std::mem::take(&mut *self.calls.lock().unwrap())
        }
    }

    #[async_trait]
    impl CommentApi for Comments {
        async fn own_comments(&self, _number: u64) -> Result<Vec<Comment>, ForgeError> {
            self.log("list");
            Ok(self
                .bodies
                .lock()
                .unwrap()
                .iter()
                .map(|(id, body)| Comment {
                    id: *id,
                    author: "bot".into(),
                    author_id: None,
                    body: body.clone(),
                    created_at: jiff::Timestamp::UNIX_EPOCH,
                })
                .collect())
        }
        async fn edit_comment(
            &self,
            _number: u64,
            id: CommentId,
            body: &str,
        ) -> Result<CommentId, ForgeError> {
            self.log("edit");
            let mut bodies = self.bodies.lock().unwrap();
            let Some(found) = bodies.iter_mut().find(|(i, _)| *i == id) else {
                return Err(ForgeError::NotFound {
                    message: "404".into(),
                });
            };
            found.1 = body.to_owned();
            Ok(id)
        }
        async fn create_comment(&self, _number: u64, body: &str) -> Result<CommentId, ForgeError> {
            self.log("create");
            let created = self.calls.lock().unwrap().len() as u64;
            let mut bodies = self.bodies.lock().unwrap();
            let id = CommentId(1000 + created + bodies.len() as u64);
            bodies.push((id, body.to_owned()));
            Ok(id)
        }
    }

    #[derive(Debug)]
    struct NoNetwork;

    #[async_trait]
    impl Transport for NoNetwork {
        async fn send(
            &self,
            _req: &ApiRequest,
            _extra: http::HeaderMap,
        ) -> Result<RawResponse, ForgeError> {
            Err(ForgeError::invalid_response("no network in this test"))
        }
    }

    #[tokio::test]
    async fn sections_are_edited_from_what_was_written_and_a_deleted_comment_comes_back() {
        let state = CredentialState::new(
            Arc::new(Budget::new(
                ForgeKind::Github,
                "test",
                BudgetConfig::default(),
                ForgeMetrics::new(),
            )),
            Arc::new(NoNetwork),
        );
        let coords =
            RepoCoordinates::parse(ForgeKind::Github, "https://github.com/acme/web", None).unwrap();
        let api = Comments::default();
        let m = "<!-- pullwarden:preview -->";
        let up = |section: &'static str, text: &'static str| {
            upsert_section(&api, &state, &coords, 7, m, section, text)
        };
        // First write: look for ours, create it.
        let id = up("preview", "deploying").await.unwrap().unwrap();
        assert_eq!(api.calls(), vec!["list", "create"]);
        // Later writes edit what this process wrote, without listing; unchanged writes nothing.
        assert_eq!(up("gate/policy", "table").await.unwrap(), Some(id));
        assert_eq!(up("preview", "ready").await.unwrap(), Some(id));
        assert_eq!(up("preview", "ready").await.unwrap(), Some(id));
        assert_eq!(api.calls(), vec!["edit", "edit"]);
        let body = api.bodies.lock().unwrap()[0].1.clone();
        assert!(
            body.contains("\nready\n") && body.contains("\ntable\n"),
            "{body}"
        );
        // Someone deleted it: found missing on the edit, looked for and created again.
        api.bodies.lock().unwrap().clear();
        let again = up("preview", "sleeping").await.unwrap().unwrap();
        assert_ne!(again, id);
        assert_eq!(api.calls(), vec!["edit", "list", "create"]);
        // An empty section on a pull request without our comment creates nothing.
        api.bodies.lock().unwrap().clear();
        let none = upsert_section(&api, &state, &coords, 8, m, "gate/policy", "").await;
        assert_eq!(none.unwrap(), None);
    }
}
