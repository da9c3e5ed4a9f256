//! Credentials read from a Repository's `auth.secretRef` Secret.
//!
//! Flow: the controller reads the Secret's `data` map and calls
//! [`Credentials::from_secret_data`], which accepts exactly one of the documented key sets and
//! explains precisely what is missing or conflicting otherwise. The secret material lives in
//! [`SecretString`]s and never reaches `Debug`, `Display` or logs; caches and metrics identify a
//! credential by [`Credentials::fingerprint`], never by its value. The fingerprint is an
//! HMAC-SHA256 under a random key drawn once per process: stable inside the process (one
//! budget per credential), but useless to confirm a guessed token — a plain hash in a metric
//! label would let anyone who can scrape `/metrics` test candidate tokens offline.

use std::collections::BTreeMap;
use std::fmt;

use hmac::{Hmac, Mac};
pub use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use super::error::ForgeError;

pub const KEY_TOKEN: &str = "token";
pub const KEY_APP_ID: &str = "githubAppID";
pub const KEY_INSTALLATION_ID: &str = "githubInstallationID";
pub const KEY_PRIVATE_KEY: &str = "githubPrivateKey";
pub const KEY_USERNAME: &str = "username";
pub const KEY_PASSWORD: &str = "password";
pub const KEY_IDENTITY: &str = "identity";
pub const KEY_KNOWN_HOSTS: &str = "known_hosts";

const GROUPS: [(&str, &[&str]); 4] = [
    ("token", &[KEY_TOKEN]),
    (
        "GitHub App",
        &[KEY_APP_ID, KEY_INSTALLATION_ID, KEY_PRIVATE_KEY],
    ),
    ("basic auth", &[KEY_USERNAME, KEY_PASSWORD]),
    ("SSH", &[KEY_IDENTITY, KEY_KNOWN_HOSTS]),
];

const SUPPORTED: &str = "`token`; `githubAppID` + `githubInstallationID` + `githubPrivateKey`; \
                         `username` + `password`; `identity` + `known_hosts`";

/// How to authenticate to a forge or git remote.
#[derive(Clone)]
pub enum Credentials {
    /// No Secret: public repositories over https (plain git, or read-only API use).
    Anonymous,
    /// A personal/project/installation access token.
    Token(SecretString),
    /// A GitHub App installation; octocrab mints and caches installation tokens from it.
    GithubApp {
        app_id: u64,
        installation_id: u64,
        private_key_pem: SecretString,
    },
    Basic {
        username: String,
        password: SecretString,
    },
    /// An SSH private key (OpenSSH or PEM) plus the `known_hosts` lines that pin the server.
    Ssh {
        identity: SecretString,
        known_hosts: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Credentials::Anonymous"),
            Credentials::Token(_) => f
                .debug_struct("Credentials::Token")
                .field("fingerprint", &self.short_fingerprint())
                .finish(),
            Credentials::GithubApp {
                app_id,
                installation_id,
                ..
            } => f
                .debug_struct("Credentials::GithubApp")
                .field("app_id", app_id)
                .field("installation_id", installation_id)
                .field("private_key_pem", &"[REDACTED]")
                .finish(),
            Credentials::Basic { username, .. } => f
                .debug_struct("Credentials::Basic")
                .field("username", username)
                .field("password", &"[REDACTED]")
                .finish(),
            Credentials::Ssh { known_hosts, .. } => f
                .debug_struct("Credentials::Ssh")
                .field("identity", &"[REDACTED]")
                .field("known_hosts_lines", &known_hosts.lines().count())
                .finish(),
        }
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.type_name())?;
        if !matches!(self, Credentials::Anonymous) {
            write!(f, " {}", self.short_fingerprint())?;
        }
        Ok(())
    }
}

/// The per-process key of [`Credentials::fingerprint`]; never leaves the process.
fn process_key() -> &'static [u8; 32] {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    KEY.get_or_init(rand::random)
}

fn text(data: &BTreeMap<String, Vec<u8>>, key: &str) -> Result<String, ForgeError> {
    let raw = data.get(key).map(Vec::as_slice).unwrap_or_default();
    let value = std::str::from_utf8(raw).map_err(|_| {
        ForgeError::invalid_config(format!("credentials secret key `{key}` is not valid UTF-8"))
    })?;
    if value.trim().is_empty() {
        return Err(ForgeError::invalid_config(format!(
            "credentials secret key `{key}` is empty"
        )));
    }
    Ok(value.to_string())
}

