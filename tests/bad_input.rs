//! Bad input gets a clear one-line error that names the file, the field and what was
//! expected: specs, data sets, checkpoints, directions files and command-line flags.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use candle_core::{Device, Tensor};
use common::*;
use ridgeline_common::spec::{DataFormat, SweepSpec};
use ridgeline_worker::data;

const SEARCH: &str = "name = \"ok\"\n[data]\npath = \"d.csv\"\n[train]\nepochs = 3\n[search]\n[search.space]\nlr = { type = \"grid\", values = [0.1] }\n";
const SCAN: &str = "name = \"ok\"\nkind = \"landscape\"\n[data]\npath = \"d.csv\"\n[landscape]\ncheckpoint = \"c\"\nx = { min = -1.0, max = 1.0, points = 5 }\n";

fn one_line(e: &str) {
    assert!(
        !e.trim_end().contains('\n'),
        "error spans several lines: {e:?}"
    );
}

#[test]
fn spec_errors() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            SEARCH,
            "epochs = 3",
            "epochz = 3",
            "train.epochz: unknown field `epochz`",
        ),
        (
            SEARCH,
            "epochs = 3",
            "epochs = \"3\"",
            "train.epochs: invalid type: string \"3\", expected usize",
        ),
        (
            SEARCH,
            "values = [0.1]",
            "values = [-0.1]",
            "search.space.lr: expected a number > 0, got -0.1",
        ),
        (
            SEARCH,
            "lr = {",
            "lrate = {",
            "search.space.lrate: unknown hyperparameter; expected one of lr, momentum",
        ),
        (
            SEARCH,
            "[search]\n",
            "[search]\nnum_samples = 0\n",
            "search.num_samples: expected at least 1",
        ),
        (
            SEARCH,
            "[search]\n",
            "[search]\nmetric = \"f1\"\n",
            "search.metric: unknown metric \"f1\"; expected one of train_loss, val_loss, val_accuracy",
        ),
        (
            SEARCH,
            "name = \"ok\"",
            "name = \"has space\"",
            "name: expected letters, digits, '-' or '_', got \"has space\"",
        ),
        (
            SEARCH,
            "path = \"d.csv\"\n",
            "path = \"d.csv\"\nval_fraction = 1.5\n",
            "data.val_fraction: expected a number in (0, 1), got 1.5",
        ),
        (
            SEARCH,
            "path = \"d.csv\"\n",
            "path = \"d.csv\"\nformat = \"idx\"\n",
            "data.labels: an IDX data set needs a labels file",
        ),
        (
            SEARCH,
            "[train]\n",
            "[train]\noptimizer = \"adam\"\n",
            "train.optimizer: unknown variant `adam`, expected `adamw` or `sgd`",
        ),
        (
            SCAN,
            "points = 5",
            "points = 0",
            "landscape.x.points: expected 1 to 100000, got 0",
        ),
        (
            SCAN,
            "min = -1.0, max = 1.0",
            "min = 1.0, max = -1.0",
            "landscape.x: expected finite min < max, got min=1, max=-1",
        ),
        (
            SCAN,
            "kind = \"landscape\"\n",
            "",
            "landscape: only landscape sweeps take a [landscape] section",
        ),
        (
            SCAN,
            "checkpoint = \"c\"\n",
            "checkpoint = \"c\"\ndirections = { type = \"target\" }\n",
            "landscape.directions.to: type = \"target\" needs the checkpoint that x points to",
        ),
        (
            SCAN,
            "points = 5 }\n",
            "points = 5 }\n[landscape.hessian]\ntop_k = 5\nblock = 2\n",
            "landscape.hessian.block: expected top_k >= 1 and block >= top_k",
        ),
        (
            SCAN,
            "checkpoint = \"c\"\n",
            "",
            "landscape.checkpoint: expected a checkpoint folder, `sweep:ID/best`, or `train = \"search spec\"`",
        ),
        (
            SCAN,
            "points = 5 }\n",
            "points = 5 }\n[landscape.curve]\n",
            "landscape.curve: a curve connects two checkpoints: it needs a 1-D scan with directions.type = \"target\"",
        ),
        (
            SCAN,
            "points = 5 }\n",
            "points = 5 }\ndirections = { type = \"target\", to = \"d\" }\n[landscape.curve]\npoints = 2\n",
            "landscape.curve.points: expected at least 3, got 2",
        ),
        (
            SCAN,
            "points = 5 }\n",
            "points = 5 }\n[landscape.curvature]\npoints = 1\n",
            "landscape.curvature: expected points, steps and probes >= 2, got points=1, steps=20, probes=10",
        ),
        (
            SCAN,
            "points = 5 }\n",
            "points = 5 }\n[landscape.hessian]\ndensity = { probes = 0 }\n",
            "landscape.hessian.density: expected probes >= 1 and steps >= 2, got probes=0, steps=64",
        ),
        (
            SCAN,
            "points = 5 }\n",
            "points = 5 }\n[landscape.hessian]\ntolerance = 0\n",
            "landscape.hessian.tolerance: expected a number in (0, 1), got 0",
        ),
        (
            SCAN,
            "points = 5 }\n",
            "points = 5 }\n[landscape.hessian]\nmethod = \"lanczos\"\n",
            "landscape.hessian.method: unknown variant `lanczos`, expected `exact` or `finite_difference`",
        ),
        (
            SEARCH,
            "lr = { type = \"grid\", values = [0.1] }\n",
            "subspace_dim = { type = \"grid\", values = [0, 2.5] }\n",
            "search.space.subspace_dim: expected an integer >= 0, got 2.5",
        ),
        (
            SEARCH,
            "epochs = 3\n",
            "epochs = 3\nprojection = \"fastfood\"\n",
            "train.projection: unknown variant `fastfood`, expected `dense` or `sparse`",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (base, from, to, want) in cases {
        assert!(base.contains(from), "case text {from:?} missing");
        let path = dir.path().join("spec.toml");
        std::fs::write(&path, base.replacen(from, to, 1)).unwrap();
        let e = SweepSpec::from_file(&path).expect_err(want).to_string();
        let want = format!("{}: {want}", path.display());
        assert!(e.starts_with(&want), "\n got: {e}\nwant: {want}");
        one_line(&e);
    }
}

