//! Credential detection in added lines: the rule half of `secretScan`.
//!
//! [`SecretScanner`] holds a vetted built-in pattern set plus the gate's `extraPatterns` and
//! scans the **added** lines of a diff (never context or removed lines, so existing debt does not
//! block every PR). A [`Finding`] names the file, the line and the pattern, and never the
//! matched text: there is no field that could carry it, so no status, event, log line or PR
//! comment built from findings can echo a secret.
//!
//! The built-in set (provider formats are public; each is anchored on a fixed prefix or
//! structure, so they rarely fire on ordinary code):
//!
//! | name | what |
//! |---|---|
//! | `aws-access-key-id` | `AKIA`/`ASIA`/`ABIA`/`ACCA` + 16 base-32 characters (the documented `…EXAMPLE` keys excepted) |
//! | `aws-secret-access-key` | 40 base-64 characters assigned to a name containing `aws` and `secret` |
//! | `gcp-service-account-key` | the `"private_key": "-----BEGIN PRIVATE KEY-----` of a service-account JSON |
//! | `azure-storage-key` | `AccountKey=` + 86 base-64 characters + `==` (storage connection strings) |
//! | `azure-shared-access-key` | `SharedAccessKey=` + 43 base-64 characters + `=` (Service Bus, Event Hubs) |
//! | `github-token` | `ghp_`/`gho_`/`ghu_`/`ghs_`/`ghr_` + 36 alphanumerics, `github_pat_` + 82 |
//! | `gitlab-token` | `glpat-`/`gldt-`/`glrt-` + 20 or more token characters |
//! | `slack-token` | `xoxa-`/`xoxb-`/`xoxp-`/`xoxr-` tokens; `slack-webhook`: `hooks.slack.com/services/T…/B…/…` |
//! | `stripe-live-key` | `sk_live_`/`rk_live_` + 24 or more alphanumerics |
//! | `private-key` | a PEM `-----BEGIN … PRIVATE KEY-----` header **followed by key material** (base-64 on the same line after `\n`, or on the next added line) |
//! | `jwt` | three base-64url segments, header and payload starting `eyJ`, a signature of 32+ characters |
//! | `generic-secret-assignment` | a high-entropy literal assigned to a secret-sounding name (below) |
//!
//! **Keeping false positives low.** The generic rule is where false positives come from, so it
//! is deliberately conservative:
//! - the name on the left must contain `password`, `passwd`, `secret`, `token`, `api_key`/
//!   `apikey`, `access_key`, `private_key`, `client_secret` or `auth_token`, and must not end in
//!   a word that says the value is *about* the secret (`_file`, `_path`, `_name`, `_env`, `_url`,
//!   `_type`, `_id`, `_hash`, `_digest`, `_header`, `_prefix`, `_len`/`_length`, `_field`, `_key_id`);
//! - it is assigned (`=`, `:`, `:=`, `=>`; never compared with `==`), and the value is a string
//!   literal, or the whole line is a bare `NAME=value` / `name: value` config entry;
//! - the value is 16–256 characters, has a letter and a digit, no whitespace, is not a URL or a
//!   path, does not start with `$` (a `$VAR` reference, a crypt hash like `$argon2id$…`) and is
//!   not a bare JWT header, has no template/placeholder markers (`${`, `{{`, `<`, `%s`, `xxx`,
//!   `***`, `example`, `changeme`, `dummy`, `placeholder`, `redacted`, `your`…), its name does
//!   not start with `hashed`, and its Shannon entropy is at
//!   least [`GENERIC_MIN_ENTROPY`] bits per character (3.0 for a hex-only value, which must then
//!   be 32+ characters).
//!
//! A PEM header alone (as PEM parsers and docs contain) is not reported; nor are AWS's
//! documented example keys. The false-positive rate on real source is measured separately
//! (issue 12 item 4).

use std::collections::BTreeSet;

use regex::{Regex, RegexSet};
use serde::{Deserialize, Serialize};

use super::snapshot::AddedLine;
use crate::api::NamedPattern;

/// Minimum Shannon entropy (bits per character) of a generic secret's value.
pub const GENERIC_MIN_ENTROPY: f64 = 3.5;

/// At most this many findings are kept per scan; the count beyond is reported, not the places.
pub const MAX_FINDINGS: usize = 100;

/// One place that looks like a credential. Deliberately without the matched text.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Finding {
    pub path: String,
    pub line: u32,
    pub pattern: String,
}

