//! Request/response plumbing shared by the three REST APIs: the parsed request, the reply,
//! each forge's error shape, ETags and each forge's pagination.
use std::collections::HashMap;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::auth::Identity;
use super::model::Forge;

/// A parsed API request as handlers see it.
#[derive(Debug)]
pub struct ApiRequest {
    pub method: Method,
    /// Path as sent (still percent-encoded).
    pub path: String,
    pub raw_query: Option<String>,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Route parameters, percent-decoded.
    pub params: Vec<(&'static str, String)>,
    pub ident: Identity,
    /// `Host` header, used to build absolute URLs the way the client addressed us.
    pub host: String,
    /// API prefix: `""` or `/api/v3` (GitHub), `/api/v4` (GitLab), `/api/v1` (Gitea).
    pub prefix: &'static str,
    pub forge: Forge,
}

impl ApiRequest {
    /// A route parameter (empty when absent).
    pub fn param(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// A query parameter.
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// `http://host` — the web root.
    pub fn web_base(&self) -> String {
        format!("http://{}", self.host)
    }

    /// `http://host[/api/vN]` — the API root.
    pub fn api_base(&self) -> String {
        format!("http://{}{}", self.host, self.prefix)
    }

    /// The JSON body (an empty body is `{}`), or the forge's 400 reply.
    pub fn json(&self) -> Result<Value, Reply> {
        if self.body.is_empty() {
            return Ok(json!({}));
        }
        // Forges parse JSON whatever the Content-Type says; GitLab also takes form bodies.
        match serde_json::from_slice(&self.body) {
            Ok(v) => Ok(v),
            Err(e) => {
                let is_form = self
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
                if !is_form {
                    return Err(Reply::error(
                        self.forge,
                        StatusCode::BAD_REQUEST,
                        &format!("Problems parsing JSON: {e}"),
                    ));
                }
                let mut m = serde_json::Map::new();
                for (k, v) in url::form_urlencoded::parse(&self.body).into_owned() {
                    m.insert(k, Value::String(v));
                }
                Ok(Value::Object(m))
            }
        }
    }
}

/// What a handler answers.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Option<Value>,
    /// Non-JSON body (GitLab's plain "Retry later").
    pub text: Option<String>,
    pub headers: Vec<(HeaderName, String)>,
}

impl Reply {
    /// 200 with a JSON body.
    pub fn ok(v: Value) -> Self {
        Self {
            status: StatusCode::OK,
            body: Some(v),
            text: None,
            headers: Vec::new(),
        }
    }

    /// 201 with a JSON body.
    pub fn created(v: Value) -> Self {
        Self {
            status: StatusCode::CREATED,
            body: Some(v),
            text: None,
            headers: Vec::new(),
        }
    }

    /// Any status with a JSON body.
    pub fn with(status: StatusCode, v: Value) -> Self {
        Self {
            status,
            body: Some(v),
            text: None,
            headers: Vec::new(),
        }
    }

    /// 204.
    pub fn no_content() -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            body: None,
            text: None,
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers
            .push((HeaderName::from_static(name), value.into()));
        self
    }

    /// An error in the forge's own shape.
    pub fn error(forge: Forge, status: StatusCode, message: &str) -> Self {
        let body = match forge {
            Forge::Github => json!({
                "message": message,
                "documentation_url": "https://docs.github.com/rest",
                "status": status.as_u16().to_string(),
            }),
            // GitLab puts the status code in front of the reason: {"message":"404 Project Not Found"}.
            Forge::Gitlab => {
                if message.starts_with(|c: char| c.is_ascii_digit()) {
                    json!({ "message": message })
                } else {
                    json!({ "message": format!("{} {}", status.as_u16(), message) })
                }
            }
            Forge::Gitea => json!({ "message": message, "url": "https://docs.gitea.com/api/" }),
        };
        Self::with(status, body)
    }

    /// The forge's 404.
    pub fn not_found(forge: Forge, what: &str) -> Self {
        match forge {
            Forge::Github => Self::error(forge, StatusCode::NOT_FOUND, "Not Found"),
            Forge::Gitlab => Self::error(
                forge,
                StatusCode::NOT_FOUND,
                &format!("404 {what} Not Found"),
            ),
            Forge::Gitea => Self::error(
                forge,
                StatusCode::NOT_FOUND,
                "The target couldn't be found.",
            ),
        }
    }

