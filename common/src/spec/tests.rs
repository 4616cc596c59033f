//! Parsing and validation of specs, errors included.
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

pub(super) fn err_of(text: &str) -> SpecError {
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
    assert!(s.search.tpe.multivariate_for(1) && s.search.tpe.constant_liar);
    assert!(
        !s.search.tpe.multivariate_for(2),
        "Optuna 5's MOTPE is univariate"
    );
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
        (
            "timeout = \"10m\"",
            "function = \"train:objective\"",
            "trial: give trial.command or trial.function, not both",
        ),
        (
            "command = [\"python3\", \"train.py\", \"--lr\", \"{lr}\", \"--dir\", \"{trial_dir}\"]",
            "kill_grace = 5",
            "trial: expected trial.command (a program) or trial.function",
        ),
        (
            "command = [\"python3\", \"train.py\", \"--lr\", \"{lr}\", \"--dir\", \"{trial_dir}\"]",
            "function = \"train.objective\"",
            "trial.function: expected \"package.module:function\" or \"file.py:function\", got \"train.objective\"",
        ),
        (
            "command = [\"python3\", \"train.py\", \"--lr\", \"{lr}\", \"--dir\", \"{trial_dir}\"]",
            "function = \"my-pkg:objective\"",
            "trial.function: expected",
        ),
        (
            "timeout = \"10m\"",
            "python = \"/venv/bin/python\"",
            "trial: python: only used with trial.function",
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

/// A Python function as the trial: the command the worker runs is derived from it (the
/// spec's interpreter, or python3), and the wire form keeps the function, not the
/// command, so that it reads back the same.
#[test]
fn a_function_trial_runs_its_function_through_the_interpreter() {
    let text = COMMAND.replace(
        "command = [\"python3\", \"train.py\", \"--lr\", \"{lr}\", \"--dir\", \"{trial_dir}\"]",
        "function = \"mypkg.train:objective\"\npython = \"/venv/bin/python\"",
    );
    let spec = SweepSpec::from_toml(&text).unwrap();
    let t = spec.trial.as_ref().unwrap();
    assert_eq!(
        t.command,
        super::trial::Command::Argv(
            [
                "/venv/bin/python",
                "-m",
                "ridgeline._runner",
                "mypkg.train:objective"
            ]
            .map(String::from)
            .to_vec()
        )
    );
    let wire = spec.to_json();
    assert!(!wire.contains("\"command\""), "{wire}");
    assert_eq!(SweepSpec::from_json(&wire).unwrap(), spec);
    let plain = SweepSpec::from_toml(&text.replace("python = \"/venv/bin/python\"\n", "")).unwrap();
    let super::trial::Command::Argv(argv) = &plain.trial.as_ref().unwrap().command else {
        panic!("argv expected")
    };
    assert_eq!(argv[0], "python3");
    // A script's function is named by its file.
    let script = text.replace("mypkg.train:objective", "/home/u/search.py:objective");
    assert!(SweepSpec::from_toml(&script).is_ok());
}

#[test]
fn enqueued_configurations_are_checked_against_the_space() {
    let base = r#"
name = "q"
[trial]
command = "train --lr {lr}"
[search]
algorithm = "tpe"
metric = "loss"
num_samples = 2
enqueue = [{ lr = 0.01, opt = "sgd" }, { n = 3 }]
[search.space]
lr = { type = "loguniform", low = 1e-4, high = 1.0 }
n = { type = "int", low = 1, high = 4 }
opt = { type = "choice", values = ["sgd", "adam"] }
"#;
    let s = SweepSpec::from_toml(base).unwrap();
    assert_eq!(
        s.search.given(0).unwrap()["opt"],
        ParamValue::Str("sgd".into())
    );
    assert_eq!(s.search.given(1).unwrap()["n"], ParamValue::Int(3));
    assert!(s.search.given(2).is_none());
    let cases: &[(&str, &str, &str)] = &[
        (
            "lr = 0.01,",
            "lr = 5.0,",
            "search.enqueue[0].lr: Float(5.0) is not in the space",
        ),
        (
            "{ n = 3 }",
            "{ n = 2.5 }",
            "search.enqueue[1].n: Float(2.5) is not in the space",
        ),
        (
            "opt = \"sgd\"",
            "opt = \"rmsprop\"",
            "search.enqueue[0].opt: Str(\"rmsprop\") is not in the space",
        ),
        (
            "{ n = 3 }",
            "{ m = 3 }",
            "search.enqueue[1].m: names no parameter of search.space",
        ),
        (
            "num_samples = 2",
            "num_samples = 1",
            "search.enqueue: 2 configurations for 1 trials",
        ),
        (
            "algorithm = \"tpe\"",
            "algorithm = \"grid\"",
            "search.enqueue: a grid's trials are its points",
        ),
        (
            "enqueue = [",
            "warm_start = \"other\"\nenqueue = [",
            "search.warm_start: expected \"sweep:ID\"",
        ),
    ];
    for (from, to, want) in cases {
        let msg = err_of(&base.replace(from, to)).to_string();
        assert!(msg.starts_with(want), "got {msg:?}, want {want:?}");
    }
}

#[test]
fn geometry_metrics_rank_only_when_measured() {
    let base = r#"
name = "g"
[data]
path = "d.csv"
[model]
arch = "mlp"
[train]
epochs = 1
[train.geometry]
samples = 100
[search]
algorithm = "random"
metric = "hessian_trace"
"#;
    let s = SweepSpec::from_toml(base).unwrap();
    assert_eq!(s.mode(), Mode::Min);
    assert_eq!(s.train.geometry.as_ref().unwrap().steps, 20);
    let cases: &[(&str, &str, &str)] = &[
        (
            "[train.geometry]\nsamples = 100\n",
            "",
            "search.metric: unknown metric \"hessian_trace\"",
        ),
        (
            "samples = 100",
            "samples = 0",
            "train.geometry: expected steps, probes and samples of at least 1",
        ),
        (
            "path = \"d.csv\"\n[model]\narch = \"mlp\"",
            "path = \"d.txt\"\nformat = \"text\"\n[model]\narch = \"gpt2\"",
            "train.geometry: the Hessian is taken for classifiers on sample data",
        ),
    ];
    for (from, to, want) in cases {
        let msg = err_of(&base.replace(from, to)).to_string();
        assert!(msg.starts_with(want), "got {msg:?}, want {want:?}");
    }
}

#[test]
fn constraints_bound_metrics_and_sum_violations() {
    let base = r#"
name = "c"
[trial]
command = "train --lr {lr}"
[search]
algorithm = "tpe"
metric = "loss"
[search.constraints]
latency_ms = { max = 20.0 }
memory = { min = 1.0, max = 4.0 }
[search.space]
lr = { type = "loguniform", low = 1e-4, high = 1.0 }
"#;
    let s = SweepSpec::from_toml(base).unwrap();
    let m = |v: &[(&str, f64)]| -> Vec<(String, f64)> {
        v.iter().map(|(n, x)| ((*n).to_owned(), *x)).collect()
    };
    let v = |x: &[(&str, f64)]| s.search.violation(&m(x));
    assert_eq!(v(&[("latency_ms", 20.0), ("memory", 1.0)]), 0.0);
    assert_eq!(v(&[("latency_ms", 25.0), ("memory", 0.5)]), 5.5);
    assert_eq!(
        v(&[
            ("latency_ms", 10.0),
            ("memory", 2.0),
            ("constraint_a", 0.25),
            ("constraint_b", -3.0)
        ]),
        0.25
    );
    assert_eq!(v(&[("latency_ms", 10.0)]), f64::INFINITY); // memory not reported
    assert_eq!(
        v(&[("latency_ms", f64::NAN), ("memory", 2.0)]),
        f64::INFINITY
    );
    let cases: &[(&str, &str, &str)] = &[
        (
            "{ max = 20.0 }",
            "{}",
            "search.constraints.latency_ms: expected min, max or both",
        ),
        (
            "min = 1.0, max = 4.0",
            "min = 5.0, max = 4.0",
            "search.constraints.memory: min 5 is above max 4",
        ),
        (
            "{ max = 20.0 }",
            "{ max = inf }",
            "search.constraints.latency_ms: expected finite bounds",
        ),
    ];
    for (from, to, want) in cases {
        let msg = err_of(&base.replace(from, to)).to_string();
        assert!(msg.starts_with(want), "got {msg:?}, want {want:?}");
    }
}

#[test]
fn several_objectives_take_a_mode_each_and_no_scheduler() {
    let with = |extra: &str| {
        SweepSpec::from_toml(&format!(
            "name = \"mo\"\n[trial]\ncommand = [\"true\"]\n[search]\n{extra}\n[search.space]\nx = {{ type = \"uniform\", low = 0, high = 1 }}\n"
        ))
    };
    let s = with("algorithm = \"nsga2\"\nmetric = [\"val_loss\", \"accuracy\"]").unwrap();
    assert!(s.is_multi_objective());
    assert_eq!(s.objectives(), vec!["val_loss", "accuracy"]);
    assert_eq!(s.modes(), vec![Mode::Min, Mode::Max]);
    assert_eq!(s.search.nsga2.population_size, 50);
    // The list survives the stored JSON; one metric stays a plain string there.
    assert_eq!(SweepSpec::from_json(&s.to_json()).unwrap(), s);
    assert!(s.to_json().contains(r#""metric":["val_loss","accuracy"]"#));
    let one = with("metric = \"loss\"").unwrap();
    assert!(one.to_json().contains(r#""metric":"loss""#) && !one.is_multi_objective());
    let s = with("metric = [\"a\", \"b\"]\nmode = [\"max\", \"min\"]\nreference_point = [0, 5]")
        .unwrap();
    assert_eq!(s.modes(), vec![Mode::Max, Mode::Min]);
    for (extra, field, reason) in [
        (
            "metric = [\"a\", \"b\"]\nmode = [\"min\"]",
            "search.mode",
            "one mode per metric",
        ),
        ("metric = [\"a\", \"a\"]", "search.metric", "named twice"),
        (
            "metric = [\"a\", \"b\"]\nreference_point = [1]",
            "search.reference_point",
            "2 finite",
        ),
        (
            "metric = \"a\"\nreference_point = [1]",
            "search.reference_point",
            "several objectives",
        ),
        (
            "metric = [\"a\", \"b\"]\n[search.scheduler]\ntype = \"hyperband\"\nmax_resource = 27",
            "search.scheduler",
            "one metric",
        ),
        (
            "algorithm = \"nsga2\"\nmetric = [\"a\", \"b\"]\nnsga2 = { population_size = 1 }",
            "search.nsga2.population_size",
            "at least 2",
        ),
        (
            "algorithm = \"nsga2\"\nnsga2 = { swapping_prob = 1.5 }",
            "search.nsga2.swapping_prob",
            "probability",
        ),
    ] {
        let e = with(extra).unwrap_err().to_string();
        assert!(e.contains(field) && e.contains(reason), "{extra}: {e}");
    }
    let e = with("metric = []").unwrap_err().to_string();
    assert!(e.contains("at least one metric name"), "{e}");
}

#[test]
fn pbt_takes_command_trials_and_sizes_in_range() {
    // `extra` replaces the default population line (and may add more).
    let with = |extra: &str, pbt: &str| {
        let search = if extra.is_empty() {
            "num_samples = 4"
        } else {
            extra
        };
        SweepSpec::from_toml(&format!(
            "name = \"p\"\n[trial]\ncommand = [\"true\"]\n[search]\nalgorithm = \"pbt\"\n{search}\n[search.pbt]\n{pbt}\n[search.space]\nlr = {{ type = \"loguniform\", low = 1e-4, high = 1 }}\n"
        ))
    };
    let s = with("", "rounds = 3").unwrap();
    assert_eq!(s.metric(), "val_accuracy", "the default metric");
    assert_eq!(s.total_trials(), 12);
    assert_eq!(s.search.pbt.perturbation_factors, vec![1.2, 0.8]);
    for (extra, pbt, field, reason) in [
        ("num_samples = 1", "", "search.num_samples", "at least 2"),
        ("", "rounds = 0", "search.pbt", "at least 1"),
        (
            "",
            "quantile_fraction = 0.6",
            "search.pbt.quantile_fraction",
            "(0, 0.5]",
        ),
        (
            "",
            "resample_probability = -1",
            "search.pbt.resample_probability",
            "probability",
        ),
        (
            "",
            "perturbation_factors = []",
            "search.pbt.perturbation_factors",
            "positive",
        ),
        (
            "",
            "hyperparam_mutations = [\"wd\"]",
            "search.pbt.hyperparam_mutations",
            "\"wd\"",
        ),
        (
            "num_samples = 4\nmetric = [\"a\", \"b\"]",
            "",
            "search.algorithm",
            "one metric",
        ),
    ] {
        let text = with(extra, pbt);
        let e = match text {
            Ok(_) => panic!("{extra} {pbt}: accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains(field) && e.contains(reason),
            "{extra} {pbt}: {e}"
        );
    }
}

#[test]
fn pbt_with_the_builtin_trainer_varies_what_keeps_shapes_over_the_rounds_epochs() {
    let with = |train: &str, space: &str| {
        SweepSpec::from_toml(&format!(
            "name = \"p\"\n[data]\npath = \"d.csv\"\n[train]\n{train}\n[search]\nalgorithm = \"pbt\"\nnum_samples = 4\n[search.pbt]\nrounds = 3\nperturbation_interval = 2\n[search.space]\nlr = {{ type = \"loguniform\", low = 1e-4, high = 1 }}\n{space}\n"
        ))
    };
    let s = with(
        "epochs = 6",
        "momentum = { type = \"uniform\", low = 0, high = 0.9 }",
    )
    .unwrap();
    assert_eq!(s.total_trials(), 12);
    assert_eq!(s.search.pbt.steps_of(2), 5..=6);
    assert_eq!(s.search.pbt_round(11), 2);
    for (train, space, field, reason) in [
        (
            "epochs = 5",
            "",
            "train.epochs",
            "set train.epochs = 6, got 5",
        ),
        (
            "epochs = 6",
            "width = { type = \"choice\", values = [8, 16] }",
            "search.space.width",
            "pbt can vary lr, momentum",
        ),
        (
            "epochs = 6",
            "optimizer = { type = \"choice\", values = [\"sgd\", \"adamw\"] }",
            "search.space.optimizer",
            "cannot vary between members",
        ),
        (
            "epochs = 6\nsubspace_dim = 10",
            "",
            "train.subspace_dim",
            "not resumed",
        ),
    ] {
        let e = with(train, space).unwrap_err();
        assert!(
            e.field == field && e.reason.contains(reason),
            "{train} {space}: {e}"
        );
    }
}

/// `search.keep`: "all", "best" (one) or a count; anything else is refused by name.
#[test]
fn keep_says_which_checkpoints_stay() {
    let spec = |keep: &str| {
        SweepSpec::from_toml(&format!(
            "name = \"s\"\n[data]\npath = \"d.csv\"\n[search]\n{keep}\n[search.space]\nlr = {{ type = \"uniform\", low = 0.1, high = 0.2 }}\n"
        ))
    };
    let keep = |k: &str| spec(k).unwrap().search.keep;
    assert_eq!(keep(""), Keep::Best(100));
    assert_eq!(keep("keep = \"all\""), Keep::All);
    assert_eq!(keep("keep = \"best\""), Keep::Best(1));
    assert_eq!(keep("keep = 7"), Keep::Best(7));
    assert_eq!(Keep::All.bound(), None);
    for bad in ["keep = 0", "keep = -2", "keep = \"most\"", "keep = 1.5"] {
        let e = spec(bad).unwrap_err().to_string();
        assert!(
            e.contains("search.keep: expected \"all\", \"best\" or a number of trials >= 1"),
            "{bad}: {e}"
        );
    }
    let s = spec("keep = 7").unwrap();
    assert_eq!(SweepSpec::from_json(&s.to_json()).unwrap(), s);
}