/// How a pattern's match is confirmed beyond the regex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// The regex is the whole test.
    None,
    /// AWS key ids: the documented example keys end in `EXAMPLE`.
    NotAwsExample,
    /// PEM header: key material must follow.
    PemBody,
    /// Generic assignment: group `value` passes [`plausible_secret`], group `name` is not a
    /// metadata name.
    Generic,
    /// Group 1 passes the entropy floor (guards patterns keyed on a name, like AWS secrets).
    Entropy,
}

#[derive(Debug)]
struct Pattern {
    name: String,
    regex: Regex,
    check: Check,
}

/// The built-in patterns and a gate's extra ones, compiled once.
#[derive(Debug)]
pub struct SecretScanner {
    patterns: Vec<Pattern>,
    /// Prefilter: which patterns can match a line at all.
    set: RegexSet,
}

const SECRET_WORDS: &str = r"(?:password|passwd|secret|token|api[_.-]?key|apikey|access[_.-]?key|private[_.-]?key|client[_.-]?secret|auth[_.-]?token)";

fn builtin() -> Vec<(&'static str, String, Check)> {
    vec![
        (
            "aws-access-key-id",
            r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b".into(),
            Check::NotAwsExample,
        ),
        (
            "aws-secret-access-key",
            r#"(?i)aws[a-z0-9_.-]{0,20}secret[a-z0-9_.-]{0,20}["']?\s*(?::=|=>|[:=])\s*["']?([A-Za-z0-9/+]{40})(?:["'\s,;]|$)"#.into(),
            Check::Entropy,
        ),
        (
            "gcp-service-account-key",
            r#""private_key"\s*:\s*"-----BEGIN (?:RSA )?PRIVATE KEY-----"#.into(),
            Check::None,
        ),
        (
            "azure-storage-key",
            r"AccountKey=[A-Za-z0-9+/]{86}==".into(),
            Check::None,
        ),
        (
            "azure-shared-access-key",
            r"SharedAccessKey=[A-Za-z0-9+/]{43}=".into(),
            Check::None,
        ),
        (
            "github-token",
            r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})\b".into(),
            Check::None,
        ),
        (
            "gitlab-token",
            r"\bgl(?:pat|dt|rt)-[A-Za-z0-9_-]{20,}".into(),
            Check::None,
        ),
        (
            "slack-token",
            r"\bxox[abpr]-[0-9]{6,}-[0-9A-Za-z-]{8,}".into(),
            Check::None,
        ),
        (
            "slack-webhook",
            r"hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{20,}".into(),
            Check::None,
        ),
        (
            "stripe-live-key",
            r"\b[sr]k_live_[0-9A-Za-z]{24,}\b".into(),
            Check::None,
        ),
        (
            "private-key",
            r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----".into(),
            Check::PemBody,
        ),
        (
            "jwt",
            r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{32,}".into(),
            Check::None,
        ),
        (
            "generic-secret-assignment",
            format!(
                r#"(?i)(?P<name>[a-z0-9_.-]*{SECRET_WORDS}[a-z0-9_.-]*)["']?\s*(?::=|=>|[:=])\s*(?:(?P<q>["'`])(?P<value>[^"'`\s]{{16,256}})["'`]|(?P<bare>[^"'`\s;,()\[\]{{}}<>]{{16,256}})\s*$)"#
            ),
            Check::Generic,
        ),
    ]
}

impl SecretScanner {
    /// The built-in set plus `extra` (each a named regular expression; the whole match is the
    /// finding). A bad extra pattern is an error naming it.
    pub fn new(extra: &[NamedPattern]) -> Result<Self, String> {
        let mut patterns: Vec<Pattern> = builtin()
            .into_iter()
            .map(|(name, re, check)| Pattern {
                name: name.to_string(),
                regex: Regex::new(&re).expect("built-in secret patterns compile"),
                check,
            })
            .collect();
        for p in extra {
            let regex = Regex::new(&p.regex).map_err(|e| {
                format!(
                    "extra pattern {:?}: invalid regular expression: {e}",
                    p.name
                )
            })?;
            patterns.push(Pattern {
                name: p.name.clone(),
                regex,
                check: Check::None,
            });
        }
        let set = RegexSet::new(patterns.iter().map(|p| p.regex.as_str()))
            .map_err(|e| format!("secret patterns: {e}"))?;
        Ok(SecretScanner { patterns, set })
    }

    /// Names of the patterns in use, built-in first.
    pub fn pattern_names(&self) -> Vec<&str> {
        self.patterns.iter().map(|p| p.name.as_str()).collect()
    }

