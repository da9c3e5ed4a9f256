//! Fault injection: rules matching method + path pattern (+ forge, token) that answer with an
//! error, add latency or drop the connection, for N requests or until cleared.
//!
//! Flow: the server asks [`take_fault`] for every non-admin request before doing anything
//! else; the first live matching rule is charged one hit (and expires when its budget is used
//! up) and its action is returned for the server to carry out.
use super::model::{FaultAction, FaultInfo, FaultSpec, Forge};

/// A stored rule.
#[derive(Debug, Clone)]
pub struct FaultRule {
    pub id: u64,
    pub spec: FaultSpec,
    pub hits: u32,
}

impl FaultRule {
    /// Requests left before expiry.
    pub fn remaining(&self) -> Option<u32> {
        self.spec.times.map(|t| t.saturating_sub(self.hits))
    }

    /// Admin view.
    pub fn info(&self) -> FaultInfo {
        FaultInfo {
            id: self.id,
            spec: self.spec.clone(),
            hits: self.hits,
            remaining: self.remaining(),
        }
    }

    fn matches(&self, method: &str, path: &str, forge: Option<Forge>, client_token: &str) -> bool {
        if self.remaining() == Some(0) {
            return false;
        }
        if let Some(m) = &self.spec.method
            && !m.eq_ignore_ascii_case(method)
        {
            return false;
        }
        if let Some(f) = self.spec.forge
            && Some(f) != forge
        {
            return false;
        }
        if let Some(t) = &self.spec.token
            && t != client_token
        {
            return false;
        }
        glob_match(&self.spec.path, path)
    }
}

/// Finds and charges the first matching rule; expired rules are dropped.
pub fn take_fault(
    rules: &mut Vec<FaultRule>,
    method: &str,
    path: &str,
    forge: Option<Forge>,
    client_token: &str,
) -> Option<FaultAction> {
    let hit = rules
        .iter_mut()
        .find(|r| r.matches(method, path, forge, client_token))
        .map(|r| {
            r.hits += 1;
            r.spec.action.clone()
        });
    rules.retain(|r| r.remaining() != Some(0));
    hit
}

/// `*` matches any run of characters (including `/`); everything else is literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("/repos/*/pulls", "/repos/a/b/pulls"));
        assert!(glob_match("*", "/x"));
        assert!(glob_match("/api/v4/*", "/api/v4/projects/1"));
        assert!(!glob_match("/repos/*/pulls", "/repos/a/b/pulls/1"));
        assert!(glob_match("/repos/*/pulls*", "/repos/a/b/pulls/1"));
    }
}
