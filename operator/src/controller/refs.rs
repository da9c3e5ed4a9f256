//! Dereferencing: reading the objects a spec points at, with errors that name them.
//!
//! Credentials: a tenant names Secrets in its namespace, but not every Secret there is meant
//! for Pullwarden — a service-account token Secret or another application's database password
//! would otherwise be sent to a forge URL the tenant chose. So a Secret is used as a forge
//! credential or webhook secret only when it opts in ([`secret_opted_in`]: label
//! `pullwarden.dev/credentials: "true"` or type `pullwarden.dev/credentials`), and
//! service-account token Secrets are refused whatever they carry. The Repository's URLs are
//! checked too ([`check_urls`]): `apiUrl` shares the host of `url` unless the operator allows
//! otherwise, and plain `http://` needs `allowInsecureHTTP` for both.

use crate::api::{Repository, RepositorySpec};
use crate::context::Context;
use crate::error::Error;
use crate::forge::{Credentials, ForgeError, ForgeKind, RepoCoordinates};
use crate::settings::NetworkSettings;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use std::collections::BTreeMap;

/// Label by which a Secret opts in to be used as a forge credential or webhook secret.
pub const CREDENTIALS_LABEL: &str = "pullwarden.dev/credentials";
/// Secret type that opts in as well (`type: pullwarden.dev/credentials`).
pub const CREDENTIALS_TYPE: &str = "pullwarden.dev/credentials";
const SA_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
const SA_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";

/// Whether the token controller owns this Secret (a service-account token, or one it would
/// fill in).
fn is_service_account_token(secret: &Secret) -> bool {
    secret.type_.as_deref() == Some(SA_TOKEN_TYPE)
        || secret
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(SA_NAME_ANNOTATION))
}

/// Pure: whether `secret` may be used as a forge credential or webhook secret. The error says
/// what to change (it completes "Secret ns/name ...").
pub fn secret_opted_in(secret: &Secret) -> Result<(), String> {
    if is_service_account_token(secret) {
        return Err(format!(
            "is a service-account token Secret (type {SA_TOKEN_TYPE}); it is never used as a \
             forge credential or webhook secret"
        ));
    }
    let labelled = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(CREDENTIALS_LABEL))
        .is_some_and(|v| v == "true");
    if labelled || secret.type_.as_deref() == Some(CREDENTIALS_TYPE) {
        return Ok(());
    }
    Err(format!(
        "has not opted in to be used by Pullwarden: add the label {CREDENTIALS_LABEL}: \"true\" \
         (kubectl label secret {} {CREDENTIALS_LABEL}=true) or create it with type \
         {CREDENTIALS_TYPE}",
        secret.metadata.name.as_deref().unwrap_or("<name>")
    ))
}

fn data_of(secret: Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .chain(
            secret
                .string_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes())),
        )
        .collect()
}

async fn get_secret(ctx: &Context, namespace: &str, name: &str) -> Result<Secret, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    api.get_opt(name)
        .await?
        .ok_or_else(|| Error::SecretNotFound {
            namespace: namespace.into(),
            name: name.into(),
        })
}

/// The data of Secret `namespace/name` (base64-decoded by the client). Not for forge
/// credentials or webhook secrets: those go through [`credential_secret_data`].
pub async fn secret_data(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    Ok(data_of(get_secret(ctx, namespace, name).await?))
}

/// The data of a Secret used as a forge credential or webhook secret: refused unless it opts
/// in ([`secret_opted_in`]).
pub async fn credential_secret_data(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let secret = get_secret(ctx, namespace, name).await?;
    if let Err(problem) = secret_opted_in(&secret) {
        return Err(Error::SecretRefused {
            namespace: namespace.into(),
            name: name.into(),
            reason: if is_service_account_token(&secret) {
                "ServiceAccountTokenRefused"
            } else {
                "CredentialsNotOptedIn"
            },
            problem,
        });
    }
    Ok(data_of(secret))
}

