//! Writing one gate verdict back to the pull request: the commit status (every forge), a check
//! run with the per-rule table when the credential is a GitHub App, otherwise the table as the
//! gate's section (`gate/<name>`) of the one sticky comment. Called only when
//! [`super::plan::already_reported`] says the forge does not show the verdict yet.
//!
//! The words are [`crate::gate::report`]'s; the sticky-comment algorithm is the forge layer's
//! ([`Forge::upsert_sticky_section`]), shared with previews.

use crate::controller::preview::writeback::COMMENT_MARKER;
pub use crate::controller::preview::writeback::WriteError;
use crate::forge::{CheckRunOutput, CommitStatus, Forge, ForgeError};
use crate::gate::GateVerdict;

use super::plan::Report;

/// Upper bound of a gate's section of the sticky comment, in characters (the comment is
/// shared with the preview and other gates; GitHub allows 65,536 characters in all).
pub const SECTION_MAX_CHARS: usize = 4_000;

/// Where one verdict goes.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub forge: &'a dyn Forge,
    pub gate: &'a str,
    pub context: &'a str,
    pub number: u64,
    pub head_sha: &'a str,
}

fn unsupported(e: &ForgeError) -> bool {
    matches!(e, ForgeError::Unsupported { .. })
}

/// The gate's section of the sticky comment, around the verdict's `table`.
pub fn section_text(gate: &str, report: &Report, table: &str) -> String {
    let text = format!("#### Gate `{gate}`: {}\n\n{table}", report.description);
    crate::forge::truncate_chars(&text, SECTION_MAX_CHARS)
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// Writes the commit status of `report` (first: branch protection reads it). Not idempotent
/// on the forge (GitHub keeps every status), so the caller writes it once per decision.
pub async fn status(t: &Target<'_>, report: &Report) -> Result<(), WriteError> {
    let status = CommitStatus::new(t.context, report.state, &report.description, None);
    t.forge
        .set_commit_status(t.head_sha, &status)
        .await
        .map_err(|source| WriteError {
            call: format!(
                "setting commit status {} on {}",
                t.context,
                short(t.head_sha)
            ),
            source,
        })
}

/// Writes the per-rule table: the check run (GitHub App), else the gate's section of the
/// sticky comment. Both are updated in place, so a repeat writes nothing new.
pub async fn table(
    t: &Target<'_>,
    report: &Report,
    verdict: &GateVerdict,
) -> Result<(), WriteError> {
    let short = short(t.head_sha);
    let table = crate::gate::report::markdown_table(verdict);
    let run = CheckRunOutput {
        name: t.context.to_owned(),
        head_sha: t.head_sha.to_owned(),
        status: report.check_status,
        conclusion: report.conclusion,
        title: report.description.clone(),
        summary: table.clone(),
        text: None,
        details_url: None,
    };
    match t.forge.upsert_check_run(&run).await {
        Ok(_) => return Ok(()),
        Err(e) if unsupported(&e) => {}
        Err(source) => {
            return Err(WriteError {
                call: format!("updating check run {} on {short}", t.context),
                source,
            });
        }
    }
    // Section ids cannot hold `--` (it would end the HTML comment); object names can.
    let section = format!("gate/{}", t.gate.replace("--", "-."));
    match t
        .forge
        .upsert_sticky_section(
            t.number,
            COMMENT_MARKER,
            &section,
            &section_text(t.gate, report, &table),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if unsupported(&e) => Ok(()),
        Err(source) => Err(WriteError {
            call: format!(
                "updating the gate's section of the sticky comment on pull request #{}",
                t.number
            ),
            source,
        }),
    }
}