    /// Findings in the added lines of one file, one per (line, pattern), in line order.
    pub fn scan_file(&self, path: &str, lines: &[AddedLine]) -> Vec<Finding> {
        let mut out = BTreeSet::new();
        for (i, added) in lines.iter().enumerate() {
            let text = added.text.as_str();
            let candidates = self.set.matches(text);
            if !candidates.matched_any() {
                continue;
            }
            // The next added line, when it directly follows (a PEM body).
            let next = lines
                .get(i + 1)
                .filter(|n| n.line == added.line.saturating_add(1))
                .map(|n| n.text.as_str());
            for idx in candidates.iter() {
                let p = &self.patterns[idx];
                if p.confirmed(text, next) {
                    out.insert(Finding {
                        path: path.to_string(),
                        line: added.line,
                        pattern: p.name.clone(),
                    });
                }
            }
        }
        let mut v: Vec<Finding> = out.into_iter().collect();
        v.sort_by(|a, b| (a.line, &a.pattern).cmp(&(b.line, &b.pattern)));
        v
    }
}

impl Pattern {
    fn confirmed(&self, text: &str, next: Option<&str>) -> bool {
        match self.check {
            Check::None => self.regex.is_match(text),
            Check::NotAwsExample => self
                .regex
                .find_iter(text)
                .any(|m| !m.as_str().ends_with("EXAMPLE")),
            Check::PemBody => self.regex.find_iter(text).any(|m| {
                let rest = &text[m.end()..];
                let same_line = rest
                    .strip_prefix("\\n")
                    .or_else(|| rest.strip_prefix("\\r\\n"))
                    .is_some_and(|r| base64_run(r) >= 32);
                same_line || next.is_some_and(|n| base64_run(n.trim_start()) >= 32)
            }),
            Check::Entropy => self.regex.captures_iter(text).any(|c| {
                c.get(1)
                    .is_some_and(|v| shannon_entropy(v.as_str()) >= GENERIC_MIN_ENTROPY)
            }),
            Check::Generic => self.regex.captures_iter(text).any(|c| {
                let name = c.name("name").map(|m| m.as_str()).unwrap_or("");
                let (value, bare) = match (c.name("value"), c.name("bare")) {
                    (Some(v), _) => (v.as_str(), false),
                    (None, Some(v)) => (v.as_str(), true),
                    (None, None) => return false,
                };
                // A bare value only counts when the line is nothing but `NAME=value` (a config
                // file entry), never inside code.
                if bare && !bare_config_line(text, name) {
                    return false;
                }
                !metadata_name(name) && plausible_secret(value)
            }),
        }
    }
}

/// Length of the leading run of base-64 characters.
fn base64_run(s: &str) -> usize {
    s.bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        .count()
}

/// `NAME=value`, `name: value`, `export NAME=value`, with nothing else on the line.
fn bare_config_line(text: &str, name: &str) -> bool {
    let t = text.trim_start();
    let t = t.strip_prefix("export ").unwrap_or(t).trim_start();
    let t = t.trim_start_matches(['"', '\'']);
    t.starts_with(name)
}

/// Names that hold facts about a secret, not the secret.
fn metadata_name(name: &str) -> bool {
    const SUFFIXES: [&str; 17] = [
        "file", "path", "name", "env", "url", "uri", "type", "id", "hash", "digest", "header",
        "prefix", "len", "length", "field", "key_id", "keyid",
    ];
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("hashed") || lower.contains("hash_") {
        return true;
    }
    let lower = lower.trim_end_matches(['_', '-', '.']);
    SUFFIXES.iter().any(|s| {
        lower
            .strip_suffix(s)
            .is_some_and(|head| head.is_empty() || head.ends_with(['_', '-', '.']))
    })
}

/// Whether `value` looks like a real credential rather than a placeholder, an identifier, a
/// path or prose.
pub fn plausible_secret(value: &str) -> bool {
    let len = value.chars().count();
    if !(16..=256).contains(&len) || value.chars().any(char::is_whitespace) {
        return false;
    }
    if !value.chars().any(|c| c.is_ascii_digit()) || !value.chars().any(|c| c.is_alphabetic()) {
        return false;
    }
    let lower = value.to_ascii_lowercase();
    const PLACEHOLDERS: [&str; 20] = [
        "${",
        "{{",
        "<",
        "%s",
        "%(",
        "xxx",
        "***",
        "...",
        "example",
        "sample",
        "changeme",
        "dummy",
        "placeholder",
        "redacted",
        "your",
        "replace",
        "fixme",
        "todo",
        "insert",
        "secret",
    ];
    if PLACEHOLDERS.iter().any(|p| lower.contains(p)) {
        return false;
    }
    if lower.contains("://") || value.starts_with('/') || value.starts_with("./") {
        return false;
    }
    // `$VAR` references and crypt-style hashes (`$argon2id$…`, `$2b$…`); a bare JWT header
    // (`eyJ…` without its payload and signature) is no secret, a whole JWT is the `jwt` rule's.
    if value.starts_with('$') || (value.starts_with("eyJ") && !value.contains('.')) {
        return false;
    }
    // Dotted or path-like identifiers: `auth.token.header`, `config/keys/prod`.
    if value.matches(['.', '/']).count() >= 2 {
        return false;
    }
    let hex = value.chars().all(|c| c.is_ascii_hexdigit());
    if hex {
        return len >= 32 && shannon_entropy(value) >= 3.0;
    }
    shannon_entropy(value) >= GENERIC_MIN_ENTROPY
}

