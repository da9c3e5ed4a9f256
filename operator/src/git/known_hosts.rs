//! OpenSSH `known_hosts` matching for SSH remotes: a host is accepted only when a pinned key
//! matches exactly; unknown hosts, changed keys and `@revoked` keys are refused.
//!
//! Supported: plain and comma-separated host patterns, `*`/`?` wildcards, `!` negation,
//! `[host]:port` for non-22 ports, hashed hosts (`|1|salt|hmac-sha1`), `@revoked`.
//! `@cert-authority` lines are ignored (host certificates are not verified by libgit2's
//! callback, so they can never vouch for a key here).

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::forge::ForgeError;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    Glob { negated: bool, pattern: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    marker: Marker,
    patterns: Vec<Pattern>,
    key: Vec<u8>,
}

/// Parsed `known_hosts` content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

/// Outcome of checking a presented host key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKeyVerdict {
    Trusted,
    /// The host is listed with other keys: possibly a man in the middle.
    Mismatch,
    Unknown,
    Revoked,
}

fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pattern[1..], text) || (!text.is_empty() && glob_match(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p.eq_ignore_ascii_case(t) => glob_match(&pattern[1..], &text[1..]),
        _ => false,
    }
}

impl Pattern {
    fn parse(p: &str) -> Option<Pattern> {
        if let Some(rest) = p.strip_prefix("|1|") {
            let (salt, hash) = rest.split_once('|')?;
            let b64 = base64::engine::general_purpose::STANDARD;
            return Some(Pattern::Hashed {
                salt: b64.decode(salt).ok()?,
                hash: b64.decode(hash).ok()?,
            });
        }
        let (negated, pattern) = match p.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, p),
        };
        (!pattern.is_empty()).then(|| Pattern::Glob {
            negated,
            pattern: pattern.to_string(),
        })
    }
}

impl Entry {
    /// OpenSSH semantics: some positive pattern matches and no negated one does.
    fn matches(&self, name: &str) -> bool {
        let mut positive = false;
        for p in &self.patterns {
            match p {
                Pattern::Hashed { salt, hash } => {
                    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(salt) else {
                        continue;
                    };
                    mac.update(name.as_bytes());
                    if mac.verify_slice(hash).is_ok() {
                        positive = true;
                    }
                }
                Pattern::Glob { negated, pattern } => {
                    if glob_match(pattern.as_bytes(), name.as_bytes()) {
                        if *negated {
                            return false;
                        }
                        positive = true;
                    }
                }
            }
        }
        positive
    }
}

