//! Dereferencing: reading the objects a spec points at, with errors that name them.

use crate::api::{Repository, RepositorySpec};
use crate::context::Context;
use crate::error::Error;
use crate::forge::{Credentials, ForgeError, ForgeKind, RepoCoordinates};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use std::collections::BTreeMap;

/// The data of Secret `namespace/name` (base64-decoded by the client).
pub async fn secret_data(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    match api.get_opt(name).await? {
        None => Err(Error::SecretNotFound {
            namespace: namespace.into(),
            name: name.into(),
        }),
        Some(secret) => Ok(secret
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
            .collect()),
    }
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

/// Parses the Repository's URLs; errors are spec errors.
pub fn coordinates(spec: &RepositorySpec) -> Result<RepoCoordinates, Error> {
    RepoCoordinates::parse(forge_kind(spec), &spec.url, spec.api_url.as_deref())
        .map_err(|e| Error::InvalidSpec(format!("url: {e}")))
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
    let data = secret_data(ctx, &namespace, &auth.secret_ref.name).await?;
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
        Some(ca_ref) => Some(secret_key(ctx, &namespace, &ca_ref.name, "ca.crt").await?),
    };
    Ok((creds, ca))
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

/// Whether a Secret opted in to being used by Pullwarden as a forge credential or webhook
/// secret: label `pullwarden.dev/credentials: "true"` or type `pullwarden.dev/credentials`.
/// ServiceAccount token Secrets never qualify, whatever their labels say.
pub fn secret_opted_in(secret: &Secret) -> bool {
    let kind = secret.type_.as_deref().unwrap_or("Opaque");
    if kind == "kubernetes.io/service-account-token" {
        return false;
    }
    kind == "pullwarden.dev/credentials"
        || secret
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get("pullwarden.dev/credentials"))
            .is_some_and(|value| value == "true")
}
