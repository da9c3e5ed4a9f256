//! Credentials: who is calling, what they may see, and the GitHub App JWT exchange.
//!
//! Flow: [`identify`] reads `Authorization: token|Bearer X`, `PRIVATE-TOKEN: X` (GitLab) or
//! HTTP Basic (git over HTTP; the password is the token, as on every forge) and yields an
//! [`Identity`]. A Bearer value shaped like a JWT is verified with RS256 against the registered
//! Apps' public keys. Unknown or expired credentials are [`Identity::Invalid`] and get the
//! forge's 401; visibility of private repositories is decided by [`can_see`].
use base64::Engine;
use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::model::Forge;
use super::state::{Repo, State, Token, TokenKind, now};

/// The caller.
#[derive(Debug, Clone)]
pub enum Identity {
    /// No credentials.
    Anonymous,
    /// Credentials sent but not valid; carries why (for the 401 message).
    Invalid(String),
    /// A registered or installation token.
    Token(Token),
    /// A GitHub App authenticated with its JWT.
    App(u64),
}

impl Identity {
    /// The key of the caller's rate-limit bucket and request counters.
    pub fn client(&self) -> String {
        match self {
            Identity::Anonymous => "anonymous".into(),
            Identity::Invalid(_) => "invalid".into(),
            Identity::Token(t) => t.client.clone(),
            Identity::App(id) => format!("app:{id}"),
        }
    }

    /// The token value, for matching fault rules (`anonymous` when none).
    pub fn token_value(&self) -> String {
        match self {
            Identity::Token(t) => t.token.clone(),
            Identity::Anonymous => "anonymous".into(),
            Identity::Invalid(_) => "invalid".into(),
            Identity::App(id) => format!("app:{id}"),
        }
    }

    /// The user acting (None for anonymous callers and App JWTs).
    pub fn login(&self) -> Option<&str> {
        match self {
            Identity::Token(t) => Some(&t.login),
            _ => None,
        }
    }

    /// Whether this is an App installation token (needed for check runs).
    pub fn is_installation(&self) -> bool {
        matches!(
            self,
            Identity::Token(Token {
                kind: TokenKind::Installation { .. },
                ..
            })
        )
    }
}

/// Extracts the credential a client sent: (value, came-as-Bearer).
fn credential(headers: &HeaderMap) -> Option<(String, bool)> {
    if let Some(v) = headers.get("private-token").and_then(|v| v.to_str().ok()) {
        return Some((v.trim().to_string(), false));
    }
    let auth = headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
    let rest = rest.trim();
    match scheme.to_ascii_lowercase().as_str() {
        "token" => Some((rest.to_string(), false)),
        "bearer" => Some((rest.to_string(), true)),
        "basic" => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            let s = String::from_utf8(decoded).ok()?;
            let (user, pass) = s.split_once(':').unwrap_or((&s, ""));
            // `x-access-token:TOKEN`, `oauth2:TOKEN`, or a token given as the user name.
            Some((
                if pass.is_empty() {
                    user.to_string()
                } else {
                    pass.to_string()
                },
                false,
            ))
        }
        _ => Some((auth.to_string(), false)),
    }
}

/// Resolves the caller of a request to `forge`.
pub fn identify(state: &State, headers: &HeaderMap, forge: Forge) -> Identity {
    let Some((cred, bearer)) = credential(headers) else {
        return Identity::Anonymous;
    };
    if cred.is_empty() {
        return Identity::Anonymous;
    }
    if bearer && cred.starts_with("eyJ") && cred.matches('.').count() == 2 {
        return verify_app_jwt(state, &cred);
    }
    match state.tokens.get(&cred) {
        Some(t) => {
            if t.forge.is_some_and(|f| f != forge) {
                return Identity::Invalid("token is not valid on this forge".into());
            }
            if let TokenKind::Installation { expires_at, .. } = t.kind
                && expires_at <= now()
            {
                return Identity::Invalid("token expired".into());
            }
            Identity::Token(t.clone())
        }
        None => Identity::Invalid("Bad credentials".into()),
    }
}

/// Verifies a GitHub App JWT the way GitHub does: RS256 signature by the App's key, `iss` the
/// App id (string or number), `exp` in the future and at most 10 minutes after `iat`.
fn verify_app_jwt(state: &State, jwt: &str) -> Identity {
    let payload = jwt.split('.').nth(1).unwrap_or("");
    let claims: Option<Value> = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let Some(claims) = claims else {
        return Identity::Invalid("A JSON web token could not be decoded".into());
    };
    let iss = match claims.get("iss") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    let Some(app) = iss.and_then(|id| state.apps.get(&id)) else {
        return Identity::Invalid("Integration not found".into());
    };
    let key = match DecodingKey::from_rsa_pem(app.public_key_pem.as_bytes()) {
        Ok(k) => k,
        Err(e) => return Identity::Invalid(format!("App public key unusable: {e}")),
    };
    let mut v = Validation::new(Algorithm::RS256);
    // `iss` may be a number (octocrab sends one), which jsonwebtoken cannot check; done above.
    v.set_required_spec_claims(&["exp"]);
    v.leeway = 60;
    if let Err(e) = jsonwebtoken::decode::<Value>(jwt, &key, &v) {
        return Identity::Invalid(format!("A JSON web token could not be decoded: {e}"));
    }
    let iat = claims.get("iat").and_then(Value::as_i64).unwrap_or(0);
    let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
    if exp - iat > 600 + 60 {
        return Identity::Invalid(
            "'Expiration time' claim ('exp') is too far in the future".into(),
        );
    }
    Identity::App(app.app_id)
}

/// Whether the caller may see `repo`. Like GitHub, private repositories a caller may not see
/// are answered with 404, not 403.
pub fn can_see(state: &State, ident: &Identity, repo: &Repo) -> bool {
    if !repo.private {
        return true;
    }
    match ident {
        Identity::Token(t) => match &t.kind {
            TokenKind::Personal => t
                .repos
                .as_ref()
                .is_none_or(|list| list.iter().any(|p| p == &repo.path)),
            TokenKind::Installation {
                installation_id, ..
            } => installation_covers(state, *installation_id, repo),
        },
        _ => false,
    }
}

/// Whether an installation includes `repo`.
pub fn installation_covers(state: &State, installation_id: u64, repo: &Repo) -> bool {
    state
        .installations
        .get(&installation_id)
        .is_some_and(|i| match &i.repositories {
            Some(list) => list.iter().any(|p| p == &repo.path),
            None => i.account == repo.owner,
        })
}
