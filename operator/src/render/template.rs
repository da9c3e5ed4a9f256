//! `{{name}}` substitution — deliberately nothing more.
//!
//! Syntax: `{{name}}`, `{{ name }}` (spaces or tabs inside the braces), `{{vars.NAME}}`. There
//! are no expressions, conditionals, loops or filters: PR authors write these files, and a
//! template language that can compute can also be made to loop, allocate or read what it should
//! not. `{{` always starts a placeholder and must be closed by `}}` on the same line;
//! `{{"{{"}}` writes a literal `{{` (the Go/Helm idiom). A lone `}}` needs no escaping.
//!
//! # How values are kept out of the YAML structure
//! Values (a PR title, a branch name, an author) are untrusted and are **never given to the
//! YAML parser**. `prepare_yaml` replaces every placeholder with a sentinel — an alphanumeric
//! token like `pw0123456789abcdefx3x` whose prefix does not occur anywhere in the file — and the
//! file is parsed with the sentinels in place. The document structure (mappings, sequences,
//! keys, which scalar is which) is therefore fixed by the author's text alone. Then, while the
//! parsed tree is converted to JSON (`super::parse`), sentinels inside string scalars and keys
//! are replaced by the values. A title such as `foo\n  kind: ClusterRole` or `"; rm -rf /`
//! becomes part of one string and nothing else; no escaping rule can be got wrong because none
//! is needed. Sentinels in comments simply vanish; YAML tags are refused by the parser.
//!
//! Types: a placeholder that is the *whole* unquoted scalar written after `key:`, `- `, `[`,
//! `{` or `,` on the same line (`replicas: {{vars.replicas}}`) takes the value's type when the
//! value is a canonical integer (`-?(0|[1-9][0-9]*)`, 64-bit) or `true`/`false` — exactly as if
//! the value had been typed there — and is a string otherwise. Quote it (`"{{number}}"`) to get
//! a string whatever the value. Placeholders inside quoted scalars, block scalars, keys or next
//! to other text are always strings.
//!
//! The namespace and host templates are plain strings (`render_string`); their results are
//! validated as DNS names by `super::params`.

use sha2::{Digest, Sha256};

use super::error::Problem;

/// Resolves a parameter name to its value; `Err` is the message for an unknown (or not
/// available) name.
pub(crate) trait Lookup {
    fn lookup(&self, name: &str) -> Result<&str, String>;
}

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Token<'a> {
    Text(&'a str),
    Param {
        name: &'a str,
        /// 1-based line of the placeholder.
        line: usize,
        /// Unquoted and placed where a whole scalar value starts (see the module docs); the
        /// value is typed only if the parsed scalar is exactly this placeholder.
        typed: bool,
    },
}

/// Whether `name` is a valid `template.vars` key.
pub(crate) fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.len() <= 63
}

