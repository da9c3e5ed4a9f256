//! A tiny route table matcher over raw (still percent-encoded) path segments.
//!
//! Templates use `{name}` for one segment and `{name*}` for one or more segments (branch names
//! with slashes); matching backtracks so `commits/{ref*}/status` works. Matching raw segments
//! matters for GitLab, whose project ids are URL-encoded paths (`group%2Fproject`): the
//! segment is decoded only after it has been matched as one unit.
use percent_encoding::percent_decode_str;

/// One route: method, template, and the handler tag the forge module dispatches on.
#[derive(Debug, Clone, Copy)]
pub struct Route<H: Copy> {
    pub method: &'static str,
    pub template: &'static str,
    pub handler: H,
}

/// A route table: `routes![H; "GET" "/user" => User, …]` is `&[Route<H>]` whose handlers are
/// `H::User`, …; every face (GitHub, GitLab, Gitea, admin) declares its table with it.
macro_rules! routes {
    ($handler:ident; $($method:literal $template:literal => $tag:ident),* $(,)?) => {
        &[$($crate::router::Route { method: $method, template: $template, handler: $handler::$tag }),*]
    };
}
pub(crate) use routes;

/// A matched route.
#[derive(Debug)]
pub struct Matched<H> {
    pub handler: H,
    pub template: &'static str,
    pub params: Vec<(&'static str, String)>,
}

/// Finds the route for `method` + `path` (path relative to the API prefix).
pub fn find<H: Copy>(routes: &[Route<H>], method: &str, path: &str) -> Option<Matched<H>> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    for r in routes {
        if r.method != method {
            continue;
        }
        let tsegs: Vec<&'static str> = r
            .template
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let mut params = Vec::new();
        if match_segs(&tsegs, &segs, &mut params) {
            return Some(Matched {
                handler: r.handler,
                template: r.template,
                params,
            });
        }
    }
    None
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn match_segs(t: &[&'static str], p: &[&str], out: &mut Vec<(&'static str, String)>) -> bool {
    match t.first() {
        None => p.is_empty(),
        Some(seg) if seg.starts_with('{') && seg.ends_with("*}") => {
            let name = &seg[1..seg.len() - 2];
            for take in (1..=p.len()).rev() {
                let mark = out.len();
                out.push((
                    name,
                    p[..take]
                        .iter()
                        .map(|s| decode(s))
                        .collect::<Vec<_>>()
                        .join("/"),
                ));
                if match_segs(&t[1..], &p[take..], out) {
                    return true;
                }
                out.truncate(mark);
            }
            false
        }
        Some(seg) if seg.starts_with('{') && seg.ends_with('}') => {
            let Some(first) = p.first() else { return false };
            out.push((&seg[1..seg.len() - 1], decode(first)));
            if match_segs(&t[1..], &p[1..], out) {
                return true;
            }
            out.pop();
            false
        }
        Some(seg) => p.first().is_some_and(|f| f == seg) && match_segs(&t[1..], &p[1..], out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_and_encoded() {
        let routes = [
            Route {
                method: "GET",
                template: "/repos/{owner}/{repo}/commits/{ref*}/status",
                handler: 1,
            },
            Route {
                method: "GET",
                template: "/repos/{owner}/{repo}/commits/{ref*}",
                handler: 2,
            },
            Route {
                method: "GET",
                template: "/projects/{id}/merge_requests",
                handler: 3,
            },
        ];
        let m = find(&routes, "GET", "/repos/a/b/commits/feature/x/status").unwrap();
        assert_eq!(m.handler, 1);
        assert_eq!(m.params[2], ("ref", "feature/x".to_string()));
        assert_eq!(
            find(&routes, "GET", "/repos/a/b/commits/main")
                .unwrap()
                .handler,
            2
        );
        let m = find(&routes, "GET", "/projects/g%2Fsub%2Fp/merge_requests").unwrap();
        assert_eq!(m.params[0].1, "g/sub/p");
        assert!(find(&routes, "POST", "/projects/1/merge_requests").is_none());
    }
}