/// Shannon entropy of the characters of `s`, in bits per character.
pub fn shannon_entropy(s: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    let mut n = 0usize;
    for c in s.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    let n = n as f64;
    counts
        .values()
        .map(|&k| {
            let p = k as f64 / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn lines(texts: &[&str]) -> Vec<AddedLine> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| AddedLine {
                line: u32::try_from(i).unwrap() + 1,
                text: t.to_string(),
            })
            .collect()
    }

    /// Format-correct fake credentials, built at run time so this file holds no literal token a
    /// scanner (ours or GitHub's push protection) would flag. Each is (pattern, line).
    pub(crate) fn fake_secrets() -> Vec<(&'static str, String)> {
        let b62 = "aB3dE5fG7hJ9kL2mN4pQ6rS8tU0vW1xY3zA5bC7dE9fG2hJ4kL6mN8pQ0rS";
        let b32 = "QX7ZK2M5TW3RB6JN4PLD";
        let b64 = "Zm9vYmFyK2Jhei9xdXV4K3NlY3JldCtrZXkvbWF0ZXJpYWwrMTIzNDU2Nzg5MGFi";
        let pem = ["-----BEGIN ", "RSA PRIVATE KEY-----"].concat();
        vec![
            (
                "aws-access-key-id",
                format!("key = {}{}", "AKIA", &b32[..16]),
            ),
            (
                "aws-secret-access-key",
                format!("aws_secret_access_key = {}", &b64[..40]),
            ),
            (
                "gcp-service-account-key",
                format!(
                    r#"  "private_key": "{}\n{}","#,
                    ["-----BEGIN ", "PRIVATE KEY-----"].concat(),
                    &b64[..48]
                ),
            ),
            (
                "azure-storage-key",
                format!(
                    "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={}{}==;EndpointSuffix=core.windows.net",
                    &b64[..64],
                    &b62[..22]
                ),
            ),
            (
                "azure-shared-access-key",
                format!(
                    "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey={}=",
                    &b64[..43]
                ),
            ),
            ("github-token", format!("token: {}{}", "ghp_", &b62[..36])),
            ("github-token", format!("GH={}{}", "ghs_", &b62[1..37])),
            (
                "github-token",
                format!("{}{}_{}", "github_pat_", &b62[..22], &b62[..59]),
            ),
            ("gitlab-token", format!("{}{}", "glpat-", &b62[..20])),
            (
                "slack-token",
                format!("{}-1234567890-9876543210-{}", "xoxb", &b62[..24]),
            ),
            (
                "slack-webhook",
                format!(
                    "url = \"https://{}/services/T0ABCDEFG/B0HIJKLMN/{}\"",
                    "hooks.slack.com",
                    &b62[..24]
                ),
            ),
            ("stripe-live-key", format!("{}{}", "sk_live_", &b62[..24])),
            ("private-key", format!("\"{pem}\\n{}\"", &b64[..40])),
            (
                "jwt",
                format!(
                    "Authorization: Bearer {}{}.{}{}.{}",
                    "eyJ",
                    "hbGciOiJIUzI1NiJ9",
                    "eyJ",
                    "zdWIiOiIxMjM0NTY3ODkwIn0",
                    &b62[..43]
                ),
            ),
            (
                "generic-secret-assignment",
                format!("DB_PASSWORD = \"{}\"", &b62[3..23]),
            ),
        ]
    }

    #[test]
    fn every_builtin_pattern_finds_its_fake() {
        let s = SecretScanner::new(&[]).unwrap();
        for (pattern, line) in fake_secrets() {
            let found = s.scan_file("f", &lines(&[&line]));
            assert!(
                found.iter().any(|f| f.pattern == pattern),
                "{pattern} not found in its fake; got {found:?}"
            );
        }
    }

    #[test]
    fn ordinary_code_is_not_flagged() {
        let s = SecretScanner::new(&[]).unwrap();
        let clean = [
            "let password = read_password()?;",
            "password: ${{ secrets.DB_PASSWORD }}",
            "token = \"<your token here>\"",
            "api_key = \"YOUR_API_KEY_GOES_HERE_123\"",
            "if token == \"abcdef0123456789abcdef\" {",
            "secret_file = \"/etc/pullwarden/secret-token-42\"",
            "token_type = \"BearerTokenType2024xyz\"",
            "const PEM_HEADER: &str = \"-----BEGIN RSA PRIVATE KEY-----\";",
            "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
            "password = \"correcthorsebatterystaple\"",
            "auth_token_header = \"X-Auth-Token-Header-v2\"",
            "checksum = \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"",
            "private_key_path: ./keys/deploy_2024.pem",
            "secret = \"projects.locations.secrets.v1\"",
            "TOKEN_URL=https://oauth2.example.com/token/v2/abc123",
            "fn token(&self) -> &str { &self.token_0123456789abcdef }",
            "    // the api key is AKIA followed by sixteen characters",
            "hashed_password: \"$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2g\"",
            "password: \"$DB_PASSWORD_FROM_ENV_2\"",
            "let token = \"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9\";",
        ];
        for line in clean {
            let found = s.scan_file("f", &lines(&[line]));
            assert!(found.is_empty(), "false positive on {line:?}: {found:?}");
        }
    }

    #[test]
    fn generic_rule_needs_entropy_and_an_assignment() {
        let s = SecretScanner::new(&[]).unwrap();
        let hit = |l: &str| !s.scan_file("f", &lines(&[l])).is_empty();
        assert!(hit("client_secret: \"q8Zr3vN1xK7pW2mT9sLd\""));
        assert!(hit("export API_KEY=q8Zr3vN1xK7pW2mT9sLd"));
        assert!(hit(
            "\"secret\": \"3gEsCfjlV2ugRwgpU#w1*WaW*wa4NXgGmpCfkbG3\","
        ));
        // Same value, but inside code and unquoted: not a config line.
        assert!(!hit("call(api_key=q8Zr3vN1xK7pW2mT9sLd)"));
        // Low entropy.
        assert!(!hit("password = \"aaaaaaaaaaaaaaaa1111\""));
        // Too short.
        assert!(!hit("password = \"q8Zr3vN1xK7p\""));
        assert!(shannon_entropy("") == 0.0);
        assert!((shannon_entropy("abcd") - 2.0).abs() < 1e-9);
    }

    #[test]
    fn pem_headers_need_key_material() {
        let s = SecretScanner::new(&[]).unwrap();
        let header = ["-----BEGIN ", "OPENSSH PRIVATE KEY-----"].concat();
        let body = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW";
        let found = s.scan_file("id_ed25519", &lines(&[&header, body]));
        assert_eq!(
            found,
            vec![Finding {
                path: "id_ed25519".into(),
                line: 1,
                pattern: "private-key".into()
            }]
        );
        // The header followed by prose, or alone, is documentation.
        assert!(
            s.scan_file("a.md", &lines(&[&header, "is how a key starts"]))
                .is_empty()
        );
        // A gap in line numbers means the next line is not the body.
        let gap = vec![
            AddedLine {
                line: 1,
                text: header.clone(),
            },
            AddedLine {
                line: 5,
                text: body.into(),
            },
        ];
        assert!(s.scan_file("a", &gap).is_empty());
    }

    #[test]
    fn extra_patterns_and_findings_never_hold_the_text() {
        let extra = vec![NamedPattern {
            name: "acme-key".into(),
            regex: r"acme_[0-9a-f]{8}".into(),
        }];
        let s = SecretScanner::new(&extra).unwrap();
        assert!(s.pattern_names().contains(&"acme-key"));
        let secret = "acme_0badc0de";
        let found = s.scan_file("conf/app.ini", &lines(&["x", &format!("k = {secret}")]));
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].line, found[0].pattern.as_str()), (2, "acme-key"));
        let shown = format!("{found:?} {}", serde_json::to_string(&found).unwrap());
        assert!(!shown.contains("0badc0de"), "{shown}");

        let bad = vec![NamedPattern {
            name: "broken".into(),
            regex: "(".into(),
        }];
        assert!(SecretScanner::new(&bad).unwrap_err().contains("\"broken\""));
    }

    #[test]
    fn metadata_names_are_recognised() {
        assert!(metadata_name("password_file"));
        assert!(metadata_name("AWS_SECRET_KEY_ID"));
        assert!(metadata_name("token-type"));
        assert!(!metadata_name("db_password"));
        assert!(!metadata_name("tokenizer_secret"));
        // `valid` ends in "id" but not as a word.
        assert!(!metadata_name("secret_valid"));
    }
}
