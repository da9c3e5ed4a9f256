//! A small reader for the Prometheus text exposition format, enough to take deltas of counters
//! from the operator's `/metrics` and the kube-apiserver's `/metrics`.

use std::collections::BTreeMap;

/// One sample line: `name{label="value",...} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// All samples of a scrape, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parses an exposition text; comments, blank lines and unparsable lines are skipped.
    pub fn parse(text: &str) -> Scrape {
        Scrape {
            samples: text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .filter_map(parse_line)
                .collect(),
        }
    }

    /// Samples named `name` whose labels include every `(key, value)` of `filter`.
    pub fn select<'a>(
        &'a self,
        name: &'a str,
        filter: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && filter
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
    }

    /// Sum of the matching samples (0 when none match).
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.select(name, filter).map(|s| s.value).sum()
    }

    /// Sum of the matching samples grouped by the values of `keys` (joined with a space; a
    /// missing label counts as empty).
    pub fn sum_by(
        &self,
        name: &str,
        filter: &[(&str, &str)],
        keys: &[&str],
    ) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.select(name, filter) {
            let key = keys
                .iter()
                .map(|k| s.labels.get(*k).map_or("", String::as_str))
                .filter(|v| !v.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            *out.entry(key).or_insert(0.0) += s.value;
        }
        out
    }
}

/// `after - before` per key, keeping only keys that changed.
pub fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let (labels, rest) = if let Some(body) = rest.strip_prefix('{') {
        parse_labels(body)?
    } else {
        (BTreeMap::new(), rest)
    };
    // The value may be followed by a timestamp.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` (after the `{`) and returns the labels and what follows the `}`.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, rest) = s.split_once('=')?;
        let mut chars = rest.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        s = &rest[1 + end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
# HELP pullwarden_forge_requests Requests sent to forge APIs
# TYPE pullwarden_forge_requests counter
pullwarden_forge_requests_total{forge="github",endpoint="/repos/{owner}/{repo}",status="200"} 1000
pullwarden_forge_requests_total{forge="github",endpoint="/repos/{owner}/{repo}/pulls",status="304"} 2500
pullwarden_forge_requests_total{forge="github",endpoint="/repos/{owner}/{repo}",status="304"} 2.5e3
apiserver_request_total{code="201",resource="repositories",subresource="status",verb="APPLY",weird="a\"b,c}"} 7
process_start_time_seconds 1.7e9
up +Inf
"#;

    #[test]
    fn parses_and_sums() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.samples.len(), 6);
        assert_eq!(s.sum("pullwarden_forge_requests_total", &[]), 6000.0);
        assert_eq!(
            s.sum("pullwarden_forge_requests_total", &[("status", "304")]),
            5000.0
        );
        let by = s.sum_by("pullwarden_forge_requests_total", &[], &["status"]);
        assert_eq!(by.get("200"), Some(&1000.0));
        assert_eq!(by.get("304"), Some(&5000.0));
        let api = &s
            .select("apiserver_request_total", &[])
            .next()
            .unwrap()
            .labels;
        assert_eq!(api["weird"], "a\"b,c}");
        assert_eq!(api["verb"], "APPLY");
        assert_eq!(s.sum("process_start_time_seconds", &[]), 1.7e9);
        assert!(s.sum("up", &[]).is_infinite());
    }

    #[test]
    fn deltas_keep_changes_only() {
        let a: BTreeMap<String, f64> = [("x".into(), 1.0), ("y".into(), 2.0)].into();
        let b: BTreeMap<String, f64> =
            [("x".into(), 1.0), ("y".into(), 5.0), ("z".into(), 1.0)].into();
        let d = delta(&a, &b);
        assert_eq!(d.len(), 2);
        assert_eq!(d["y"], 3.0);
        assert_eq!(d["z"], 1.0);
    }
}