#[test]
fn data_errors() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let spec_for = |path: &Path, extra: &str| {
        // A scan, so that regression data is allowed too.
        let text = format!(
            "name = \"d\"\nkind = \"landscape\"\n[data]\npath = {:?}\n{extra}[landscape]\ncheckpoint = \"c\"\n",
            path.to_str().unwrap()
        );
        SweepSpec::from_toml(&text).unwrap()
    };
    let cases: Vec<(std::path::PathBuf, &str, String)> = vec![
        (
            write("a.csv", b"1,2,0\n1,x,1\n"),
            "",
            "line 2, column 2: expected a number, found \"x\"".into(),
        ),
        (
            write("b.csv", b"1,2,0\n1,1\n"),
            "",
            "line 2: expected 3 columns, found 2".into(),
        ),
        (
            write("c.csv", b"1,2,0.5\n"),
            "",
            "line 1: label must be a class index 0, 1, 2, ..., found 0.5".into(),
        ),
        (
            write("d.csv", b"1,2,0\n"),
            "label_column = 5\n",
            "data.label_column 5 is outside the 3 columns".into(),
        ),
        (write("e.csv", b""), "", "no samples".into()),
        (
            write("f.csv.gz", &[0x1f, 0x8b, 1, 2, 3]),
            "",
            "bad gzip data".into(),
        ),
        (
            write("g.csv", b"1,2,0.5\n"),
            "task = \"regression\"\ntarget_columns = 3\n",
            "data.target_columns 3 leaves no feature in 3 columns".into(),
        ),
        (dir.path().join("missing.csv"), "", "cannot read".into()),
    ];
    for (path, extra, want) in cases {
        let spec = spec_for(&path, extra);
        let e = data::load(spec.data(), spec.data_format())
            .expect_err(&want)
            .to_string();
        let want = format!("{}: {want}", path.display());
        assert!(e.starts_with(&want), "\n got: {e}\nwant: {want}");
        one_line(&e);
    }
    // IDX: wrong magic in either file.
    let img = write("i.idx", &[0, 0, 8, 1, 0, 0, 0, 1, 5]);
    let lab = write("l.idx", &[0, 0, 8, 1, 0, 0, 0, 1, 5]);
    let spec = spec_for(&img, &format!("labels = {:?}\n", lab.to_str().unwrap()));
    let e = data::load(spec.data(), DataFormat::Idx)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "{}: expected IDX images (magic 0x00000803",
            img.display()
        )),
        "{e}"
    );
}

