//! Sweep specifications: what a user writes in TOML or YAML, parsed strictly (unknown
//! keys and wrong types are errors that name the key) and validated with messages that
//! name the field and the reason.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::grid::Grid;
use crate::landscape::LandscapeSpec;
use crate::params::Params;

mod defaults;
mod model;
mod search;
pub mod trial;

pub use model::*;
pub use search::*;
pub use trial::TrialSpec;

/// A user's mistake in a spec: where it is and what was expected.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{}{field}: {reason}", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default())]
pub struct SpecError {
    /// The spec file, when the spec came from one.
    pub file: Option<PathBuf>,
    /// Dotted path of the offending key, e.g. `search.space.lr.low`.
    pub field: String,
    /// What is wrong, and what was expected.
    pub reason: String,
}

impl SpecError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SpecError {
            file: None,
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn in_file(mut self, file: &Path) -> Self {
        self.file = Some(file.to_owned());
        self
    }
}

/// A whole sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// A human name; sweep ids start with it.
    pub name: String,
    /// What kind of sweep this is.
    #[serde(default)]
    pub kind: SweepKind,
    /// The data set every built-in trial trains on, or the scan evaluates (command
    /// trials bring their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataSpec>,
    /// The model architecture (defaults, overridable per trial from `search.space`).
    #[serde(default)]
    pub model: ModelSpec,
    /// Training settings (defaults, overridable per trial from `search.space`).
    #[serde(default)]
    pub train: TrainSpec,
    /// The search: space, algorithm, metric, budget, concurrency (search sweeps).
    #[serde(default)]
    pub search: SearchSpec,
    /// The scan (landscape sweeps).
    #[serde(default)]
    pub landscape: Option<LandscapeSpec>,
    /// The user's own program as the trial, instead of the built-in trainer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<TrialSpec>,
}

/// The kinds of sweep Ridgeline runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SweepKind {
    /// Hyperparameter search: every unit is a trial that trains a model.
    #[default]
    Search,
    /// Loss-landscape scan of one trained model: every unit is a tile of grid points.
    Landscape,
}

