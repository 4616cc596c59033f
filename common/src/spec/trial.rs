//! Command trials: the user's own program as a trial (`[trial]` in a spec).
//!
//! The program gets its parameters three ways: `{name}` substitutions in its command
//! line, one JSON object in `RIDGELINE_PARAMS`, and one `RIDGELINE_PARAM_<NAME>`
//! variable each. It reports metrics with lines `ridgeline: {"step": 3, "val_loss": 0.2}`
//! on stdout, or the same lines appended to the file named by `RIDGELINE_REPORT_FILE`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use crate::params::{ParamValue, Params};

/// The prefix of a report line on a command trial's stdout.
pub const REPORT_PREFIX: &str = "ridgeline:";

/// Placeholders every command may use besides the space's parameters.
pub const BUILTIN_PLACEHOLDERS: &[&str] = &["trial_id", "attempt", "trial_dir", "sweep_id"];

/// How a command trial is started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialSpec {
    /// The program and its arguments (a list, run directly), or one string run through
    /// `sh -c`.
    pub command: Command,
    /// Working directory; relative paths are relative to the spec file. Defaults to the
    /// spec's folder.
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Wall-clock limit of one attempt (seconds, or a string such as "90s", "10m", "2h").
    #[serde(default)]
    pub timeout: Option<Seconds>,
    /// How long a stopped trial's processes get between SIGTERM and SIGKILL.
    #[serde(default = "default_grace")]
    pub kill_grace: Seconds,
}

fn default_grace() -> Seconds {
    Seconds(10.0)
}

/// A command line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Command {
    /// Program and arguments, run without a shell.
    Argv(Vec<String>),
    /// A shell command, run with `sh -c`.
    Shell(String),
}

/// A duration in seconds, written as a number or with a unit suffix (`s`, `m`, `h`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Seconds(pub f64);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        let secs = match Raw::deserialize(d)? {
            Raw::Number(n) => n,
            Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom)?,
        };
        if !(secs.is_finite() && secs > 0.0) {
            return Err(serde::de::Error::custom(format!(
                "expected a duration > 0, got {secs}"
            )));
        }
        Ok(Seconds(secs))
    }
}

/// Seconds in `"90s"`, `"10m"`, `"2h"`, `"250ms"` or a bare number of seconds.
pub fn parse_duration(t: &str) -> Result<f64, String> {
    let t = t.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("expected a duration such as \"90s\", \"10m\" or 600, got {t:?}"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        u => return Err(format!("unknown unit {u:?} in {t:?}; expected s, m or h")),
    };
    Ok(n * scale)
}

