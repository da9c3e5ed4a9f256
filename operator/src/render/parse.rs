//! YAML documents → JSON values, with the placeholder values substituted and every expansion
//! bounded.
//!
//! The conversion is a serde visitor driven directly by `serde_yaml`, not a `serde_yaml::Value`
//! converted afterwards, for three reasons:
//! - **Bounded expansion.** serde_yaml replays an aliased subtree each time `*alias` appears, so
//!   a few kilobytes of anchors can expand to gigabytes ("billion laughs"). Every node and string
//!   byte produced is charged to a `Budget` as it is produced, and conversion stops the moment
//!   the budget is spent — before the memory is allocated.
//! - **Substitution after parsing** (see `super::template`): sentinels in strings and keys are
//!   replaced here, so values never reach the YAML parser.
//! - **One tree for checking and applying.** The JSON built here is what the policy checks and
//!   what is sent to the API server; Pullwarden never re-serialises YAML for kubectl, so no
//!   YAML 1.1/1.2 difference can make the checked object differ from the applied one. For the
//!   same reason duplicate keys are refused (parsers disagree on which one wins), as are YAML
//!   tags, non-string keys other than integers/booleans, and non-finite floats.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::error::Problem;
use super::template::{Prepared, Substituted};

/// What the documents of one render may expand to.
#[derive(Debug)]
pub(crate) struct Budget {
    nodes: Cell<usize>,
    bytes: Cell<usize>,
    exhausted: Cell<bool>,
}

/// Bytes charged per node on top of its string content: a rough size of a JSON value.
const NODE_COST: usize = 16;

impl Budget {
    pub fn new(max_bytes: usize) -> Budget {
        Budget {
            nodes: Cell::new(max_bytes / NODE_COST),
            bytes: Cell::new(max_bytes),
            exhausted: Cell::new(false),
        }
    }

    fn charge<E: de::Error>(&self, string_bytes: usize) -> Result<(), E> {
        let nodes = self.nodes.get().checked_sub(1);
        let bytes = self.bytes.get().checked_sub(NODE_COST + string_bytes);
        match (nodes, bytes) {
            (Some(n), Some(b)) => {
                self.nodes.set(n);
                self.bytes.set(b);
                Ok(())
            }
            _ => {
                self.exhausted.set(true);
                Err(E::custom("render size limit exceeded"))
            }
        }
    }

    pub fn exhausted(&self) -> bool {
        self.exhausted.get()
    }
}

/// Why a file could not be parsed.
#[derive(Debug)]
pub(crate) enum ParseFailure {
    Problem(Problem),
    /// The [`Budget`] ran out (the caller reports the limit).
    Budget,
    /// serde_yaml's own guards tripped: nesting deeper than 128, or aliases replayed more
    /// than 100 times the document's size.
    TooComplex(Problem),
}

/// The non-empty documents of a prepared file, each with its 1-based index in the file.
pub(crate) fn parse_documents(
    prepared: &Prepared,
    file: &str,
    budget: &Budget,
) -> Result<Vec<(usize, Value)>, ParseFailure> {
    let mut docs = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(&prepared.text).enumerate() {
        let conv = Conv { prepared, budget };
        match conv.deserialize(doc) {
            Ok(Value::Null) => {}
            Ok(v) => docs.push((i + 1, v)),
            Err(e) => {
                if budget.exhausted() {
                    return Err(ParseFailure::Budget);
                }
                let message = e.to_string();
                let problem = Problem {
                    file: file.to_string(),
                    document: Some(i + 1),
                    line: None,
                    message: message.clone(),
                };
                // serde_yaml 0.9 (frozen) reports its guards with these fixed texts.
                if message.starts_with("repetition limit exceeded")
                    || message.starts_with("recursion limit exceeded")
                {
                    return Err(ParseFailure::TooComplex(problem));
                }
                // serde_yaml repeats a syntax error for every following "document": stop at
                // the first.
                return Err(ParseFailure::Problem(problem));
            }
        }
    }
    Ok(docs)
}

#[derive(Clone, Copy)]
struct Conv<'c> {
    prepared: &'c Prepared,
    budget: &'c Budget,
}

impl Conv<'_> {
    fn string<E: de::Error>(self, s: &str) -> Result<Value, E> {
        match self.prepared.substitute(s, true) {
            Substituted::Unchanged => {
                self.budget.charge(s.len())?;
                Ok(Value::String(s.to_string()))
            }
            Substituted::Text(t) => {
                self.budget.charge(t.len())?;
                Ok(Value::String(t))
            }
            Substituted::Typed(v) => {
                self.budget.charge(0)?;
                Ok(v)
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Conv<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Conv<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.budget.charge(0)?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.budget.charge(0)?;
        Ok(v.into())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.budget.charge(0)?;
        Ok(v.into())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.budget.charge(0)?;
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| {
                E::custom("non-finite numbers (.inf, .nan) cannot be sent to Kubernetes")
            })
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.string(v)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.budget.charge(0)?;
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.budget.charge(0)?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.budget.charge(0)?;
        let mut out = BTreeMap::new();
        while let Some(key) = map.next_key_seed(Key(self))? {
            let value = map.next_value_seed(self)?;
            match out.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(slot) => {
                    return Err(de::Error::custom(format!(
                        "duplicate mapping key {:?} (after substitution)",
                        slot.key()
                    )));
                }
            }
        }
        Ok(Value::Object(out.into_iter().collect()))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<Value, A::Error> {
        Err(de::Error::custom("YAML tags (`!tag`) are not supported"))
    }
}