fn is_param_name(name: &str) -> bool {
    if let Some(var) = name.strip_prefix("vars.") {
        return is_var_name(var);
    }
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Splits `text` into text and placeholders. Errors name `origin` and the line.
pub(crate) fn tokenize<'a>(text: &'a str, origin: &str) -> Result<Vec<Token<'a>>, Vec<Problem>> {
    let mut tokens = Vec::new();
    let mut problems = Vec::new();
    let mut pos = 0;
    let mut line = 1;
    let mut counted_to = 0;
    while let Some(found) = text[pos..].find("{{") {
        let start = pos + found;
        line += text[counted_to..start].matches('\n').count();
        counted_to = start;
        if start > pos {
            tokens.push(Token::Text(&text[pos..start]));
        }
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let Some(close) = text[start + 2..line_end].find("}}").map(|i| start + 2 + i) else {
            problems.push(problem(
                origin,
                line,
                "`{{` is not closed by `}}` on the same line (write `{{\"{{\"}}` for a literal `{{`)"
                    .to_string(),
            ));
            tokens.push(Token::Text(&text[start..start + 2]));
            pos = start + 2;
            continue;
        };
        let end = close + 2;
        let inner = text[start + 2..close].trim_matches([' ', '\t']);
        if inner == "\"{{\"" {
            tokens.push(Token::Text("{{"));
        } else if is_param_name(inner) {
            let quote_before = text[..start].chars().next_back();
            let quoted = matches!(quote_before, Some('"' | '\''))
                && text[end..].chars().next() == quote_before;
            let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
            let before = text[line_start..start].trim_end_matches([' ', '\t']);
            let after_indicator = before.ends_with([':', '-', '[', '{', ',']);
            tokens.push(Token::Param {
                name: inner,
                line,
                typed: !quoted && after_indicator,
            });
        } else {
            let hint = if inner.starts_with('.') || inner.contains('|') || inner.contains(' ') {
                " (Helm/Go templates are not supported; use `delivery: argocd` for Helm charts)"
            } else {
                ""
            };
            problems.push(problem(
                origin,
                line,
                format!(
                    "invalid placeholder `{{{{{}}}}}`: only `{{{{name}}}}` and `{{{{vars.NAME}}}}` are supported{hint}",
                    shorten(inner, 60)
                ),
            ));
        }
        pos = end;
    }
    if pos < text.len() {
        tokens.push(Token::Text(&text[pos..]));
    }
    if problems.is_empty() {
        Ok(tokens)
    } else {
        Err(problems)
    }
}

fn problem(origin: &str, line: usize, message: String) -> Problem {
    Problem {
        file: origin.to_string(),
        document: None,
        line: Some(line),
        message,
    }
}

fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Renders a plain string template (namespace, host): values are inserted as they are; the
/// caller validates the result.
pub(crate) fn render_string(
    template: &str,
    origin: &str,
    params: &dyn Lookup,
) -> Result<String, Vec<Problem>> {
    let tokens = tokenize(template, origin)?;
    let mut out = String::with_capacity(template.len());
    let mut problems = Vec::new();
    for token in tokens {
        match token {
            Token::Text(t) => out.push_str(t),
            Token::Param { name, line, .. } => match params.lookup(name) {
                Ok(v) => out.push_str(v),
                Err(msg) => problems.push(problem(origin, line, msg)),
            },
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// A substitution to perform after parsing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Substitution {
    pub value: String,
    pub typed: bool,
}

/// A manifest file with its placeholders replaced by sentinels, ready to parse.
#[derive(Clone, Debug)]
pub(crate) struct Prepared {
    /// The file text with sentinels: same lines as the original, so parser positions hold.
    pub text: String,
    /// `pw` + 16 hex digits; occurs nowhere in the original file.
    pub prefix: String,
    /// Indexed by the number in each sentinel.
    pub subs: Vec<Substitution>,
}

impl Prepared {
    fn sentinel(prefix: &str, index: usize) -> String {
        // `x` ends the index (so a digit written right after a placeholder is not read as part
        // of it) and is not a hex digit, so it cannot be confused with the prefix.
        format!("{prefix}{index}x")
    }

    /// Replaces the sentinels in a parsed string. Returns the typed value instead when
    /// `allow_typed` (a value, not a key) and `s` is exactly one sentinel of a typed placeholder.
    pub fn substitute(&self, s: &str, allow_typed: bool) -> Substituted {
        if !s.contains(self.prefix.as_str()) {
            return Substituted::Unchanged;
        }
        if allow_typed
            && let Some(sub) = self.whole(s)
            && sub.typed
            && let Some(v) = typed_value(&sub.value)
        {
            return Substituted::Typed(v);
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find(self.prefix.as_str()) {
            out.push_str(&rest[..i]);
            let after = &rest[i + self.prefix.len()..];
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            let sub = after[..digits]
                .parse::<usize>()
                .ok()
                .filter(|_| after[digits..].starts_with('x'))
                .and_then(|n| self.subs.get(n));
            match sub {
                Some(sub) => {
                    out.push_str(&sub.value);
                    rest = &after[digits + 1..];
                }
                // Not one of ours (the author spelled the prefix with YAML escapes): keep it.
                None => {
                    out.push_str(&self.prefix);
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        Substituted::Text(out)
    }

    fn whole(&self, s: &str) -> Option<&Substitution> {
        let n = s.strip_prefix(self.prefix.as_str())?.strip_suffix('x')?;
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        self.subs.get(n.parse::<usize>().ok()?)
    }
}

/// Result of [`Prepared::substitute`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Substituted {
    Unchanged,
    Text(String),
    Typed(serde_json::Value),
}

/// The YAML value a canonical integer or boolean stands for; `None` for everything else.
fn typed_value(v: &str) -> Option<serde_json::Value> {
    match v {
        "true" => return Some(true.into()),
        "false" => return Some(false.into()),
        _ => {}
    }
    let digits = v.strip_prefix('-').unwrap_or(v);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && v != "-0";
    if !canonical {
        return None;
    }
    v.parse::<i64>().ok().map(Into::into)
}

/// Replaces placeholders by sentinels (module docs). Errors: syntax and unknown names, every
/// one of them, with `file` and line.
pub(crate) fn prepare_yaml(
    text: &str,
    file: &str,
    params: &dyn Lookup,
) -> Result<Prepared, Vec<Problem>> {
    let tokens = tokenize(text, file)?;
    let prefix = unique_prefix(text);
    let mut out = String::with_capacity(text.len());
    let mut subs = Vec::new();
    let mut problems = Vec::new();
    for token in tokens {
        match token {
            Token::Text(t) => out.push_str(t),
            Token::Param { name, line, typed } => match params.lookup(name) {
                Ok(value) => {
                    out.push_str(&Prepared::sentinel(&prefix, subs.len()));
                    subs.push(Substitution {
                        value: value.to_string(),
                        typed,
                    });
                }
                Err(msg) => problems.push(problem(file, line, msg)),
            },
        }
    }
    if problems.is_empty() {
        Ok(Prepared {
            text: out,
            prefix,
            subs,
        })
    } else {
        Err(problems)
    }
}

/// `pw` + 16 hex digits derived from the text, re-derived until it does not occur in it (so
/// every occurrence after parsing is one of ours).
fn unique_prefix(text: &str) -> String {
    let mut salt = 0u32;
    loop {
        let mut h = Sha256::new();
        h.update(salt.to_be_bytes());
        h.update(text.as_bytes());
        let prefix = format!("pw{}", &hex::encode(h.finalize())[..16]);
        if !text.contains(&prefix) {
            return prefix;
        }
        salt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Map(BTreeMap<&'static str, &'static str>);
    impl Lookup for Map {
        fn lookup(&self, name: &str) -> Result<&str, String> {
            self.0
                .get(name)
                .copied()
                .ok_or_else(|| format!("unknown parameter `{name}`"))
        }
    }
    fn params() -> Map {
        Map(BTreeMap::from([
            ("number", "42"),
            ("title", "Add login"),
            ("vars.port", "8080"),
        ]))
    }

    #[test]
    fn render_string_substitutes_with_or_without_spaces() {
        let out =
            render_string("a-{{number}}-{{ title }}-{{\tvars.port }}", "t", &params()).unwrap();
        assert_eq!(out, "a-42-Add login-8080");
    }

    #[test]
    fn literal_braces() {
        let out = render_string(r#"x {{"{{"}} y }} {{ "{{" }}number}}"#, "t", &params()).unwrap();
        assert_eq!(out, "x {{ y }} {{number}}");
    }

    #[test]
    fn unknown_parameters_are_all_reported_with_lines() {
        let errs = render_string(
            "ok {{number}}\n{{nope}}\n\nx {{vars.missing}}",
            "f.yaml",
            &params(),
        )
        .unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!((errs[0].file.as_str(), errs[0].line), ("f.yaml", Some(2)));
        assert!(errs[0].message.contains("`nope`"));
        assert_eq!(errs[1].line, Some(4));
    }

    #[test]
    fn syntax_errors() {
        for (t, needle) in [
            ("a {{ number", "not closed"),
            ("a {{ number\n}}", "not closed"),
            ("{{ .Values.image }}", "Helm"),
            ("{{ number | upper }}", "Helm"),
            ("{{ Number }}", "invalid placeholder"),
            ("{{}}", "invalid placeholder"),
            ("{{vars.}}", "invalid placeholder"),
            ("{{{number}}}", "invalid placeholder"),
        ] {
            let errs = render_string(t, "t", &params()).unwrap_err();
            assert!(errs[0].message.contains(needle), "{t}: {:?}", errs);
        }
    }

    #[test]
    fn typed_flag_follows_position_and_quotes() {
        let toks = tokenize(
            "a: {{number}}\nb: \"{{number}}\"\nc: '{{number}}'\n- {{number}}\nd: [x, {{number}}]\n  {{number}}\ne: x{{number}}\n{{number}}: v\n",
            "t",
        )
        .unwrap();
        let typed: Vec<bool> = toks
            .iter()
            .filter_map(|t| match t {
                Token::Param { typed, .. } => Some(*typed),
                Token::Text(_) => None,
            })
            .collect();
        // e: x{{number}} is "typed" by position but never equals the whole scalar after
        // parsing, so it stays a string (tested in the render tests).
        assert_eq!(typed, [true, false, false, true, true, false, false, false]);
    }

    #[test]
    fn typed_values_are_only_canonical_ints_and_bools() {
        assert_eq!(typed_value("8080"), Some(8080.into()));
        assert_eq!(typed_value("-3"), Some((-3).into()));
        assert_eq!(typed_value("0"), Some(0.into()));
        assert_eq!(typed_value("true"), Some(true.into()));
        for s in [
            "",
            "-",
            "-0",
            "007",
            "1.5",
            "1e3",
            "0x10",
            "yes",
            "True",
            "null",
            "~",
            "99999999999999999999",
        ] {
            assert_eq!(typed_value(s), None, "{s}");
        }
    }

    #[test]
    fn prepare_keeps_lines_and_substitutes_after() {
        let p = prepare_yaml(
            "a: {{number}}\nb: pre-{{title}}-{{number}}5\n",
            "f",
            &params(),
        )
        .unwrap();
        assert_eq!(p.text.lines().count(), 2);
        assert!(!p.text.contains("{{"));
        let s0 = Prepared::sentinel(&p.prefix, 0);
        assert_eq!(p.substitute(&s0, true), Substituted::Typed(42.into()));
        assert_eq!(p.substitute(&s0, false), Substituted::Text("42".into()));
        let joined = format!(
            "pre-{}-{}5",
            Prepared::sentinel(&p.prefix, 1),
            Prepared::sentinel(&p.prefix, 2)
        );
        assert_eq!(
            p.substitute(&joined, true),
            Substituted::Text("pre-Add login-425".into())
        );
        assert_eq!(p.substitute("plain", true), Substituted::Unchanged);
        // A prefix without a valid index (spelled via escapes by the author) is kept verbatim.
        let odd = format!("{}99x {}", p.prefix, p.prefix);
        assert_eq!(p.substitute(&odd, true), Substituted::Text(odd.clone()));
    }

    #[test]
    fn prefix_is_stable_and_absent_from_the_text() {
        for text in ["", "pw", "a: {{number}}\n", "pw0123456789abcdef0x"] {
            let prefix = unique_prefix(text);
            assert!(prefix.starts_with("pw") && prefix.len() == 18);
            assert!(prefix[2..].bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(!text.contains(&prefix));
            assert_eq!(prefix, unique_prefix(text));
        }
    }
}