/// One piece of a command-line template.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Piece<'a> {
    Text(&'a str),
    Name(&'a str),
}

/// Splits a template into text and `{name}` placeholders; `{{` and `}}` are literal
/// braces, and braces around anything that is not an identifier are left as they are
/// (so JSON in an argument needs no escaping).
pub(super) fn pieces(s: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find(['{', '}']) {
        if i > 0 {
            out.push(Piece::Text(&rest[..i]));
        }
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push(Piece::Text(&tail[..1]));
            rest = &tail[2..];
            continue;
        }
        if let Some(end) = tail.find('}').filter(|_| tail.starts_with('{')) {
            let name = &tail[1..end];
            if is_identifier(name) {
                out.push(Piece::Name(name));
                rest = &tail[end + 1..];
                continue;
            }
        }
        out.push(Piece::Text(&tail[..1]));
        rest = &tail[1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    out
}

fn is_identifier(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == '-' || x == '.')
}

/// The placeholders a template uses.
pub fn placeholders(template: &str) -> Vec<&str> {
    pieces(template)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Name(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// Fills a template's placeholders with `value(name)`.
pub fn substitute(template: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut s = String::new();
    for p in pieces(template) {
        match p {
            Piece::Text(t) => s.push_str(t),
            Piece::Name(n) => match value(n) {
                Some(v) => s.push_str(&v),
                None => {
                    s.push('{');
                    s.push_str(n);
                    s.push('}');
                }
            },
        }
    }
    s
}

/// A parameter as text on a command line: floats in the shortest form that reads back
/// exactly, strings as they are.
pub fn param_text(v: &ParamValue) -> String {
    match v {
        ParamValue::Float(f) => format!("{f:?}"),
        ParamValue::Int(i) => i.to_string(),
        ParamValue::Str(s) => s.clone(),
        ParamValue::Bool(b) => b.to_string(),
    }
}

/// Quotes a word for `sh` when it is not plainly safe.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,:/+=@%".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The name of a parameter's own environment variable: `RIDGELINE_PARAM_` and the name
/// upper-cased, with anything but letters and digits turned into `_`.
pub fn param_env_name(name: &str) -> String {
    let tail: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("RIDGELINE_PARAM_{tail}")
}

/// The parameters as one JSON object, typed (`{"lr": 0.01, "layers": 3}`).
pub fn params_json(p: &Params) -> String {
    serde_json::to_string(p).expect("parameters serialise")
}

impl TrialSpec {
    /// Checks the command against the space's parameter names; errors are `(field,
    /// reason)`.
    pub fn validate<'a>(
        &self,
        params: impl Iterator<Item = &'a String> + Clone,
        conditional: impl Fn(&str) -> bool,
    ) -> Result<(), (String, String)> {
        let templates: Vec<&String> = match &self.command {
            Command::Argv(v) if v.is_empty() || v[0].trim().is_empty() => {
                return Err((
                    "trial.command".into(),
                    "expected a program and its arguments".into(),
                ));
            }
            Command::Argv(v) => v.iter().collect(),
            Command::Shell(s) if s.trim().is_empty() => {
                return Err(("trial.command".into(), "expected a command".into()));
            }
            Command::Shell(s) => {
                super::shell::check(s).map_err(|e| ("trial.command".to_owned(), e))?;
                vec![s]
            }
        };
        for t in &templates {
            for name in placeholders(t) {
                if conditional(name) {
                    return Err((
                        "trial.command".into(),
                        format!(
                            "{{{name}}} is conditional (search.conditions) and may be absent; read it from RIDGELINE_PARAMS instead"
                        ),
                    ));
                }
                if !BUILTIN_PLACEHOLDERS.contains(&name) && !params.clone().any(|p| p == name) {
                    let known: Vec<&str> = params
                        .clone()
                        .map(String::as_str)
                        .chain(BUILTIN_PLACEHOLDERS.iter().copied())
                        .collect();
                    return Err((
                        "trial.command".into(),
                        format!(
                            "{{{name}}} names no parameter; expected one of {} (write {{{{ for a literal brace)",
                            known.join(", ")
                        ),
                    ));
                }
            }
        }
        if templates.iter().any(|t| t.contains('\0')) {
            return Err((
                "trial.command".into(),
                "contains a NUL byte, which no program argument can hold".into(),
            ));
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err((
                    format!("trial.env.{k}"),
                    "not a valid environment variable name".into(),
                ));
            }
            if v.contains('\0') {
                return Err((
                    format!("trial.env.{k}"),
                    "contains a NUL byte, which no environment variable can hold".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_names_and_keep_other_braces() {
        let t = r#"--lr={lr} --cfg={"a": 1} {{lr}} {trial_dir}/ckpt"#;
        assert_eq!(placeholders(t), vec!["lr", "trial_dir"]);
        let s = substitute(t, |n| match n {
            "lr" => Some("0.01".into()),
            "trial_dir" => Some("/t/3".into()),
            _ => None,
        });
        assert_eq!(s, r#"--lr=0.01 --cfg={"a": 1} {lr} /t/3/ckpt"#);
        // awk programs keep their braces; a lone closing brace is text.
        let awk = "awk -v x={x} 'BEGIN { print x }' }{";
        assert_eq!(placeholders(awk), vec!["x"]);
        assert_eq!(
            substitute(awk, |_| Some("2".into())),
            "awk -v x=2 'BEGIN { print x }' }{"
        );
    }

    #[test]
    fn durations_and_quotes() {
        assert_eq!(parse_duration("90s").unwrap(), 90.0);
        assert_eq!(parse_duration("10m").unwrap(), 600.0);
        assert_eq!(parse_duration("1.5h").unwrap(), 5400.0);
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("3d").is_err());
        assert_eq!(shell_quote("relu"), "relu");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(param_text(&ParamValue::Float(0.1)), "0.1");
        assert_eq!(param_text(&ParamValue::Float(1.0)), "1.0");
        assert_eq!(
            param_env_name("hidden-units"),
            "RIDGELINE_PARAM_HIDDEN_UNITS"
        );
    }
}