/// A mapping key: a string (sentinels substituted, never typed), or an integer/boolean turned
/// into its text like Kubernetes' own YAML decoder does.
struct Key<'c>(Conv<'c>);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string mapping key")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        self.0.budget.charge(5)?;
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        self.0.budget.charge(20)?;
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        self.0.budget.charge(20)?;
        Ok(v.to_string())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        let s = match self.0.prepared.substitute(v, false) {
            Substituted::Text(t) => t,
            Substituted::Unchanged | Substituted::Typed(_) => v.to_string(),
        };
        self.0.budget.charge(s.len())?;
        Ok(s)
    }
    fn visit_f64<E: de::Error>(self, _v: f64) -> Result<String, E> {
        Err(E::custom(
            "floating-point mapping keys are not supported; quote the key",
        ))
    }
    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Err(E::custom("null mapping keys are not supported"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<String, A::Error> {
        Err(de::Error::custom("mapping keys must be scalars"))
    }
    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<String, A::Error> {
        Err(de::Error::custom("mapping keys must be scalars"))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<String, A::Error> {
        Err(de::Error::custom("YAML tags (`!tag`) are not supported"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::template::{Lookup, prepare_yaml};
    use serde_json::json;

    struct P;
    impl Lookup for P {
        fn lookup(&self, name: &str) -> Result<&str, String> {
            match name {
                "title" => Ok("foo\n  kind: ClusterRole"),
                "port" => Ok("8080"),
                _ => Err(format!("unknown parameter `{name}`")),
            }
        }
    }

    fn parse(text: &str) -> Result<Vec<(usize, Value)>, ParseFailure> {
        let prepared = prepare_yaml(text, "f.yaml", &P).unwrap();
        parse_documents(&prepared, "f.yaml", &Budget::new(1 << 20))
    }

    fn problem(text: &str) -> String {
        match parse(text) {
            Err(ParseFailure::Problem(p)) => p.message,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn documents_are_indexed_and_empty_ones_skipped() {
        let docs = parse("---\n# nothing\n---\na: 1\n---\n---\nb: [x, 2]\n").unwrap();
        assert_eq!(
            docs,
            vec![(2, json!({"a": 1})), (4, json!({"b": ["x", 2]}))]
        );
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn values_substitute_into_strings_and_types() {
        let docs =
            parse("a: {{port}}\nb: \"{{port}}\"\nc: x-{{port}}\n{{port}}: k\nd: |-\n  {{port}}\n")
                .unwrap();
        assert_eq!(
            docs[0].1,
            json!({"a": 8080, "b": "8080", "c": "x-8080", "8080": "k", "d": "8080"})
        );
    }

    #[test]
    fn injected_newlines_stay_inside_the_string() {
        let docs = parse("metadata:\n  name: {{title}}\nkind: Role\n").unwrap();
        assert_eq!(
            docs[0].1,
            json!({"metadata": {"name": "foo\n  kind: ClusterRole"}, "kind": "Role"})
        );
    }

    #[test]
    fn duplicate_keys_tags_and_odd_keys_are_refused() {
        assert!(problem("a: 1\na: 2\n").contains("duplicate mapping key"));
        assert!(problem("a: !foo bar\n").contains("tags"));
        assert!(problem("? [1]\n: x\n").contains("scalars"));
        assert!(problem("~: x\n").contains("null mapping key"));
        assert!(problem("1.5: x\n").contains("floating-point"));
        assert!(problem("a: .inf\n").contains("non-finite"));
        assert_eq!(
            parse("1: x\ntrue: y\n").unwrap()[0].1,
            json!({"1": "x", "true": "y"})
        );
    }

    #[test]
    fn syntax_errors_stop_at_the_first_and_name_the_document() {
        let Err(ParseFailure::Problem(p)) = parse("a: 1\n---\nb: [1, 2\nc: 3\n---\nd: 4\n") else {
            panic!()
        };
        assert_eq!(p.document, Some(2));
        assert!(p.message.contains("line"), "{}", p.message);
    }

    #[test]
    fn alias_bombs_hit_the_budget() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let prepared = prepare_yaml(&text, "f.yaml", &P).unwrap();
        let budget = Budget::new(1 << 20);
        assert!(matches!(
            parse_documents(&prepared, "f.yaml", &budget),
            Err(ParseFailure::Budget)
        ));
        // A modest alias use stays within it.
        assert_eq!(
            parse("x: &x [1]\ny: *x\n").unwrap()[0].1,
            json!({"x": [1], "y": [1]})
        );
    }

    #[test]
    fn serde_yaml_guards_are_reported_as_too_complex() {
        let deep = "a: ".to_string() + &"[".repeat(200) + &"]".repeat(200) + "\n";
        assert!(matches!(parse(&deep), Err(ParseFailure::TooComplex(_))));
        let mut wide = String::from("a: &a [x]\nb: [");
        wide.push_str(&vec!["*a"; 2000].join(", "));
        wide.push_str("]\n");
        let prepared = prepare_yaml(&wide, "f.yaml", &P).unwrap();
        // A generous budget: serde_yaml's own repetition guard must not be mistaken for it.
        let result = parse_documents(&prepared, "f.yaml", &Budget::new(1 << 30));
        assert!(result.is_ok() || matches!(result, Err(ParseFailure::TooComplex(_))));
    }

    #[test]
    fn large_aliased_strings_hit_the_byte_budget() {
        let big = "y".repeat(100_000);
        let mut text = format!("a: &s {big}\nb: [");
        text.push_str(&vec!["*s"; 20].join(", "));
        text.push_str("]\n");
        let prepared = prepare_yaml(&text, "f.yaml", &P).unwrap();
        assert!(matches!(
            parse_documents(&prepared, "f.yaml", &Budget::new(1 << 20)),
            Err(ParseFailure::Budget)
        ));
    }
}
