//! Sweep specifications: what a user writes in TOML or YAML, parsed strictly (unknown
//! keys and wrong types are errors that name the key) and validated with messages that
//! name the field and the reason.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::grid::Grid;
use crate::landscape::LandscapeSpec;
use crate::params::Params;

mod defaults;
mod keep;
mod model;
mod search;
pub mod shell;
pub mod trial;
mod validate;

pub use keep::Keep;
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
    /// An error about `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
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
    ///
    /// The path `-` reads the spec from standard input (TOML, or JSON when it starts with
    /// `{`: the Python package submits dicts so), with relative paths taken from the
    /// current folder; `.json` files are JSON, `.yaml`/`.yml` YAML, the rest TOML.
    pub fn from_file(path: &Path) -> Result<Self, SpecError> {
        let stdin = path == Path::new("-");
        let text = if stdin {
            stdin_text()
        } else {
            std::fs::read_to_string(path)
        }
        .map_err(|e| SpecError::new("(file)", format!("cannot read spec: {e}")).in_file(path))?;
        let ext = path.extension().and_then(|e| e.to_str());
        let parsed = match ext {
            Some("yaml" | "yml") => Self::from_yaml(&text),
            Some("json") => Self::from_json(&text),
            _ if stdin && text.trim_start().starts_with('{') => Self::from_json(&text),
            _ => Self::from_toml(&text),
        };
        let mut spec = parsed.map_err(|e| e.in_file(path))?;
        let base = match stdin {
            true => spec_folder(Path::new("./-")),
            false => spec_folder(path),
        };
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
            if let Some(e) = &mut l.evaluator {
                // Workers import the evaluator's function from there.
                e.workdir = Some(match &e.workdir {
                    Some(w) => base.join(w),
                    None => base.clone(),
                });
            }
            if let Some(c) = &l.checkpoint {
                if !c.starts_with("sweep:") && !c.starts_with("trial:") {
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
            SweepKind::Search => self.search.metric.primary(),
            SweepKind::Landscape => "loss",
        }
    }

    /// The objectives (metric names) of a search; one unless it is multi-objective.
    pub fn objectives(&self) -> Vec<&str> {
        match self.kind {
            SweepKind::Search => self
                .search
                .metric
                .names()
                .iter()
                .map(String::as_str)
                .collect(),
            SweepKind::Landscape => vec!["loss"],
        }
    }

    /// A trial's value of every objective, from its final metrics; `None` unless each
    /// was reported and finite.
    pub fn objective_values(&self, metrics: &[(String, f64)]) -> Option<Vec<f64>> {
        self.objectives()
            .iter()
            .map(|o| {
                metrics
                    .iter()
                    .find(|(n, _)| n == o)
                    .map(|(_, v)| *v)
                    .filter(|v| v.is_finite())
            })
            .collect()
    }

    /// Whether the search ranks trials by several objectives (Pareto dominance).
    pub fn is_multi_objective(&self) -> bool {
        self.objectives().len() > 1
    }

    /// The mode of each objective, given or defaulting from its name: losses (and
    /// curvature, flatter being the usual aim) are minimised, anything else (accuracies,
    /// scores) maximised.
    pub fn modes(&self) -> Vec<Mode> {
        if self.kind == SweepKind::Landscape {
            return vec![Mode::Min];
        }
        let names = self.search.metric.names();
        match &self.search.mode {
            Some(m) if m.0.len() == names.len() => m.0.clone(),
            Some(m) => vec![m.0[0]; names.len()],
            None => names
                .iter()
                .map(|n| {
                    if n.contains("loss") || n.starts_with("hessian_") {
                        Mode::Min
                    } else {
                        Mode::Max
                    }
                })
                .collect(),
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

    /// The mode of the (first) metric ([`SweepSpec::modes`]).
    pub fn mode(&self) -> Mode {
        self.modes()[0]
    }

    /// The format of the data, explicit or inferred from the file name.
    pub fn data_format(&self) -> DataFormat {
        let d = self.data();
        d.format.unwrap_or_else(|| {
            let name = d.path.to_string_lossy();
            if name.contains("idx") || name.contains("ubyte") {
                DataFormat::Idx
            } else if name.ends_with(".txt") || name.ends_with(".txt.gz") {
                DataFormat::Text
            } else if name.ends_with(".bin") {
                DataFormat::Tokens
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
            Algorithm::Random | Algorithm::Sobol | Algorithm::Tpe | Algorithm::Nsga2 => {
                u64::from(self.search.num_samples)
            }
            // One trial per member and round.
            Algorithm::Pbt => {
                u64::from(self.search.num_samples) * u64::from(self.search.pbt.rounds)
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
        self.validate_given()?;
        self.search
            .validate_constraints()
            .map_err(|(f, r)| SpecError::new(f, r))?;
        if self.trial.is_some() {
            self.validate_command_trial()?;
        } else if let Some(l) = self.landscape.as_ref().filter(|l| l.evaluator.is_some()) {
            // An evaluator brings its model and data: only the scan itself is checked.
            if self.kind != SweepKind::Landscape {
                return err(
                    "landscape",
                    "only landscape sweeps take a [landscape] section; set kind = \"landscape\""
                        .into(),
                );
            }
            return self.validate_scan(l);
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
        self.validate_objectives()?;
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
}

/// The most points `sobol` draws (the sequence's length).
pub const SOBOL_MAX_POINTS: u32 = 1 << 16;
/// The most dimensions `sobol` handles.
pub const SOBOL_MAX_DIMENSIONS: usize = 256;

/// The absolute folder of a spec file, against which its relative paths resolve.
/// Standard input, read once: a command may parse its spec more than once.
fn stdin_text() -> std::io::Result<String> {
    static TEXT: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| std::io::read_to_string(std::io::stdin()).map_err(|e| e.to_string()))
        .clone()
        .map_err(std::io::Error::other)
}

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
mod tests;
#[cfg(test)]
mod tests_scan;