    /// The forge's 422 / 400 for bad input.
    pub fn invalid(forge: Forge, message: &str) -> Self {
        match forge {
            Forge::Github => Self::error(forge, StatusCode::UNPROCESSABLE_ENTITY, message),
            Forge::Gitlab => Self::with(StatusCode::BAD_REQUEST, json!({ "error": message })),
            Forge::Gitea => Self::error(forge, StatusCode::UNPROCESSABLE_ENTITY, message),
        }
    }
}

/// A strong-looking weak ETag over the exact body bytes: identical bodies get identical tags.
pub fn etag_for(body: &[u8]) -> String {
    let d = Sha256::digest(body);
    format!("W/\"{}\"", hex::encode(&d[..16]))
}

/// `If-None-Match` evaluation with weak comparison (`W/` ignored), lists and `*`.
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let strip = |s: &str| {
        s.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_string()
    };
    let tag = strip(etag);
    if_none_match
        .split(',')
        .any(|c| c.trim() == "*" || strip(c) == tag)
}

/// Slices `items` into the requested page and adds the forge's pagination headers.
pub fn paginate(req: &ApiRequest, items: Vec<Value>) -> Reply {
    let (per_key, default_per, max_per) = match req.forge {
        Forge::Github => ("per_page", 30usize, 100usize),
        Forge::Gitlab => ("per_page", 20, 100),
        Forge::Gitea => ("limit", 30, 50),
    };
    let per_page = req
        .q(per_key)
        .or_else(|| {
            if req.forge == Forge::Gitea {
                req.q("per_page")
            } else {
                None
            }
        })
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|v| *v > 0)
        .unwrap_or(default_per)
        .min(max_per);
    let page = req
        .q("page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|v| *v > 0)
        .unwrap_or(1);
    let total = items.len();
    let last = total.div_ceil(per_page).max(1);
    let slice: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();

    let link_for = |p: usize| -> String {
        let mut pairs: Vec<(String, String)> = req
            .raw_query
            .as_deref()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        pairs.retain(|(k, _)| k != "page" && k != per_key);
        pairs.push(("page".into(), p.to_string()));
        pairs.push((per_key.into(), per_page.to_string()));
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        format!("http://{}{}?{}", req.host, req.path, q)
    };
    let mut rels: Vec<(usize, &str)> = Vec::new();
    if page > 1 {
        rels.push((page - 1, "prev"));
    }
    if page < last {
        rels.push((page + 1, "next"));
    }
    // GitHub omits first/last on the first/last page; GitLab and Gitea always send them.
    match req.forge {
        Forge::Github => {
            if page < last {
                rels.push((last, "last"));
            }
            if page > 1 {
                rels.push((1, "first"));
            }
        }
        _ => {
            rels.push((1, "first"));
            rels.push((last, "last"));
        }
    }
    let link = rels
        .iter()
        .map(|(p, rel)| format!("<{}>; rel=\"{rel}\"", link_for(*p)))
        .collect::<Vec<_>>()
        .join(", ");

    let mut reply = Reply::ok(Value::Array(slice));
    if !link.is_empty() {
        reply = reply.header("link", link);
    }
    match req.forge {
        Forge::Github => {}
        Forge::Gitlab => {
            reply = reply
                .header("x-page", page.to_string())
                .header("x-per-page", per_page.to_string())
                .header("x-total", total.to_string())
                .header("x-total-pages", last.to_string())
                .header(
                    "x-next-page",
                    if page < last {
                        (page + 1).to_string()
                    } else {
                        String::new()
                    },
                )
                .header(
                    "x-prev-page",
                    if page > 1 {
                        (page - 1).to_string()
                    } else {
                        String::new()
                    },
                );
        }
        Forge::Gitea => {
            reply = reply.header("x-total-count", total.to_string());
        }
    }
    reply
}

/// Sets a header value, ignoring values that are not valid header text.
pub fn set_header(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// Merges JSON objects left to right. Large bodies are written as several `json!` blocks
/// (one big block exceeds the macro recursion limit).
pub fn merge(parts: impl IntoIterator<Item = Value>) -> Value {
    let mut out = serde_json::Map::new();
    for p in parts {
        if let Value::Object(m) = p {
            out.extend(m);
        }
    }
    Value::Object(out)
}