impl KnownHosts {
    /// Parse the Secret's `known_hosts`. Malformed lines are skipped; no usable line is an error
    /// (an SSH credential must pin at least one host).
    pub fn parse(text: &str) -> Result<Self, ForgeError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut entries = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_ascii_whitespace();
            let mut first = fields.next().unwrap_or_default();
            let marker = match first {
                "@revoked" => Marker::Revoked,
                "@cert-authority" => Marker::CertAuthority,
                _ => Marker::None,
            };
            if marker != Marker::None {
                first = fields.next().unwrap_or_default();
            }
            let (Some(_key_type), Some(key)) = (fields.next(), fields.next()) else {
                continue;
            };
            let Ok(key) = b64.decode(key) else {
                continue;
            };
            let patterns: Vec<Pattern> = first.split(',').filter_map(Pattern::parse).collect();
            if patterns.is_empty() {
                continue;
            }
            entries.push(Entry {
                marker,
                patterns,
                key,
            });
        }
        if entries.is_empty() {
            return Err(ForgeError::invalid_config(
                "credentials secret key `known_hosts` holds no usable host key line",
            ));
        }
        Ok(KnownHosts { entries })
    }

    /// The name OpenSSH looks up: `host`, or `[host]:port` for non-default ports.
    pub fn lookup_name(host: &str, port: Option<u16>) -> String {
        match port {
            Some(p) if p != 22 => format!("[{host}]:{p}"),
            _ => host.to_string(),
        }
    }

    /// Check a presented key. `key_matches` compares an entry's key blob with the server's
    /// (raw blob, or its SHA-256 when libssh2 only reports a hash).
    pub fn check(
        &self,
        host: &str,
        port: Option<u16>,
        key_matches: impl Fn(&[u8]) -> bool,
    ) -> HostKeyVerdict {
        let name = Self::lookup_name(host, port);
        let mut listed = false;
        let mut trusted = false;
        for e in self.entries.iter().filter(|e| e.matches(&name)) {
            let same = key_matches(&e.key);
            match e.marker {
                Marker::Revoked if same => return HostKeyVerdict::Revoked,
                Marker::Revoked | Marker::CertAuthority => {}
                Marker::None => {
                    listed = true;
                    trusted |= same;
                }
            }
        }
        match (trusted, listed) {
            (true, _) => HostKeyVerdict::Trusted,
            (false, true) => HostKeyVerdict::Mismatch,
            (false, false) => HostKeyVerdict::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIHz7Y3kq0Xo2pYkE1nR3mVb0k6d5S8ZrJqv0xUeWb3Xa";

    fn blob(k: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.decode(k).unwrap()
    }

    fn check(kh: &KnownHosts, host: &str, port: Option<u16>, key: &str) -> HostKeyVerdict {
        let presented = blob(key);
        kh.check(host, port, |k| k == presented.as_slice())
    }

    #[test]
    fn plain_wildcard_negation_and_ports() {
        let kh = KnownHosts::parse(&format!(
            "# comment\n\
             github.com,140.82.112.3 ssh-ed25519 {KEY_A}\n\
             *.corp,!evil.corp ssh-ed25519 {KEY_A}\n\
             [git.corp]:2222 ssh-ed25519 {KEY_B}\n\
             garbage line\n"
        ))
        .unwrap();
        assert_eq!(
            check(&kh, "github.com", None, KEY_A),
            HostKeyVerdict::Trusted
        );
        assert_eq!(
            check(&kh, "GitHub.com", Some(22), KEY_A),
            HostKeyVerdict::Trusted
        );
        assert_eq!(
            check(&kh, "github.com", None, KEY_B),
            HostKeyVerdict::Mismatch
        );
        assert_eq!(
            check(&kh, "gitlab.com", None, KEY_A),
            HostKeyVerdict::Unknown
        );
        assert_eq!(
            check(&kh, "build.corp", None, KEY_A),
            HostKeyVerdict::Trusted
        );
        assert_eq!(
            check(&kh, "evil.corp", None, KEY_A),
            HostKeyVerdict::Unknown
        );
        assert_eq!(
            check(&kh, "git.corp", Some(2222), KEY_B),
            HostKeyVerdict::Trusted
        );
        // Port 2222 must not be satisfied by the port-22 wildcard entry.
        assert_eq!(
            check(&kh, "git.corp", Some(2222), KEY_A),
            HostKeyVerdict::Mismatch
        );
    }

    #[test]
    fn hashed_hosts_and_revocation() {
        // |1|salt|HMAC-SHA1(salt, "github.com"), computed here the way ssh-keygen -H does.
        let salt = b"0123456789abcdefghij";
        let mut mac = Hmac::<Sha1>::new_from_slice(salt).unwrap();
        mac.update(b"github.com");
        let b64 = base64::engine::general_purpose::STANDARD;
        let line = format!(
            "|1|{}|{} ssh-ed25519 {KEY_A}\n@revoked * ssh-ed25519 {KEY_B}\n",
            b64.encode(salt),
            b64.encode(mac.finalize().into_bytes())
        );
        let kh = KnownHosts::parse(&line).unwrap();
        assert_eq!(
            check(&kh, "github.com", None, KEY_A),
            HostKeyVerdict::Trusted
        );
        assert_eq!(
            check(&kh, "gitlab.com", None, KEY_A),
            HostKeyVerdict::Unknown
        );
        assert_eq!(
            check(&kh, "github.com", None, KEY_B),
            HostKeyVerdict::Revoked
        );
    }

    #[test]
    fn empty_known_hosts_is_an_error() {
        for text in ["", "# only a comment", "host ssh-ed25519 !!!notbase64"] {
            assert_eq!(
                KnownHosts::parse(text).unwrap_err().category(),
                "InvalidConfig"
            );
        }
        assert!(glob_match(b"a*c?", b"abbbcd"));
        assert!(!glob_match(b"a*c", b"abd"));
    }
}