/// One key of an opted-in credential Secret (e.g. a webhook secret).
pub async fn credential_secret_key(
    ctx: &Context,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<Vec<u8>, Error> {
    let mut data = credential_secret_data(ctx, namespace, name).await?;
    data.remove(key).ok_or_else(|| Error::SecretInvalid {
        namespace: namespace.into(),
        name: name.into(),
        problem: format!("has no key `{key}`"),
    })
}

/// One key of a Secret; a missing key is `SecretInvalid` naming the key.
pub async fn secret_key(
    ctx: &Context,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<Vec<u8>, Error> {
    let mut data = secret_data(ctx, namespace, name).await?;
    data.remove(key).ok_or_else(|| Error::SecretInvalid {
        namespace: namespace.into(),
        name: name.into(),
        problem: format!("has no key `{key}`"),
    })
}

/// The forge kind of a Repository provider.
pub fn forge_kind(spec: &RepositorySpec) -> ForgeKind {
    match spec.provider {
        crate::api::Provider::Github => ForgeKind::Github,
        crate::api::Provider::Gitlab => ForgeKind::Gitlab,
        crate::api::Provider::Gitea => ForgeKind::Gitea,
        crate::api::Provider::Git => ForgeKind::Git,
    }
}

/// Parses the Repository's URLs and checks them against the operator's network settings
/// ([`check_urls`]); errors are spec errors.
pub fn coordinates(
    spec: &RepositorySpec,
    network: &NetworkSettings,
) -> Result<RepoCoordinates, Error> {
    let coords = RepoCoordinates::parse(forge_kind(spec), &spec.url, spec.api_url.as_deref())
        .map_err(|e| Error::InvalidSpec(format!("url: {e}")))?;
    check_urls(spec, &coords, network.allow_cross_host_api_url).map_err(Error::InvalidSpec)?;
    Ok(coords)
}

/// Pure: `allowInsecureHTTP` governs `url` and `apiUrl`; `apiUrl` shares the host of `url`
/// (GitHub's `github.com` → `api.github.com` counts as the same) unless the operator set
/// `--allow-cross-host-api-url`. Otherwise the credential for one forge could be sent to any
/// host a tenant names.
pub fn check_urls(
    spec: &RepositorySpec,
    coords: &RepoCoordinates,
    allow_cross_host: bool,
) -> Result<(), String> {
    let plain = |u: &str| u.trim().to_ascii_lowercase().starts_with("http://");
    if !spec.allow_insecure_http {
        if plain(&spec.url) {
            return Err(
                "url is plain http:// (tokens would travel unencrypted); use https:// or set \
                 allowInsecureHTTP: true (local test forges only)"
                    .into(),
            );
        }
        if spec.api_url.as_deref().is_some_and(plain) {
            return Err(
                "apiUrl is plain http:// (tokens would travel unencrypted); use https:// or set \
                 allowInsecureHTTP: true (local test forges only)"
                    .into(),
            );
        }
    }
    let Some(api_url) = spec.api_url.as_deref() else {
        return Ok(());
    };
    let api_host = url::Url::parse(api_url.trim())
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .ok_or_else(|| format!("apiUrl {api_url:?} has no host"))?;
    let api_host = api_host.trim_end_matches('.');
    let same =
        api_host == coords.host || (coords.host == "github.com" && api_host == "api.github.com");
    if !same && !allow_cross_host {
        return Err(format!(
            "apiUrl host {api_host} differs from the url host {}; the forge credential is only \
             sent to the repository's own host (the operator can allow this with \
             --allow-cross-host-api-url)",
            coords.host
        ));
    }
    Ok(())
}

/// Credentials and optional CA bundle of a Repository.
pub async fn credentials(
    ctx: &Context,
    repo: &Repository,
) -> Result<(Credentials, Option<Vec<u8>>), Error> {
    let namespace = repo.metadata.namespace.clone().unwrap_or_default();
    let Some(auth) = &repo.spec.auth else {
        return Ok((Credentials::Anonymous, None));
    };
    let data = credential_secret_data(ctx, &namespace, &auth.secret_ref.name).await?;
    let creds = Credentials::from_secret_data(&data).map_err(|e| Error::SecretInvalid {
        namespace: namespace.clone(),
        name: auth.secret_ref.name.clone(),
        problem: match e {
            ForgeError::InvalidConfig { message } => message,
            other => other.to_string(),
        },
    })?;
    let ca = match &auth.ca_secret_ref {
        None => None,
        Some(ca_ref) => {
            // A CA bundle is public material and needs no opt-in, but a service-account token
            // Secret (it carries the cluster's `ca.crt`) is not something to build on.
            let secret = get_secret(ctx, &namespace, &ca_ref.name).await?;
            if is_service_account_token(&secret) {
                return Err(Error::SecretRefused {
                    namespace: namespace.clone(),
                    name: ca_ref.name.clone(),
                    reason: "ServiceAccountTokenRefused",
                    problem: format!("is a service-account token Secret (type {SA_TOKEN_TYPE})"),
                });
            }
            let mut data = data_of(secret);
            Some(data.remove("ca.crt").ok_or_else(|| Error::SecretInvalid {
                namespace: namespace.clone(),
                name: ca_ref.name.clone(),
                problem: "has no key `ca.crt`".into(),
            })?)
        }
    };
    Ok((creds, ca))
}

/// The forge client of a Repository (from the shared client cache: one budget per credential)
/// and the CA bundle it was built with (git fetches need it too).
pub async fn forge_client(
    ctx: &Context,
    repo: &Repository,
) -> Result<(std::sync::Arc<dyn crate::forge::Forge>, Option<Vec<u8>>), Error> {
    let coords = coordinates(&repo.spec, &ctx.config.settings.network)?;
    let (creds, ca) = credentials(ctx, repo).await?;
    let forge = ctx
        .forges
        .client(forge_kind(&repo.spec), &coords, creds, ca.clone())?;
    Ok((forge, ca))
}

/// The Repository `namespace/name`.
pub async fn repository(ctx: &Context, namespace: &str, name: &str) -> Result<Repository, Error> {
    let api: Api<Repository> = Api::namespaced(ctx.client.clone(), namespace);
    api.get_opt(name)
        .await?
        .ok_or_else(|| Error::ReferenceNotFound {
            kind: "Repository",
            namespace: namespace.into(),
            name: name.into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Provider;
    use serde_json::json;

    fn secret(v: serde_json::Value) -> Secret {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn only_opted_in_secrets_are_credentials() {
        let plain = secret(json!({"metadata": {"name": "db-password"}, "type": "Opaque"}));
        let e = secret_opted_in(&plain).unwrap_err();
        assert!(e.contains("pullwarden.dev/credentials: \"true\""), "{e}");
        assert!(e.contains("kubectl label secret db-password"), "{e}");
        let wrong_value = secret(
            json!({"metadata": {"name": "s", "labels": {"pullwarden.dev/credentials": "yes"}}}),
        );
        assert!(secret_opted_in(&wrong_value).is_err());
        let labelled = secret(
            json!({"metadata": {"name": "s", "labels": {"pullwarden.dev/credentials": "true"}}}),
        );
        assert!(secret_opted_in(&labelled).is_ok());
        let typed =
            secret(json!({"metadata": {"name": "s"}, "type": "pullwarden.dev/credentials"}));
        assert!(secret_opted_in(&typed).is_ok());
    }

    #[test]
    fn service_account_tokens_are_refused_even_when_labelled() {
        for s in [
            json!({"metadata": {"name": "t", "labels": {"pullwarden.dev/credentials": "true"}},
                   "type": "kubernetes.io/service-account-token"}),
            json!({"metadata": {"name": "t", "labels": {"pullwarden.dev/credentials": "true"},
                   "annotations": {"kubernetes.io/service-account.name": "default"}}}),
        ] {
            let e = secret_opted_in(&secret(s)).unwrap_err();
            assert!(e.contains("service-account token"), "{e}");
        }
    }

    fn spec(url: &str, api: Option<&str>, insecure: bool) -> RepositorySpec {
        serde_json::from_value(json!({
            "provider": "github", "url": url, "apiUrl": api, "allowInsecureHTTP": insecure,
        }))
        .unwrap()
    }

    fn check(s: &RepositorySpec, allow: bool) -> Result<(), String> {
        let coords =
            RepoCoordinates::parse(ForgeKind::Github, &s.url, s.api_url.as_deref()).unwrap();
        check_urls(s, &coords, allow)
    }

    #[test]
    fn api_url_must_share_the_host() {
        assert_eq!(
            spec("https://h/o/r", None, false).provider,
            Provider::Github
        );
        assert!(check(&spec("https://github.com/o/r", None, false), false).is_ok());
        assert!(
            check(
                &spec(
                    "https://github.com/o/r",
                    Some("https://api.github.com"),
                    false
                ),
                false
            )
            .is_ok()
        );
        assert!(
            check(
                &spec(
                    "git@ghe.corp:o/r.git",
                    Some("https://GHE.corp/api/v3"),
                    false
                ),
                false
            )
            .is_ok()
        );
        let cross = spec(
            "https://github.com/o/r",
            Some("https://collector.evil/api"),
            false,
        );
        let e = check(&cross, false).unwrap_err();
        assert!(
            e.contains("collector.evil") && e.contains("--allow-cross-host-api-url"),
            "{e}"
        );
        assert!(check(&cross, true).is_ok(), "the operator may allow it");
        // The same host on another port is the same host.
        assert!(
            check(
                &spec(
                    "http://127.0.0.1:8080/o/r.git",
                    Some("http://127.0.0.1:9090"),
                    true
                ),
                false
            )
            .is_ok()
        );
    }

    #[test]
    fn allow_insecure_http_governs_api_url_too() {
        let e = check(
            &spec(
                "https://ghe.corp/o/r",
                Some("http://ghe.corp/api/v3"),
                false,
            ),
            false,
        )
        .unwrap_err();
        assert!(e.starts_with("apiUrl is plain http://"), "{e}");
        let e = check(&spec("http://ghe.corp/o/r", None, false), false).unwrap_err();
        assert!(e.starts_with("url is plain http://"), "{e}");
        assert!(
            check(
                &spec("http://ghe.corp/o/r", Some("http://ghe.corp/api/v3"), true),
                false
            )
            .is_ok()
        );
    }
}
