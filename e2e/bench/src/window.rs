//! Phases of a measured run as back-to-back time windows, so that every request or log line
//! logged with a timestamp (audit events, operator log lines) lands in exactly one phase, and
//! averages of nested JSON counts over the iterations of a benchmark.

use jiff::Timestamp;
use serde_json::{Map, Value};

/// One phase of one iteration: `[start, end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub phase: &'static str,
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Window {
    /// Whether `at` falls into this window.
    pub fn contains(&self, at: Timestamp) -> bool {
        self.start <= at && at < self.end
    }
}

/// Cuts `[boundaries[0], boundaries[last])` into consecutive windows named by `phases`
/// (`boundaries.len() == phases.len() + 1`, ascending).
pub fn consecutive(phases: &[&'static str], boundaries: &[Timestamp]) -> Vec<Window> {
    debug_assert_eq!(boundaries.len(), phases.len() + 1);
    phases
        .iter()
        .zip(boundaries.windows(2))
        .map(|(phase, pair)| Window {
            phase,
            start: pair[0],
            end: pair[1],
        })
        .collect()
}

/// Adds every number of `add` into `into` at the same path (objects merge key by key; a key
/// missing on one side counts as 0). Non-numeric leaves of `add` are kept where `into` has none.
pub fn add_into(into: &mut Value, add: &Value) {
    match (into, add) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(slot) => add_into(slot, v),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot @ Value::Number(_), Value::Number(n)) => {
            let sum = slot.as_f64().unwrap_or(0.0) + n.as_f64().unwrap_or(0.0);
            *slot = number(sum);
        }
        _ => {}
    }
}

/// The element-wise mean of `values` (see [`add_into`]), numbers rounded to one decimal.
pub fn mean(values: &[Value]) -> Value {
    let mut total = Value::Object(Map::new());
    for v in values {
        add_into(&mut total, v);
    }
    scale(&mut total, 1.0 / values.len().max(1) as f64);
    total
}

/// Multiplies every number in `v` by `factor`, rounding to one decimal.
fn scale(v: &mut Value, factor: f64) {
    match v {
        Value::Object(m) => m.values_mut().for_each(|x| scale(x, factor)),
        Value::Array(a) => a.iter_mut().for_each(|x| scale(x, factor)),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0) * factor;
            *v = number((x * 10.0).round() / 10.0);
        }
        _ => {}
    }
}

/// Whole numbers as JSON integers (counts read as counts), others as floats.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        Value::from(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn windows_are_half_open_and_back_to_back() {
        let t = |s: i64| Timestamp::from_second(s).unwrap();
        let w = consecutive(&["a", "b"], &[t(10), t(20), t(30)]);
        assert_eq!(w.len(), 2);
        assert!(w[0].contains(t(10)) && w[0].contains(t(19)) && !w[0].contains(t(20)));
        assert!(w[1].contains(t(20)) && !w[1].contains(t(30)) && !w[1].contains(t(9)));
    }

    #[test]
    fn means_merge_nested_counts() {
        let a = json!({"kube": {"operator": {"get pods": 2, "patch namespaces": 1}}, "n": 3});
        let b = json!({"kube": {"operator": {"get pods": 1}, "preview": {"patch configmaps": 4}}, "n": 4});
        let m = mean(&[a, b]);
        assert_eq!(
            m,
            json!({"kube": {"operator": {"get pods": 1.5, "patch namespaces": 0.5},
                            "preview": {"patch configmaps": 2}}, "n": 3.5})
        );
        assert_eq!(
            mean(&[json!({"x": 1}), json!({"x": 1}), json!({"x": 2})]),
            json!({"x": 1.3})
        );
    }
}