impl SweepSpec {
    /// Reads and validates a spec file (TOML, or YAML for `.yaml`/`.yml`). Relative data
    /// paths are resolved against the spec's folder, so the result can be sent anywhere.
    pub fn from_file(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SpecError::new("(file)", format!("cannot read spec: {e}")).in_file(path)
        })?;
        let yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        let mut spec = if yaml {
            Self::from_yaml(&text)
        } else {
            Self::from_toml(&text)
        }
        .map_err(|e| e.in_file(path))?;
        let base = spec_folder(path);
        if let Some(d) = &mut spec.data {
            d.path = base.join(&d.path);
            if let Some(l) = &d.labels {
                d.labels = Some(base.join(l));
            }
        }
        if let Some(t) = &mut spec.trial {
            // Remote workers run the command where the spec was: its folder must be on
            // storage they share (or exist there at the same path).
            t.workdir = Some(match &t.workdir {
                Some(w) => base.join(w),
                None => base.clone(),
            });
        }
        if let Some(l) = &mut spec.landscape {
            if let Some(c) = &l.checkpoint {
                if !c.starts_with("sweep:") {
                    l.checkpoint = Some(base.join(c).display().to_string());
                }
            }
            if let Some(t) = &l.train {
                l.train = Some(base.join(t));
            }
            let d = &mut l.directions;
            for c in [&mut d.to, &mut d.y_to].into_iter().flatten() {
                if !c.starts_with("sweep:") && !c.starts_with("trial:") {
                    *c = base.join(&*c).display().to_string();
                }
            }
            if let Some(f) = &d.file {
                d.file = Some(base.join(f));
            }
        }
        Ok(spec)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| SpecError::new("(toml)", one_line(&e.to_string())))?;
        let spec: SweepSpec = serde_path_to_error::deserialize(de).map_err(path_error)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Parses and validates YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, SpecError> {
        let de = serde_norway::Deserializer::from_str(text);
        let spec: SweepSpec = serde_path_to_error::deserialize(de).map_err(path_error)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Parses and validates the JSON form that travels on the wire.
    pub fn from_json(text: &str) -> Result<Self, SpecError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let spec: SweepSpec = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
        spec.validate()?;
        Ok(spec)
    }

    /// The wire form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("specs always serialise")
    }

    /// The metric that ranks units: the search metric, or `loss` for scans.
    pub fn metric(&self) -> &str {
        match self.kind {
            SweepKind::Search => &self.search.metric,
            SweepKind::Landscape => "loss",
        }
    }

    /// Units of this sweep running at once (0: no limit).
    pub fn max_concurrent(&self) -> u32 {
        match self.kind {
            SweepKind::Search => self.search.max_concurrent,
            SweepKind::Landscape => 0,
        }
    }

    /// Number of work units: trials, or tiles of a scan.
    pub fn total_units(&self) -> u64 {
        match (&self.kind, &self.landscape) {
            (SweepKind::Landscape, Some(l)) => l.units() as u64,
            _ => self.total_trials(),
        }
    }

    /// The mode, defaulting from the metric's name: losses are minimised, anything else
    /// (accuracies, scores) maximised.
    pub fn mode(&self) -> Mode {
        if self.kind == SweepKind::Landscape {
            return Mode::Min;
        }
        self.search
            .mode
            .unwrap_or(if self.search.metric.contains("loss") {
                Mode::Min
            } else {
                Mode::Max
            })
    }

    /// The format of the data, explicit or inferred from the file name.
    pub fn data_format(&self) -> DataFormat {
        let d = self.data();
        d.format.unwrap_or_else(|| {
            let name = d.path.to_string_lossy();
            if name.contains("idx") || name.contains("ubyte") {
                DataFormat::Idx
            } else {
                DataFormat::Csv
            }
        })
    }

    /// The grid formed by the space's `grid` axes, in name order.
    pub fn grid(&self) -> Grid {
        let axes = self
            .search
            .space
            .iter()
            .filter_map(|(name, p)| match p {
                ParamSpec::Grid { values } => Some((name.clone(), values.clone())),
                _ => None,
            })
            .collect();
        Grid::new(axes).expect("validated: axes non-empty and product fits")
    }

    /// Total number of trials the search will run.
    pub fn total_trials(&self) -> u64 {
        match self.search.algorithm {
            Algorithm::Grid => self.grid().len() * u64::from(self.search.num_samples),
            Algorithm::Random | Algorithm::Sobol | Algorithm::Tpe => {
                u64::from(self.search.num_samples)
            }
        }
    }

    /// Checks everything serde cannot: ranges, names, the space's parameters.
    pub fn validate(&self) -> Result<(), SpecError> {
        let err = |f: &str, r: String| Err(SpecError::new(f, r));
        if self.name.trim().is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return err(
                "name",
                format!("expected letters, digits, '-' or '_', got {:?}", self.name),
            );
        }
        self.search
            .validate_conditions()
            .map_err(|(f, r)| SpecError::new(f, r))?;
        if self.trial.is_some() {
            self.validate_command_trial()?;
        } else {
            self.validate_builtin()?;
            if self.kind == SweepKind::Landscape {
                return Ok(());
            }
        }
        let s = &self.search;
        if s.num_samples == 0 {
            return err("search.num_samples", "expected at least 1".into());
        }
        if s.algorithm == Algorithm::Sobol {
            if s.num_samples > SOBOL_MAX_POINTS {
                return err(
                    "search.num_samples",
                    format!("sobol draws at most {SOBOL_MAX_POINTS} points"),
                );
            }
            if s.space.len() > SOBOL_MAX_DIMENSIONS {
                return err(
                    "search.space",
                    format!("sobol handles at most {SOBOL_MAX_DIMENSIONS} dimensions"),
                );
            }
        }
        let t = &s.tpe;
        if t.n_ei_candidates == 0 {
            return err("search.tpe.n_ei_candidates", "expected at least 1".into());
        }
        if !(t.prior_weight.is_finite() && t.prior_weight > 0.0) {
            return err(
                "search.tpe.prior_weight",
                format!("expected a number > 0, got {}", t.prior_weight),
            );
        }
        if let Some(sch) = &s.scheduler {
            sch.validate().map_err(|(f, r)| SpecError::new(f, r))?;
        }

        if let Err(e) = Grid::new(
            s.space
                .iter()
                .filter_map(|(n, p)| match p {
                    ParamSpec::Grid { values } => Some((n.clone(), values.clone())),
                    _ => None,
                })
                .collect(),
        ) {
            return err("search.space", e.to_string());
        }
        if self.total_trials() > u64::from(u32::MAX) {
            return err(
                "search",
                format!("{} trials is more than 2^32", self.total_trials()),
            );
        }
        Ok(())
    }

    /// The data set; present in every validated spec that has no `[trial]` command.
    pub fn data(&self) -> &DataSpec {
        self.data
            .as_ref()
            .expect("validated: built-in trials and scans have a [data] section")
    }

    /// Built-in trials and scans: the data, the model and the training settings.
    fn validate_builtin(&self) -> Result<(), SpecError> {
        let err = |f: &str, r: String| Err(SpecError::new(f, r));
        let Some(d) = &self.data else {
            return err(
                "data",
                "missing: built-in trials and landscape scans need a [data] section (or give a [trial] command)"
                    .into(),
            );
        };
        if !(d.val_fraction > 0.0 && d.val_fraction < 1.0) {
            return err(
                "data.val_fraction",
                format!("expected a number in (0, 1), got {}", d.val_fraction),
            );
        }
        if self.data_format() == DataFormat::Idx && d.labels.is_none() {
            return err("data.labels", "an IDX data set needs a labels file".into());
        }
        if d.limit == Some(0) {
            return err("data.limit", "expected at least 1 sample".into());
        }
        if d.task == Task::Regression && d.target_columns == 0 {
            return err("data.target_columns", "expected at least 1".into());
        }
        match (self.kind, &self.landscape) {
            (SweepKind::Landscape, None) => {
                return err(
                    "landscape",
                    "a landscape sweep needs a [landscape] section".into(),
                );
            }
            (SweepKind::Search, Some(_)) => {
                return err(
                    "landscape",
                    "only landscape sweeps take a [landscape] section; set kind = \"landscape\""
                        .into(),
                );
            }
            (SweepKind::Landscape, Some(l)) => {
                if !self.search.space.is_empty() {
                    return err(
                        "search.space",
                        "a landscape sweep has no search space".into(),
                    );
                }
                l.validate().map_err(|(f, r)| SpecError::new(f, r))?;
                if self.total_units() > u64::from(u32::MAX) {
                    return err("landscape.tile", "more than 2^32 tiles".into());
                }
                return Ok(());
            }
            (SweepKind::Search, None) => {}
        }
        if d.task == Task::Regression {
            return err(
                "data.task",
                "the built-in trainer classifies; regression data is for landscape scans".into(),
            );
        }
        // The defaults must be valid on their own: a trial with no overrides uses them.
        self.trial_config(&Params::new())?;
        let s = &self.search;
        if !TRAIN_METRICS.contains(&s.metric.as_str()) {
            return err(
                "search.metric",
                format!(
                    "unknown metric {:?}; expected one of {} (a [trial] command may report any)",
                    s.metric,
                    TRAIN_METRICS.join(", ")
                ),
            );
        }
        for (name, p) in &s.space {
            validate_param(name, p)?;
        }
        Ok(())
    }

    /// Command trials: the command, free parameter names, any metric name.
    fn validate_command_trial(&self) -> Result<(), SpecError> {
        let err = |f: &str, r: &str| Err(SpecError::new(f, r));
        let t = self.trial.as_ref().expect("caller checked");
        if self.kind == SweepKind::Landscape {
            return err(
                "trial",
                "a landscape scan evaluates a model; it runs no command",
            );
        }
        if self.data.is_some() {
            return err(
                "data",
                "a [trial] command brings its own data; give it as a parameter or in the command",
            );
        }
        if self.model != ModelSpec::default() || self.train != TrainSpec::default() {
            return err(
                "trial",
                "a [trial] command takes no [model] or [train] section: its settings belong in search.space or the command",
            );
        }
        let s = &self.search;
        if s.metric.trim().is_empty() {
            return err("search.metric", "expected the name of a reported metric");
        }
        if s.metric == "step" {
            return err(
                "search.metric",
                "`step` is the time attribute, not a metric",
            );
        }
        for (name, p) in &s.space {
            let field = format!("search.space.{name}");
            if name.is_empty() || name.contains(['{', '}', '=', '\0']) {
                return err(&field, "expected a name without braces, '=' or NUL");
            }
            p.check().map_err(|r| SpecError::new(&field, r))?;
        }
        t.validate(s.space.keys(), |n| s.conditions.contains_key(n))
            .map_err(|(f, r)| SpecError::new(f, r))
    }
}

