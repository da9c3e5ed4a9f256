//! Pure authentication of a delivery.
//!
//! - GitHub: `X-Hub-Signature-256: sha256=<64 hex>`, HMAC-SHA256 of the raw body. The legacy
//!   `X-Hub-Signature: sha1=…` header alone is refused (SHA-1 is not accepted).
//! - Gitea: `X-Gitea-Signature: <64 hex>` (no prefix), HMAC-SHA256 of the raw body.
//! - GitLab: `X-Gitlab-Token: <token>`, the secret itself in plain text.
//!
//! The credential is read from the headers once ([`presented_credential`]) and then checked
//! against each candidate secret ([`verify`]). Comparisons are constant time: HMACs through
//! `hmac`'s `verify_slice`, tokens by comparing their SHA-256 digests with `subtle` (which also
//! hides the secret's length). An empty secret never verifies: anyone can compute an HMAC keyed
//! with nothing. Nothing here logs, and [`PresentedCredential`]'s `Debug` is redacted.

use std::fmt;

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Forge, WebhookSecret};

type HmacSha256 = Hmac<Sha256>;

/// The credential a delivery presented, decoded but not yet checked.
#[derive(Clone)]
pub enum PresentedCredential {
    /// GitHub / Gitea: the 32-byte HMAC-SHA256 tag.
    HmacSha256([u8; 32]),
    /// GitLab: the plain token.
    Token(WebhookSecret),
}

impl fmt::Debug for PresentedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PresentedCredential::HmacSha256(_) => f.write_str("HmacSha256(<redacted>)"),
            PresentedCredential::Token(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

/// Why no usable credential was presented. All of these are answered `401 unauthorized`,
/// exactly like a credential that does not verify; the variant is only for debug logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("no signature or token header")]
    Missing,
    #[error("only the legacy SHA-1 signature header was sent")]
    LegacySha1Only,
    #[error("signature names an unsupported algorithm")]
    WrongAlgorithm,
    #[error("signature is not 64 hexadecimal digits")]
    Malformed,
    #[error("signature or token header is repeated")]
    Repeated,
}

const GITHUB_SIGNATURE: &str = "X-Hub-Signature-256";
const GITHUB_LEGACY_SIGNATURE: &str = "X-Hub-Signature";
const GITEA_SIGNATURE: &str = "X-Gitea-Signature";
const GITLAB_TOKEN: &str = "X-Gitlab-Token";

/// Read the credential a delivery presents for `forge`.
pub fn presented_credential(
    forge: Forge,
    headers: &HeaderMap,
) -> Result<PresentedCredential, CredentialError> {
    match forge {
        Forge::Github => match one_header(headers, GITHUB_SIGNATURE)? {
            None if headers.contains_key(GITHUB_LEGACY_SIGNATURE) => {
                Err(CredentialError::LegacySha1Only)
            }
            None => Err(CredentialError::Missing),
            Some(value) => match value.split_once('=') {
                Some(("sha256", hex)) => decode_tag(hex),
                Some(_) => Err(CredentialError::WrongAlgorithm),
                None => Err(CredentialError::Malformed),
            },
        },
        Forge::Gitea => match one_header(headers, GITEA_SIGNATURE)? {
            None => Err(CredentialError::Missing),
            // Gitea sends bare hex; `sha256=…`/`sha1=…` here is someone else's format.
            Some(value) if value.contains('=') => Err(CredentialError::WrongAlgorithm),
            Some(value) => decode_tag(value),
        },
        Forge::Gitlab => match one_header(headers, GITLAB_TOKEN)? {
            None => Err(CredentialError::Missing),
            Some(value) => Ok(PresentedCredential::Token(WebhookSecret::new(value))),
        },
    }
}

/// Whether `presented` proves knowledge of `secret` for this raw `body`. Constant time in the
/// compared values.
pub fn verify(presented: &PresentedCredential, secret: &WebhookSecret, body: &[u8]) -> bool {
    let key = secret.expose();
    if key.is_empty() {
        return false;
    }
    match presented {
        PresentedCredential::HmacSha256(tag) => {
            let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
                return false;
            };
            mac.update(body);
            mac.verify_slice(tag).is_ok()
        }
        PresentedCredential::Token(token) => {
            let presented = Sha256::digest(token.expose());
            let expected = Sha256::digest(key);
            presented.ct_eq(&expected).into()
        }
    }
}

