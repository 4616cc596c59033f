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
pub mod shell;
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

    /// A scan's own section, whoever evaluates it.
    fn validate_scan(&self, l: &LandscapeSpec) -> Result<(), SpecError> {
        if !self.search.space.is_empty() {
            return Err(SpecError::new(
                "search.space",
                "a landscape sweep has no search space",
            ));
        }
        l.validate().map_err(|(f, r)| SpecError::new(f, r))?;
        if self.total_units() > u64::from(u32::MAX) {
            return Err(SpecError::new("landscape.tile", "more than 2^32 tiles"));
        }
        Ok(())
    }

    /// Enqueued configurations and the warm start.
    fn validate_given(&self) -> Result<(), SpecError> {
        let s = &self.search;
        let given = !s.enqueue.is_empty() || !s.queued.is_empty();
        if (given || s.warm_start.is_some()) && self.kind != SweepKind::Search {
            return Err(SpecError::new(
                "search.enqueue",
                "configurations and warm starts are for searches",
            ));
        }
        if given && s.algorithm == Algorithm::Grid {
            return Err(SpecError::new(
                "search.enqueue",
                "a grid's trials are its points: enqueue configurations into a random, sobol or tpe search",
            ));
        }
        if s.enqueue.len() as u64 > u64::from(s.num_samples) {
            return Err(SpecError::new(
                "search.enqueue",
                format!(
                    "{} configurations for {} trials (num_samples counts them)",
                    s.enqueue.len(),
                    s.num_samples
                ),
            ));
        }
        for (i, p) in s.enqueue.iter().enumerate() {
            s.validate_given(&format!("search.enqueue[{i}]"), p)
                .map_err(|(f, r)| SpecError::new(f, r))?;
        }
        if let Some(w) = &s.warm_start
            && !w.starts_with("sweep:")
        {
            return Err(SpecError::new(
                "search.warm_start",
                format!("expected \"sweep:ID\", got {w:?}"),
            ));
        }
        Ok(())
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
        let format = self.data_format();
        if d.context == 0 {
            return err("data.context", "expected at least 1 token".into());
        }
        if d.image_shape.is_some_and(|s| s.contains(&0)) {
            return err(
                "data.image_shape",
                "expected [channels, height, width], each >= 1".into(),
            );
        }
        if d.tokenizer.is_some() && format != DataFormat::Text {
            return err(
                "data.tokenizer",
                "only text data is tokenised (token files already are)".into(),
            );
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
            (SweepKind::Landscape, Some(l)) => return self.validate_scan(l),
            (SweepKind::Search, None) => {}
        }
        if d.task == Task::Regression {
            return err(
                "data.task",
                "the built-in trainer classifies; regression data is for landscape scans".into(),
            );
        }
        let arch = self.model.arch;
        if arch.is_lm() != d.is_text(format) {
            return err(
                "model.arch",
                if arch.is_lm() {
                    format!(
                        "{arch:?} is a language model: it needs text or token data (data.format = \"text\" or \"tokens\")"
                    )
                } else {
                    format!(
                        "{arch:?} does not read text; use arch = \"gpt2\" or \"llama\" for text data"
                    )
                },
            );
        }
        if d.tokenizer.as_deref() == Some("model") {
            return err("data.tokenizer", "\"model\" takes the vocabulary of a scanned GGUF; a search trains from scratch (use \"bytes\" or a tokenizer.json)".into());
        }
        if arch.is_conv() && format == DataFormat::Csv && d.image_shape.is_none() {
            return err(
                "data.image_shape",
                "a convolutional model on CSV rows needs [channels, height, width]".into(),
            );
        }
        // The defaults must be valid on their own: a trial with no overrides uses them.
        self.trial_config(&Params::new())?;
        let s = &self.search;
        let geometry = self.train.geometry.as_ref();
        if let Some(g) = geometry {
            if g.steps == 0 || g.probes == 0 || g.samples == Some(0) {
                return err(
                    "train.geometry",
                    "expected steps, probes and samples of at least 1".into(),
                );
            }
            if !matches!(format, DataFormat::Csv | DataFormat::Idx) {
                return err(
                    "train.geometry",
                    "the Hessian is taken for classifiers on sample data, not on text".into(),
                );
            }
        }
        for name in s.metric.names() {
            let known = TRAIN_METRICS.contains(&name.as_str())
                || (geometry.is_some() && GEOMETRY_METRICS.contains(&name.as_str()));
            if !known {
                return err(
                    "search.metric",
                    format!(
                        "unknown metric {name:?}; expected one of {}{} (a [trial] command may report any)",
                        TRAIN_METRICS.join(", "),
                        if geometry.is_some() {
                            format!(", {}", GEOMETRY_METRICS.join(", "))
                        } else {
                            String::new()
                        }
                    ),
                );
            }
        }
        for (name, p) in &s.space {
            validate_param(name, p)?;
        }
        Ok(())
    }

    /// The objectives: distinct names, one mode each, a reference point that fits, and
    /// no early stopping with several of them.
    fn validate_objectives(&self) -> Result<(), SpecError> {
        let err = |f: &str, r: String| Err(SpecError::new(f, r));
        let s = &self.search;
        let names = s.metric.names();
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return err("search.metric", format!("{n:?} is named twice"));
            }
        }
        if let Some(m) = &s.mode
            && m.0.len() != names.len()
            && names.len() > 1
        {
            return err(
                "search.mode",
                format!(
                    "expected one mode per metric: {} metrics, {} modes",
                    names.len(),
                    m.0.len()
                ),
            );
        }
        if let Some(m) = &s.mode
            && names.len() == 1
            && m.0.len() != 1
        {
            return err("search.mode", "one metric takes one mode".into());
        }
        if let Some(r) = &s.reference_point {
            if names.len() < 2 {
                return err(
                    "search.reference_point",
                    "a hypervolume needs several objectives".into(),
                );
            }
            if r.len() != names.len() || r.iter().any(|x| !x.is_finite()) {
                return err(
                    "search.reference_point",
                    format!("expected {} finite values, one per metric", names.len()),
                );
            }
        }
        if names.len() > 1 && s.scheduler.is_some() {
            return err(
                "search.scheduler",
                "early stopping ranks trials by one metric; a multi-objective search has none (as Optuna's pruners)".into(),
            );
        }
        if s.algorithm == Algorithm::Pbt {
            self.validate_pbt()?;
        }
        let n = &s.nsga2;
        if n.population_size < 2 {
            return err("search.nsga2.population_size", "expected at least 2".into());
        }
        for (f, p) in [
            ("crossover_prob", Some(n.crossover_prob)),
            ("swapping_prob", Some(n.swapping_prob)),
            ("mutation_prob", n.mutation_prob),
        ] {
            if p.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
                return err(
                    &format!("search.nsga2.{f}"),
                    "expected a probability in [0, 1]".into(),
                );
            }
        }
        Ok(())
    }

    /// Population based training: command trials (they resume from the checkpoint the
    /// worker copies into their folder), one objective, sizes and probabilities in range.
    fn validate_pbt(&self) -> Result<(), SpecError> {
        let err = |f: &str, r: String| Err(SpecError::new(f, r));
        let s = &self.search;
        let p = &s.pbt;
        if self.trial.is_none() {
            return err(
                "search.algorithm",
                "pbt runs command or function trials ([trial]): they resume from the checkpoint in RIDGELINE_TRIAL_DIR; the built-in trainer does not yet".into(),
            );
        }
        if self.is_multi_objective() || s.scheduler.is_some() {
            return err(
                "search.algorithm",
                "pbt ranks a population by one metric and decides itself when trials stop: no list of metrics, no scheduler".into(),
            );
        }
        if s.num_samples < 2 {
            return err(
                "search.num_samples",
                "pbt needs a population of at least 2".into(),
            );
        }
        if p.rounds == 0 || p.perturbation_interval == 0 {
            return err(
                "search.pbt",
                "expected rounds and perturbation_interval of at least 1".into(),
            );
        }
        if !(p.quantile_fraction > 0.0 && p.quantile_fraction <= 0.5) {
            return err(
                "search.pbt.quantile_fraction",
                "expected a fraction in (0, 0.5]".into(),
            );
        }
        if !(0.0..=1.0).contains(&p.resample_probability) {
            return err(
                "search.pbt.resample_probability",
                "expected a probability in [0, 1]".into(),
            );
        }
        if p.perturbation_factors.is_empty()
            || p.perturbation_factors
                .iter()
                .any(|f| !(f.is_finite() && *f > 0.0))
        {
            return err(
                "search.pbt.perturbation_factors",
                "expected positive factors".into(),
            );
        }
        for name in &p.hyperparam_mutations {
            if !s.space.contains_key(name) {
                return err(
                    "search.pbt.hyperparam_mutations",
                    format!("{name:?} names no parameter of search.space"),
                );
            }
        }
        if s.enqueue.len() > s.num_samples as usize {
            return err(
                "search.enqueue",
                "pbt takes given configurations for its first round only (at most num_samples)"
                    .into(),
            );
        }
        if s.space.contains_key(PBT_PARENT) {
            return err(
                &format!("search.space.{PBT_PARENT}"),
                "the name is PBT's own (the trial a trial starts from)".into(),
            );
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
        for name in s.metric.names() {
            if name.trim().is_empty() {
                return err("search.metric", "expected the name of a reported metric");
            }
            if name == "step" {
                return err(
                    "search.metric",
                    "`step` is the time attribute, not a metric",
                );
            }
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