/// The most points `sobol` draws (the sequence's length).
pub const SOBOL_MAX_POINTS: u32 = 1 << 16;
/// The most dimensions `sobol` handles.
pub const SOBOL_MAX_DIMENSIONS: usize = 256;

/// The absolute folder of a spec file, against which its relative paths resolve.
fn spec_folder(path: &Path) -> PathBuf {
    // "spec.toml" has the parent "", which canonicalize refuses: it means ".".
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::canonicalize(base).unwrap_or_else(|_| base.to_owned())
}

fn path_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> SpecError {
    let path = e.path().to_string();
    let field = if path == "." || path.is_empty() {
        "(top level)".to_owned()
    } else {
        path
    };
    SpecError::new(field, one_line(&e.inner().to_string()))
}

/// Error messages of the parsers span several lines (a source excerpt); keep the first
/// line that carries the reason so that errors stay one line.
fn one_line(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    // toml prints "TOML parse error at line L, column C", the excerpt, then the reason.
    match (lines.first(), lines.last()) {
        (Some(first), Some(last)) if first != last && first.starts_with("TOML parse error") => {
            format!(
                "{last} ({})",
                first
                    .trim_start_matches("TOML parse error ")
                    .trim_end_matches(':')
            )
        }
        (Some(first), _) => first.to_string(),
        _ => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::ParamValue;

    const BASE: &str = r#"
name = "t"
[data]
path = "d.csv"
[train]
epochs = 3
[search]
algorithm = "grid"
[search.space]
lr = { type = "loguniform", low = 1e-4, high = 1e-1 }
width = { type = "grid", values = [16, 32] }
activation = { type = "grid", values = ["relu", "tanh"] }
"#;

    fn err_of(text: &str) -> SpecError {
        SweepSpec::from_toml(text).expect_err("spec should be refused")
    }

    #[test]
    fn parses_defaults_and_space() {
        let s = SweepSpec::from_toml(BASE).unwrap();
        assert_eq!(s.train.epochs, 3);
        assert_eq!(s.train.batch_size, 64);
        assert_eq!(s.mode(), Mode::Max);
        assert_eq!(s.total_trials(), 4);
        assert_eq!(s.grid().axes()[0].0, "activation");
        let round = SweepSpec::from_json(&s.to_json()).unwrap();
        assert_eq!(round, s);
    }

    #[test]
    fn yaml_is_accepted_too() {
        let y = "name: y\ndata: {path: d.csv}\nsearch:\n  algorithm: random\n  num_samples: 7\n  space:\n    dropout: {type: uniform, low: 0.0, high: 0.5}\n";
        let s = SweepSpec::from_yaml(y).unwrap();
        assert_eq!(s.total_trials(), 7);
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "[train]\nepochs = 3",
                "[train]\nepochz = 3",
                "train.epochz: unknown field `epochz`, expected one of `epochs`",
            ),
            (
                "[train]\nepochs = 3",
                "[train]\nepochs = \"three\"",
                "train.epochs: invalid type: string \"three\"",
            ),
            (
                "lr = { type = \"loguniform\", low = 1e-4, high = 1e-1 }",
                "lr = { type = \"loguniform\", low = 0.0, high = 1e-1 }",
                "search.space.lr: loguniform needs low > 0",
            ),
            (
                "lr = { type = \"loguniform\", low = 1e-4, high = 1e-1 }",
                "learning_rate = { type = \"uniform\", low = 0.1, high = 0.2 }",
                "search.space.learning_rate: unknown hyperparameter",
            ),
            (
                "width = { type = \"grid\", values = [16, 32] }",
                "width = { type = \"grid\", values = [16, 0.5] }",
                "search.space.width: expected an integer >= 1, got 0.5",
            ),
            (
                "width = { type = \"grid\", values = [16, 32] }",
                "width = { type = \"grid\", values = [] }",
                "search.space.width: expected at least one value",
            ),
            (
                "width = { type = \"grid\", values = [16, 32] }",
                "width = { type = \"gird\", values = [16] }",
                "search.space.width.type: unknown variant `gird`, expected one of `uniform`",
            ),
            (
                "algorithm = \"grid\"",
                "algorithm = \"bayes\"",
                "search.algorithm: unknown variant `bayes`",
            ),
            (
                "algorithm = \"grid\"",
                "algorithm = \"grid\"\nmetric = \"acc\"",
                "search.metric: unknown metric \"acc\"",
            ),
        ];
        for (from, to, want) in cases {
            assert!(BASE.contains(from), "case text {from:?} not in BASE");
            let e = err_of(&BASE.replacen(from, to, 1));
            let msg = e.to_string();
            assert!(msg.starts_with(want), "got {msg:?}, want prefix {want:?}");
            assert!(!msg.contains('\n'), "multi-line error {msg:?}");
        }
    }

    const COMMAND: &str = r#"