/// One header value as bytes-checked text: absent or blank → `None`, repeated → error.
fn one_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, CredentialError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(CredentialError::Repeated);
    }
    let value = first
        .to_str()
        .map_err(|_| CredentialError::Malformed)?
        .trim();
    Ok((!value.is_empty()).then_some(value))
}

fn decode_tag(hex_digits: &str) -> Result<PresentedCredential, CredentialError> {
    let mut tag = [0u8; 32];
    if hex_digits.len() != 64 {
        return Err(CredentialError::Malformed);
    }
    hex::decode_to_slice(hex_digits, &mut tag).map_err(|_| CredentialError::Malformed)?;
    Ok(PresentedCredential::HmacSha256(tag))
}

/// `hex(HMAC-SHA256(secret, body))`, for signing test deliveries and for tools that emulate a
/// forge.
pub fn hmac_sha256_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use http::HeaderValue;

    const SECRET: &str = "It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    /// From GitHub's "Validating webhook deliveries" documentation: an independent check that
    /// we sign exactly the raw body with the raw secret.
    const GITHUB_DOC_SIGNATURE: &str =
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn secret() -> WebhookSecret {
        WebhookSecret::new(SECRET)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn check(forge: Forge, pairs: &[(&'static str, &str)]) -> Result<bool, CredentialError> {
        presented_credential(forge, &headers(pairs)).map(|c| verify(&c, &secret(), BODY))
    }

    #[test]
    fn signer_matches_githubs_documented_example() {
        assert_eq!(
            hmac_sha256_hex(SECRET.as_bytes(), BODY),
            GITHUB_DOC_SIGNATURE
        );
    }

    #[test]
    fn github_signatures() {
        let good = format!("sha256={GITHUB_DOC_SIGNATURE}");
        assert_eq!(check(Forge::Github, &[(GITHUB_SIGNATURE, &good)]), Ok(true));
        let upper = format!("sha256={}", GITHUB_DOC_SIGNATURE.to_uppercase());
        assert_eq!(
            check(Forge::Github, &[(GITHUB_SIGNATURE, &upper)]),
            Ok(true)
        );
        // The legacy header next to a good one is fine; only the -256 header counts.
        let with_legacy = [
            (
                GITHUB_LEGACY_SIGNATURE,
                "sha1=7d38cdd689735b008b3c702edd92eea23791c5f6",
            ),
            (GITHUB_SIGNATURE, good.as_str()),
        ];
        assert_eq!(check(Forge::Github, &with_legacy), Ok(true));

        let mut flipped = GITHUB_DOC_SIGNATURE.to_owned().into_bytes();
        flipped[10] = if flipped[10] == b'a' { b'b' } else { b'a' };
        let bad = format!("sha256={}", String::from_utf8(flipped).unwrap());
        assert_eq!(check(Forge::Github, &[(GITHUB_SIGNATURE, &bad)]), Ok(false));

        assert_eq!(check(Forge::Github, &[]), Err(CredentialError::Missing));
        assert_eq!(
            check(Forge::Github, &[(GITHUB_SIGNATURE, "")]),
            Err(CredentialError::Missing)
        );
        assert_eq!(
            check(
                Forge::Github,
                &[(
                    GITHUB_LEGACY_SIGNATURE,
                    "sha1=7d38cdd689735b008b3c702edd92eea23791c5f6"
                )]
            ),
            Err(CredentialError::LegacySha1Only)
        );
        for wrong in [
            format!("sha1={GITHUB_DOC_SIGNATURE}"),
            format!("sha512={GITHUB_DOC_SIGNATURE}"),
            format!("SHA256={GITHUB_DOC_SIGNATURE}"),
        ] {
            assert_eq!(
                check(Forge::Github, &[(GITHUB_SIGNATURE, &wrong)]),
                Err(CredentialError::WrongAlgorithm),
                "{wrong}"
            );
        }
        for malformed in [
            GITHUB_DOC_SIGNATURE.to_owned(),
            format!("sha256={}", &GITHUB_DOC_SIGNATURE[..40]),
            format!("sha256={GITHUB_DOC_SIGNATURE}00"),
            format!("sha256={}zz", &GITHUB_DOC_SIGNATURE[..62]),
            "sha256=".to_owned(),
        ] {
            assert_eq!(
                check(Forge::Github, &[(GITHUB_SIGNATURE, &malformed)]),
                Err(CredentialError::Malformed),
                "{malformed}"
            );
        }
        assert_eq!(
            check(
                Forge::Github,
                &[(GITHUB_SIGNATURE, &good), (GITHUB_SIGNATURE, &good)]
            ),
            Err(CredentialError::Repeated)
        );
    }

    #[test]
    fn gitea_signatures() {
        assert_eq!(
            check(Forge::Gitea, &[(GITEA_SIGNATURE, GITHUB_DOC_SIGNATURE)]),
            Ok(true)
        );
        let prefixed = format!("sha256={GITHUB_DOC_SIGNATURE}");
        assert_eq!(
            check(Forge::Gitea, &[(GITEA_SIGNATURE, &prefixed)]),
            Err(CredentialError::WrongAlgorithm)
        );
        // Gitea also sends GitHub-style headers; the Gitea route only trusts its own.
        assert_eq!(
            check(Forge::Gitea, &[(GITHUB_SIGNATURE, &prefixed)]),
            Err(CredentialError::Missing)
        );
        assert_eq!(
            check(Forge::Gitea, &[(GITEA_SIGNATURE, "")]),
            Err(CredentialError::Missing)
        );
        assert_eq!(
            check(
                Forge::Gitea,
                &[(GITEA_SIGNATURE, &GITHUB_DOC_SIGNATURE[..63])]
            ),
            Err(CredentialError::Malformed)
        );
        let not_hex = format!("{}xy", &GITHUB_DOC_SIGNATURE[..62]);
        assert_eq!(
            check(Forge::Gitea, &[(GITEA_SIGNATURE, &not_hex)]),
            Err(CredentialError::Malformed)
        );
        let other = hmac_sha256_hex(b"another secret", BODY);
        assert_eq!(check(Forge::Gitea, &[(GITEA_SIGNATURE, &other)]), Ok(false));
        // Signature over a different body.
        let c = presented_credential(
            Forge::Gitea,
            &headers(&[(GITEA_SIGNATURE, GITHUB_DOC_SIGNATURE)]),
        )
        .unwrap();
        assert!(!verify(&c, &secret(), b"Hello, World?"));
    }

    #[test]
    fn gitlab_tokens() {
        assert_eq!(check(Forge::Gitlab, &[(GITLAB_TOKEN, SECRET)]), Ok(true));
        assert_eq!(
            check(
                Forge::Gitlab,
                &[(GITLAB_TOKEN, "It's a Secret to Everybody!")]
            ),
            Ok(false)
        );
        assert_eq!(
            check(Forge::Gitlab, &[(GITLAB_TOKEN, "It's a Secret")]),
            Ok(false)
        );
        assert_eq!(check(Forge::Gitlab, &[]), Err(CredentialError::Missing));
        assert_eq!(
            check(Forge::Gitlab, &[(GITLAB_TOKEN, "  ")]),
            Err(CredentialError::Missing)
        );
        // A GitHub signature is no GitLab credential.
        assert_eq!(
            check(Forge::Gitlab, &[(GITHUB_SIGNATURE, GITHUB_DOC_SIGNATURE)]),
            Err(CredentialError::Missing)
        );
    }

    #[test]
    fn empty_secret_never_verifies() {
        let empty = WebhookSecret::new(Vec::new());
        let tag = hmac_sha256_hex(b"", BODY);
        let c = presented_credential(Forge::Gitea, &headers(&[(GITEA_SIGNATURE, &tag)])).unwrap();
        assert!(!verify(&c, &empty, BODY));
        let token = PresentedCredential::Token(WebhookSecret::new(Vec::new()));
        assert!(!verify(&token, &empty, BODY));
    }

    #[test]
    fn debug_output_is_redacted() {
        let c = presented_credential(Forge::Gitlab, &headers(&[(GITLAB_TOKEN, SECRET)])).unwrap();
        let shown = format!("{c:?} {:?}", secret());
        assert!(!shown.contains("Secret to"), "{shown}");
        let c = presented_credential(
            Forge::Gitea,
            &headers(&[(GITEA_SIGNATURE, GITHUB_DOC_SIGNATURE)]),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("757107"));
    }
}
