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

/// The Python module that runs a `trial.function` (in the `ridgeline` Python package).
pub const FUNCTION_RUNNER: &str = "ridgeline._runner";

/// How a command trial is started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawTrial", into = "RawTrial")]
pub struct TrialSpec {
    /// The program and its arguments (a list, run directly), or one string run through
    /// `sh -c`. For a `function` trial: `python -m ridgeline._runner module:function`.
    pub command: Command,
    /// A Python function run as the trial, `"package.module:function"` (or
    /// `"path/to/file.py:function"`): it gets the parameters as a dict and returns the
    /// sweep's metric (a number) or a dict of metrics.
    pub function: Option<String>,
    /// The interpreter that runs `function` (default `python3`): a cluster's virtualenv.
    pub python: Option<String>,
    /// Working directory; relative paths are relative to the spec file. Defaults to the
    /// spec's folder.
    pub workdir: Option<PathBuf>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Wall-clock limit of one attempt (seconds, or a string such as "90s", "10m", "2h").
    pub timeout: Option<Seconds>,
    /// How long a stopped trial's processes get between SIGTERM and SIGKILL.
    pub kill_grace: Seconds,
}

/// `[trial]` as written: a `command` or a `function`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrial {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    command: Option<Command>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    function: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    python: Option<String>,
    #[serde(default)]
    workdir: Option<PathBuf>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    timeout: Option<Seconds>,
    #[serde(default = "default_grace")]
    kill_grace: Seconds,
}

impl TryFrom<RawTrial> for TrialSpec {
    type Error = String;

    fn try_from(r: RawTrial) -> Result<Self, String> {
        let command = match (r.command, &r.function) {
            (Some(c), None) => {
                if r.python.is_some() {
                    return Err("python: only used with trial.function".into());
                }
                c
            }
            (None, Some(f)) => Command::Argv(vec![
                r.python.clone().unwrap_or_else(|| "python3".into()),
                "-m".into(),
                FUNCTION_RUNNER.into(),
                f.clone(),
            ]),
            (Some(_), Some(_)) => {
                return Err("give trial.command or trial.function, not both".into());
            }
            (None, None) => {
                return Err(
                    "expected trial.command (a program) or trial.function (\"module:function\")"
                        .into(),
                );
            }
        };
        Ok(TrialSpec {
            command,
            function: r.function,
            python: r.python,
            workdir: r.workdir,
            env: r.env,
            timeout: r.timeout,
            kill_grace: r.kill_grace,
        })
    }
}

impl From<TrialSpec> for RawTrial {
    fn from(t: TrialSpec) -> Self {
        RawTrial {
            // A function trial's command is derived from it.
            command: t.function.is_none().then_some(t.command),
            function: t.function,
            python: t.python,
            workdir: t.workdir,
            env: t.env,
            timeout: t.timeout,
            kill_grace: t.kill_grace,
        }
    }
}

/// Whether `f` names a function as `trial.function` takes it: a dotted module path or a
/// `.py` file, a colon, and a (dotted) attribute path.
fn function_reference(f: &str) -> Result<(), String> {
    let bad = || format!("expected \"package.module:function\" or \"file.py:function\", got {f:?}");
    let (module, attr) = f.split_once(':').ok_or_else(bad)?;
    // Python identifiers (letters, digits and `_`; no leading digit).
    let ident = |s: &str| {
        let mut c = s.chars();
        c.next().is_some_and(|f| f.is_alphabetic() || f == '_')
            && c.all(|x| x.is_alphanumeric() || x == '_')
    };
    let dotted = |s: &str| !s.is_empty() && s.split('.').all(ident);
    let file = module.ends_with(".py") && !module.contains('\0');
    if !(file || dotted(module)) || !dotted(attr) {
        return Err(bad());
    }
    Ok(())
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
        if let Some(f) = &self.function {
            function_reference(f).map_err(|e| ("trial.function".to_owned(), e))?;
        }
        if let Some(p) = &self.python {
            if p.trim().is_empty() || p.contains('\0') {
                return Err(("trial.python".into(), "expected an interpreter".into()));
            }
        }
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