name = "c"
[trial]
command = ["python3", "train.py", "--lr", "{lr}", "--dir", "{trial_dir}"]
timeout = "10m"
[search]
algorithm = "tpe"
metric = "score"
[search.space]
lr = { type = "loguniform", low = 1e-4, high = 1e-1 }
"hidden units" = { type = "int", low = 1, high = 4 }
[search.scheduler]
type = "hyperband"
max_resource = 27
"#;

    #[test]
    fn a_spec_named_without_a_folder_resolves_against_the_working_folder() {
        let here = std::env::current_dir().unwrap().canonicalize().unwrap();
        assert_eq!(spec_folder(Path::new("s.toml")), here);
        assert_eq!(spec_folder(Path::new("./s.toml")), here);
        assert_eq!(
            spec_folder(Path::new("/tmp/s.toml")),
            Path::new("/tmp").canonicalize().unwrap()
        );
    }

    #[test]
    fn command_trials_take_free_names_and_any_metric() {
        let s = SweepSpec::from_toml(COMMAND).unwrap();
        let t = s.trial.as_ref().unwrap();
        assert_eq!(t.timeout, Some(trial::Seconds(600.0)));
        assert_eq!(t.kill_grace, trial::Seconds(10.0));
        assert_eq!(s.metric(), "score");
        assert_eq!(s.mode(), Mode::Max);
        assert_eq!(s.total_trials(), 1);
        assert!(s.search.tpe.multivariate && s.search.tpe.constant_liar);
        assert_eq!(SweepSpec::from_json(&s.to_json()).unwrap(), s);
        let y = "name: y\ntrial: {command: \"echo {x}\"}\nsearch:\n  metric: loss\n  space:\n    x: {type: uniform, low: 0, high: 1}\n";
        assert!(matches!(
            SweepSpec::from_yaml(y).unwrap().trial.unwrap().command,
            trial::Command::Shell(_)
        ));
    }

    #[test]
    fn command_trial_mistakes_name_the_key() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "\"{lr}\", \"--dir\"",
                "\"{lrr}\", \"--dir\"",
                "trial.command: {lrr} names no parameter; expected one of hidden units, lr, trial_id",
            ),
            (
                "timeout = \"10m\"",
                "timeout = \"ten minutes\"",
                "trial.timeout: expected a duration",
            ),
            (
                "timeout = \"10m\"",
                "timeout = -1",
                "trial.timeout: expected a duration > 0",
            ),
            (
                "[trial]",
                "[data]\npath = \"x.csv\"\n[trial]",
                "data: a [trial] command brings its own data",
            ),
            (
                "[trial]",
                "[train]\nepochs = 3\n[trial]",
                "trial: a [trial] command takes no [model] or [train] section",
            ),
            (
                "command = [\"python3\"",
                "command = [\"\"",
                "trial.command: expected a program",
            ),
            (
                "max_resource = 27",
                "min_resource = 2",
                "search.scheduler: missing field `max_resource`",
            ),
            (
                "type = \"hyperband\"\nmax_resource = 27",
                "type = \"asha\"\nreduction_factor = 1",
                "search.scheduler.reduction_factor: expected a number > 1",
            ),
            (
                "type = \"hyperband\"",
                "type = \"successive\"",
                "search.scheduler.type: unknown variant `successive`",
            ),
            (
                "[search.space]",
                "[search.tpe]\nn_ei_candidates = 0\n[search.space]",
                "search.tpe.n_ei_candidates: expected at least 1",
            ),
            (
                "metric = \"score\"",
                "metric = \"step\"",
                "search.metric: `step` is the time attribute",
            ),
            (
                "timeout = \"10m\"",
                "timeout = \"10m\"\nenv = { A = \"x\\u0000y\" }",
                "trial.env.A: contains a NUL byte",
            ),
            (
                "\"--dir\"",
                "\"--d\\u0000ir\"",
                "trial.command: contains a NUL byte",
            ),
        ];
        for (from, to, want) in cases {
            assert!(COMMAND.contains(from), "case text {from:?} not in COMMAND");
            let e = err_of(&COMMAND.replacen(from, to, 1));
            let msg = e.to_string();
            assert!(msg.starts_with(want), "got {msg:?}, want prefix {want:?}");
        }
        // Built-in trials still check their names and metrics.
        let e = err_of(&BASE.replace(
            "algorithm = \"grid\"",
            "algorithm = \"grid\"\nmetric = \"score\"",
        ));
        assert!(
            e.to_string().contains("a [trial] command may report any"),
            "{e}"
        );
        let e = err_of("name = \"n\"\n[search]\nalgorithm = \"random\"");
        assert!(e.to_string().starts_with("data: missing"), "{e}");
    }

    #[test]
    fn conditions_name_choices_and_their_values() {
        let base = r#"
name = "c"
[trial]
command = "train --opt {opt}"
[search]
algorithm = "random"
metric = "loss"
[search.space]
opt = { type = "choice", values = ["sgd", "adam"] }
momentum = { type = "uniform", low = 0.0, high = 0.9 }
beta = { type = "uniform", low = 0.8, high = 0.99 }
[search.conditions]
momentum = { opt = "sgd" }
"#;
        let s = SweepSpec::from_toml(base).unwrap();
        let mut p = Params::from([("opt".to_owned(), ParamValue::Str("adam".into()))]);
        assert!(!s.search.active("momentum", &p) && s.search.active("beta", &p));
        p.insert("opt".into(), ParamValue::Str("sgd".into()));
        assert!(s.search.active("momentum", &p));
        let cases: &[(&str, &str)] = &[
            (
                "momentum = { opt = \"sgd\" }",
                "search.conditions.momentum.opt: nesterov is not one of its values",
            ),
            (
                "lr = { opt = \"sgd\" }",
                "search.conditions.lr: names no parameter of search.space",
            ),
            (
                "momentum = { beta = 0.9 }",
                "search.conditions.momentum.beta: conditions name choice or grid parameters",
            ),
            (
                "momentum = {}",
                "search.conditions.momentum: expected at least one",
            ),
            (
                "momentum = { opt = \"sgd\" }\nopt = { opt = \"sgd\" }",
                "search.conditions.momentum.opt: a condition may only name unconditional parameters",
            ),
        ];
        for (i, (line, want)) in cases.iter().enumerate() {
            let text = if i == 0 {
                base.replace(
                    "momentum = { opt = \"sgd\" }",
                    "momentum = { opt = \"nesterov\" }",
                )
            } else {
                base.replace("momentum = { opt = \"sgd\" }", line)
            };
            let msg = err_of(&text).to_string();
            assert!(msg.starts_with(want), "got {msg:?}, want {want:?}");
        }
        // A conditional parameter cannot be a placeholder: it may be absent.
        let msg = err_of(&base.replace("--opt {opt}", "--m {momentum}")).to_string();
        assert!(
            msg.starts_with("trial.command: {momentum} is conditional"),
            "{msg}"
        );
    }

    #[test]
    fn trial_config_applies_overrides() {
        let s = SweepSpec::from_toml(BASE).unwrap();
        let mut p = Params::new();
        p.insert("width".into(), ParamValue::Int(32));
        p.insert("activation".into(), ParamValue::Str("tanh".into()));
        p.insert("lr".into(), ParamValue::Float(0.01));
        let c = s.trial_config(&p).unwrap();
        assert_eq!(c.model.width, 32);
        assert_eq!(c.model.activation, Activation::Tanh);
        assert_eq!(c.train.lr, 0.01);
    }
}