fn number(data: &BTreeMap<String, Vec<u8>>, key: &str) -> Result<u64, ForgeError> {
    let value = text(data, key)?;
    value.trim().parse::<u64>().map_err(|_| {
        ForgeError::invalid_config(format!(
            "credentials secret key `{key}` must be a positive integer"
        ))
    })
}

impl Credentials {
    /// A token credential (tests, tooling; controllers use [`Self::from_secret_data`]).
    pub fn token(token: impl Into<String>) -> Self {
        Credentials::Token(SecretString::from(token.into()))
    }

    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials::Basic {
            username: username.into(),
            password: SecretString::from(password.into()),
        }
    }

    pub fn github_app(
        app_id: u64,
        installation_id: u64,
        private_key_pem: impl Into<String>,
    ) -> Self {
        Credentials::GithubApp {
            app_id,
            installation_id,
            private_key_pem: SecretString::from(private_key_pem.into()),
        }
    }

    /// Build credentials from a Secret's `data` map. Exactly one key set must be present.
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, ForgeError> {
        let present: Vec<(&str, &[&str])> = GROUPS
            .iter()
            .copied()
            .filter(|(_, keys)| keys.iter().any(|k| data.contains_key(*k)))
            .collect();
        match present.as_slice() {
            [] => {
                let found: Vec<&str> = data.keys().map(String::as_str).collect();
                Err(ForgeError::invalid_config(format!(
                    "credentials secret has none of the supported key sets ({SUPPORTED}); \
                     found keys: [{}]",
                    found.join(", ")
                )))
            }
            [(name, keys)] => {
                let missing: Vec<String> = keys
                    .iter()
                    .filter(|k| !data.contains_key(**k))
                    .map(|k| format!("`{k}`"))
                    .collect();
                if !missing.is_empty() {
                    let have: Vec<String> = keys
                        .iter()
                        .filter(|k| data.contains_key(**k))
                        .map(|k| format!("`{k}`"))
                        .collect();
                    let why =
                        if *name == "SSH" && missing.iter().any(|m| m.contains(KEY_KNOWN_HOSTS)) {
                            " (host keys must be pinned; unknown hosts are refused)"
                        } else {
                            ""
                        };
                    return Err(ForgeError::invalid_config(format!(
                        "credentials secret has {} for {name} credentials but is missing {}{why}",
                        have.join(" and "),
                        missing.join(" and ")
                    )));
                }
                Self::from_group(name, data)
            }
            several => {
                let names: Vec<String> = several
                    .iter()
                    .map(|(name, keys)| {
                        let used: Vec<String> = keys
                            .iter()
                            .filter(|k| data.contains_key(**k))
                            .map(|k| format!("`{k}`"))
                            .collect();
                        format!("{name} ({})", used.join(", "))
                    })
                    .collect();
                Err(ForgeError::invalid_config(format!(
                    "credentials secret mixes several credential types: {}; keep exactly one of \
                     {SUPPORTED}",
                    names.join(" and ")
                )))
            }
        }
    }

    fn from_group(name: &str, data: &BTreeMap<String, Vec<u8>>) -> Result<Self, ForgeError> {
        match name {
            "token" => Ok(Credentials::Token(SecretString::from(
                text(data, KEY_TOKEN)?.trim().to_string(),
            ))),
            "GitHub App" => {
                let app_id = number(data, KEY_APP_ID)?;
                let installation_id = number(data, KEY_INSTALLATION_ID)?;
                let pem = text(data, KEY_PRIVATE_KEY)?;
                if !pem.contains("-----BEGIN") || !pem.contains("PRIVATE KEY-----") {
                    return Err(ForgeError::invalid_config(format!(
                        "credentials secret key `{KEY_PRIVATE_KEY}` must be a PEM private key \
                         (-----BEGIN RSA PRIVATE KEY-----)"
                    )));
                }
                Ok(Credentials::GithubApp {
                    app_id,
                    installation_id,
                    private_key_pem: SecretString::from(pem),
                })
            }
            "basic auth" => Ok(Credentials::Basic {
                username: text(data, KEY_USERNAME)?.trim().to_string(),
                password: SecretString::from(text(data, KEY_PASSWORD)?.trim_end().to_string()),
            }),
            _ => {
                let identity = text(data, KEY_IDENTITY)?;
                if !identity.contains("PRIVATE KEY-----") {
                    return Err(ForgeError::invalid_config(format!(
                        "credentials secret key `{KEY_IDENTITY}` must be an SSH private key \
                         (-----BEGIN OPENSSH PRIVATE KEY----- or PEM)"
                    )));
                }
                let known_hosts = text(data, KEY_KNOWN_HOSTS)?;
                Ok(Credentials::Ssh {
                    identity: SecretString::from(identity),
                    known_hosts,
                })
            }
        }
    }

    /// Short type name for messages and errors.
    pub fn type_name(&self) -> &'static str {
        match self {
            Credentials::Anonymous => "anonymous",
            Credentials::Token(_) => "token",
            Credentials::GithubApp { .. } => "GitHub App",
            Credentials::Basic { .. } => "basic auth",
            Credentials::Ssh { .. } => "SSH key",
        }
    }

    /// Keyed hash (HMAC-SHA256, per-process random key; hex) over the credential material.
    /// Identifies a credential in cache keys and metric labels without holding or revealing
    /// the secret. Two Secrets with the same token share one budget.
    pub fn fingerprint(&self) -> String {
        let mut h = <Hmac<Sha256> as Mac>::new_from_slice(process_key())
            .expect("HMAC takes keys of any length");
        match self {
            Credentials::Anonymous => h.update(b"anonymous"),
            Credentials::Token(t) => {
                h.update(b"token\0");
                h.update(t.expose_secret().as_bytes());
            }
            Credentials::GithubApp {
                app_id,
                installation_id,
                private_key_pem,
            } => {
                // The installation (not the key) owns the quota; the key is included so that a
                // rotated key gets a fresh client instead of one holding a revoked JWT signer.
                h.update(format!("app\0{app_id}\0{installation_id}\0").as_bytes());
                h.update(private_key_pem.expose_secret().as_bytes());
            }
            Credentials::Basic { username, password } => {
                h.update(b"basic\0");
                h.update(username.as_bytes());
                h.update(b"\0");
                h.update(password.expose_secret().as_bytes());
            }
            Credentials::Ssh {
                identity,
                known_hosts,
            } => {
                h.update(b"ssh\0");
                h.update(identity.expose_secret().as_bytes());
                h.update(b"\0");
                h.update(known_hosts.as_bytes());
            }
        }
        hex::encode(h.finalize().into_bytes())
    }

    /// First 12 hex digits of [`Self::fingerprint`], for metric labels and logs.
    pub fn short_fingerprint(&self) -> String {
        self.fingerprint()[..12].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n";
    const SSH_KEY: &str =
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----\n";

    fn err(pairs: &[(&str, &str)]) -> String {
        let e = Credentials::from_secret_data(&data(pairs)).unwrap_err();
        assert_eq!(e.category(), "InvalidConfig");
        e.to_string()
    }

    #[test]
    fn parses_every_key_set() {
        let t = Credentials::from_secret_data(&data(&[("token", "ghp_abc\n")])).unwrap();
        match &t {
            Credentials::Token(s) => assert_eq!(s.expose_secret(), "ghp_abc"),
            other => panic!("{other:?}"),
        }
        let app = Credentials::from_secret_data(&data(&[
            ("githubAppID", "12345\n"),
            ("githubInstallationID", " 678 "),
            ("githubPrivateKey", PEM),
        ]))
        .unwrap();
        assert!(matches!(
            app,
            Credentials::GithubApp {
                app_id: 12345,
                installation_id: 678,
                ..
            }
        ));
        let basic =
            Credentials::from_secret_data(&data(&[("username", "bot"), ("password", "pw")]))
                .unwrap();
        assert!(matches!(basic, Credentials::Basic { ref username, .. } if username == "bot"));
        let ssh = Credentials::from_secret_data(&data(&[
            ("identity", SSH_KEY),
            ("known_hosts", "github.com ssh-ed25519 AAAA"),
        ]))
        .unwrap();
        assert!(matches!(ssh, Credentials::Ssh { .. }));
        // Unrelated keys (e.g. ca.crt kept in the same Secret) are ignored.
        assert!(Credentials::from_secret_data(&data(&[("token", "t"), ("ca.crt", "x")])).is_ok());
    }

    #[test]
    fn error_messages_name_the_keys() {
        let e = err(&[]);
        assert!(e.contains("none of the supported key sets"), "{e}");
        assert!(e.contains("found keys: []"), "{e}");
        let e = err(&[("tokn", "x")]);
        assert!(e.contains("found keys: [tokn]"), "{e}");

        let e = err(&[("githubAppID", "1"), ("githubPrivateKey", PEM)]);
        assert!(e.contains("missing `githubInstallationID`"), "{e}");
        let e = err(&[("githubAppID", "1")]);
        assert!(
            e.contains("missing `githubInstallationID` and `githubPrivateKey`"),
            "{e}"
        );
        let e = err(&[("username", "u")]);
        assert!(e.contains("missing `password`"), "{e}");
        let e = err(&[("password", "p")]);
        assert!(e.contains("missing `username`"), "{e}");
        let e = err(&[("identity", SSH_KEY)]);
        assert!(
            e.contains("missing `known_hosts`") && e.contains("unknown hosts"),
            "{e}"
        );
        let e = err(&[("known_hosts", "h k v")]);
        assert!(e.contains("missing `identity`"), "{e}");

        let e = err(&[("token", "t"), ("username", "u"), ("password", "p")]);
        assert!(e.contains("mixes several credential types"), "{e}");
        assert!(
            e.contains("token (`token`)") && e.contains("`username`, `password`"),
            "{e}"
        );

        let e = err(&[("token", "  \n")]);
        assert!(e.contains("`token` is empty"), "{e}");
        let e = Credentials::from_secret_data(
            &[("token".to_string(), vec![0xff, 0xfe])]
                .into_iter()
                .collect(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not valid UTF-8"), "{e}");

        let e = err(&[
            ("githubAppID", "abc"),
            ("githubInstallationID", "1"),
            ("githubPrivateKey", PEM),
        ]);
        assert!(
            e.contains("`githubAppID` must be a positive integer"),
            "{e}"
        );
        let e = err(&[
            ("githubAppID", "1"),
            ("githubInstallationID", "1"),
            ("githubPrivateKey", "not a key"),
        ]);
        assert!(e.contains("must be a PEM private key"), "{e}");
        let e = err(&[("identity", "nope"), ("known_hosts", "h t k")]);
        assert!(e.contains("must be an SSH private key"), "{e}");
    }

    #[test]
    fn secrets_never_printed() {
        let secret = "ghp_SUPERSECRET";
        let all = [
            Credentials::from_secret_data(&data(&[("token", secret)])).unwrap(),
            Credentials::from_secret_data(&data(&[("username", "u"), ("password", secret)]))
                .unwrap(),
            Credentials::GithubApp {
                app_id: 1,
                installation_id: 2,
                private_key_pem: SecretString::from(secret.to_string()),
            },
            Credentials::Ssh {
                identity: SecretString::from(secret.to_string()),
                known_hosts: "h k v".into(),
            },
        ];
        for c in &all {
            let dbg = format!("{c:?} {c:#?} {c}");
            assert!(!dbg.contains("SUPERSECRET"), "{dbg}");
            assert!(!c.fingerprint().contains("SUPERSECRET"));
            assert_eq!(c.fingerprint().len(), 64);
            assert_eq!(c.short_fingerprint().len(), 12);
        }
        // Same material → same fingerprint; different material → different.
        let a = Credentials::Token(SecretString::from("a".to_string()));
        let a2 = Credentials::Token(SecretString::from("a".to_string()));
        let b = Credentials::Token(SecretString::from("b".to_string()));
        assert_eq!(a.fingerprint(), a2.fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
        // Keyed: someone who sees the fingerprint (a metric label) cannot confirm a guess by
        // hashing candidate tokens the way the fingerprint is built.
        use sha2::Digest;
        let unkeyed = hex::encode(Sha256::digest(b"token\0a"));
        assert_ne!(a.fingerprint(), unkeyed);
        assert!(!unkeyed.starts_with(&a.short_fingerprint()));
    }
}