/// Files handed to the coordinator's scan preparation, by name.
type Files = HashMap<String, Vec<u8>>;

#[test]
fn checkpoint_and_directions_errors() {
    let spec = |dirs: &str| {
        SweepSpec::from_toml(&format!(
            "name = \"s\"\nkind = \"landscape\"\n[data]\npath = \"d.csv\"\n[landscape]\ncheckpoint = \"c\"\ndirections = {dirs}\n"
        ))
        .unwrap()
    };
    let st = |tensors: &[(&str, &[usize])]| -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let m: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(n, s)| {
                (
                    n.to_string(),
                    Tensor::zeros(*s, candle_core::DType::F32, &Device::Cpu).unwrap(),
                )
            })
            .collect();
        let p = dir.path().join("t.safetensors");
        candle_core::safetensors::save(&m, &p).unwrap();
        std::fs::read(p).unwrap()
    };
    let model = st(&[("layers.0.weight", &[3, 4]), ("layers.0.bias", &[3])]);
    let other = st(&[("layers.0.weight", &[2, 4]), ("layers.0.bias", &[2])]);
    let files = |pairs: &[(&str, &Vec<u8>)]| -> HashMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(n, b)| (n.to_string(), (*b).clone()))
            .collect()
    };
    let prepare = ridgeline_coordinator::landscape::prepare;
    let cases: Vec<(SweepSpec, Files, &str)> = vec![
        (
            spec("{ seed = 1 }"),
            files(&[("model.safetensors", &b"garbage".to_vec())]),
            "landscape.checkpoint: model.safetensors: ",
        ),
        (
            spec("{ seed = 1 }"),
            files(&[("model.safetensors", &st(&[("input.mean", &[2])]))]),
            "landscape.checkpoint: model.safetensors: no parameter tensors",
        ),
        (
            spec("{ type = \"target\", to = \"t\" }"),
            files(&[("model.safetensors", &model), ("to.safetensors", &other)]),
            "landscape.directions.to: layers.0.weight [2, 4] does not match layers.0.weight [3, 4]",
        ),
        (
            spec("{ type = \"file\", file = \"f\" }"),
            files(&[
                ("model.safetensors", &model),
                (
                    "file.safetensors",
                    &st(&[("x.layers.0.weight", &[4, 3]), ("x.layers.0.bias", &[3])]),
                ),
            ]),
            "landscape.directions.file: x.layers.0.weight: expected shape [3, 4], found [4, 3]",
        ),
        (
            spec("{ type = \"file\", file = \"f\" }"),
            files(&[
                ("model.safetensors", &model),
                ("file.safetensors", &st(&[("x.layers.0.weight", &[3, 4])])),
            ]),
            "landscape.directions.file: missing tensor x.layers.0.bias",
        ),
    ];
    for (spec, f, want) in cases {
        let e = prepare(&spec, &f).expect_err(want);
        assert!(e.starts_with(want), "\n got: {e}\nwant: {want}");
        one_line(&e);
    }
}

#[test]
fn flag_errors() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["worker", "--slots", "many"],
            "invalid value 'many' for '--slots <SLOTS>'",
        ),
        (
            &["results", "x", "--format", "xml"],
            "invalid value 'xml' for '--format <FORMAT>'",
        ),
        (
            &["coordinator", "--lease-ttl-ms", "-5"],
            "unexpected argument '-5'",
        ),
        (
            &["run"],
            "the following required arguments were not provided",
        ),
        (
            &["worker", "--coordinator", "not a url", "--device", "tpu"],
            "device tpu: expected cpu or cuda:N",
        ),
        (
            &["status", "--config", "/nonexistent/ridgeline.toml"],
            "/nonexistent/ridgeline.toml: settings file not found",
        ),
    ];
    for (args, want) in cases {
        let out = run(args, Duration::from_secs(30));
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}\n got: {err}\nwant: {want}");
    }
}
