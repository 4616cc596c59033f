//! The report line protocol of command trials.
//!
//! A report is one JSON object on one line, after the prefix `ridgeline:` on stdout (or
//! with or without it in `RIDGELINE_REPORT_FILE`): `ridgeline: {"step": 3, "val_loss":
//! 0.21}`. Numbers are metrics; `step` (an integer >= 0) is the time attribute that
//! schedulers use, counted up from 1 when absent; values of other types are ignored.
//! Python's `json.dumps` writes NaN and infinities as `NaN`, `Infinity` and
//! `-Infinity`: those are read as such (a NaN metric makes the trial diverge).

use ridgeline_common::spec::trial::REPORT_PREFIX;

/// One report.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The step, if the line gave one.
    pub step: Option<u32>,
    /// Metric values, in the line's order.
    pub metrics: Vec<(String, f64)>,
}

/// Strips the report prefix from a stdout line; `None` if the line is not a report.
pub fn report_payload(line: &str) -> Option<&str> {
    line.trim_start().strip_prefix(REPORT_PREFIX)
}

/// Parses a report's JSON object.
pub fn parse_report(payload: &str) -> Result<Report, String> {
    let text = payload.trim();
    let value: serde_json::Value = serde_json::from_str(&python_floats(text))
        .map_err(|e| format!("not a JSON object ({e}): {}", shorten(text)))?;
    let serde_json::Value::Object(map) = value else {
        return Err(format!("not a JSON object: {}", shorten(text)));
    };
    let mut report = Report {
        step: None,
        metrics: Vec::new(),
    };
    for (k, v) in map {
        let x = match &v {
            serde_json::Value::Number(n) => n.as_f64(),
            serde_json::Value::String(s) => special(s),
            _ => None,
        };
        if k == "step" {
            let step = v
                .as_u64()
                .filter(|s| *s <= u64::from(u32::MAX))
                .ok_or_else(|| format!("step must be an integer >= 0, got {v}"))?;
            report.step = Some(step as u32);
        } else if let Some(x) = x {
            report.metrics.push((k, x));
        }
    }
    Ok(report)
}

/// The markers [`python_floats`] puts in place of NaN and the infinities.
fn special(s: &str) -> Option<f64> {
    match s {
        "\u{0}NaN" => Some(f64::NAN),
        "\u{0}Infinity" => Some(f64::INFINITY),
        "\u{0}-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// Turns Python's bare `NaN`, `Infinity` and `-Infinity` tokens (outside strings) into
/// marked strings that serde_json accepts.
fn python_floats(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        let token = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        if let Some(t) = token {
            out.push_str(&format!("\"\\u0000{t}\""));
            rest = &rest[t.len()..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 120 {
        format!("{}...", s.chars().take(120).collect::<String>())
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_numbers_steps_and_python_specials() {
        let r =
            parse_report(r#" {"step": 3, "val_loss": 0.21, "acc": 1, "phase": "val"}"#).unwrap();
        assert_eq!(r.step, Some(3));
        assert_eq!(
            r.metrics,
            vec![("acc".into(), 1.0), ("val_loss".into(), 0.21)]
        );
        let r = parse_report(r#"{"loss": NaN, "g": -Infinity, "note": "NaN stays text"}"#).unwrap();
        assert!(r.metrics[1].1.is_nan(), "{r:?}");
        assert_eq!(r.metrics[0], ("g".into(), f64::NEG_INFINITY));
        assert_eq!(r.metrics.len(), 2);
        assert_eq!(report_payload("ridgeline: {}"), Some(" {}"));
        assert_eq!(report_payload("epoch 3 done"), None);
    }

    #[test]
    fn malformed_reports_say_why() {
        assert!(
            parse_report("{\"loss\": }")
                .unwrap_err()
                .contains("not a JSON object")
        );
        assert!(
            parse_report("[1, 2]")
                .unwrap_err()
                .contains("not a JSON object")
        );
        assert!(
            parse_report("{\"step\": -1}")
                .unwrap_err()
                .contains("step must be")
        );
        assert!(
            parse_report("{\"step\": 1.5}")
                .unwrap_err()
                .contains("step must be")
        );
    }
}
