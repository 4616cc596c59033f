//! The parts of [`SweepSpec::validate`]: one check per section or kind of sweep.

use super::*;

impl SweepSpec {
    /// A scan's own section, whoever evaluates it.
    pub(super) fn validate_scan(&self, l: &LandscapeSpec) -> Result<(), SpecError> {
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
    pub(super) fn validate_given(&self) -> Result<(), SpecError> {
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
    pub(super) fn validate_builtin(&self) -> Result<(), SpecError> {
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
    pub(super) fn validate_objectives(&self) -> Result<(), SpecError> {
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
    pub(super) fn validate_pbt(&self) -> Result<(), SpecError> {
        let err = |f: &str, r: String| Err(SpecError::new(f, r));
        let s = &self.search;
        let p = &s.pbt;
        if self.trial.is_none() {
            self.validate_pbt_builtin()?;
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

    /// PBT with the built-in trainer: a round resumes the parent's model and optimizer,
    /// so only what leaves both their shapes may vary, and the epochs are the rounds'.
    fn validate_pbt_builtin(&self) -> Result<(), SpecError> {
        let p = &self.search.pbt;
        let epochs = p.rounds as usize * p.perturbation_interval as usize;
        if self.train.epochs != epochs {
            return Err(SpecError::new(
                "train.epochs",
                format!(
                    "pbt trains search.pbt.rounds × perturbation_interval = {epochs} epochs (the span of the learning-rate schedule): set train.epochs = {epochs}, got {}",
                    self.train.epochs
                ),
            ));
        }
        if self.train.subspace_dim > 0 {
            return Err(SpecError::new(
                "train.subspace_dim",
                "pbt copies whole models between members; subspace training is not resumed",
            ));
        }
        for name in self.search.space.keys() {
            if !PBT_BUILTIN_PARAMS.contains(&name.as_str()) {
                return Err(SpecError::new(
                    format!("search.space.{name}"),
                    format!(
                        "pbt resumes a member from another's model and optimizer, so {name} cannot vary between members; with the built-in trainer pbt can vary {}",
                        PBT_BUILTIN_PARAMS.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Command trials: the command, free parameter names, any metric name.
    pub(super) fn validate_command_trial(&self) -> Result<(), SpecError> {
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
