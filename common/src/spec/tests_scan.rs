//! Spec tests of `[landscape]` sections: evaluator scans and their exports.

use super::tests::err_of;
use super::*;

/// A scan of the user's own PyTorch model: no [data], no checkpoint; what an evaluator
/// cannot do yet is refused, naming the key.
#[test]
fn an_evaluator_scan_needs_no_data_and_refuses_what_it_cannot_do() {
    let ok = r#"
name = "torch-scan"
kind = "landscape"
[landscape]
tile = 9
x = { min = -1.0, max = 1.0, points = 9 }
y = { min = -1.0, max = 1.0, points = 9 }
[landscape.evaluator]
python = "mypkg.scan:build"
"#;
    let s = SweepSpec::from_toml(ok).unwrap();
    let e = s.landscape.as_ref().unwrap().evaluator.as_ref().unwrap();
    assert_eq!((e.python.as_str(), e.timeout), ("mypkg.scan:build", 600.0));
    assert_eq!(e.dtype, crate::landscape::EvalDtype::Model);
    let f64_spec =
        SweepSpec::from_toml(&ok.replace("build\"", "build\"\ndtype = \"float64\"")).unwrap();
    let e64 = f64_spec.landscape.unwrap().evaluator.unwrap();
    assert_eq!(e64.dtype.as_str(), "float64");
    assert_eq!(SweepSpec::from_json(&s.to_json()).unwrap(), s);
    let cases = [
        (
            "python = \"mypkg.scan:build\"",
            "python = \"mypkg.scan\"",
            "landscape.evaluator.python: expected",
        ),
        (
            "[landscape]",
            "[landscape]\ncheckpoint = \"c\"",
            "landscape.evaluator: an evaluator brings its own model",
        ),
        (
            "[landscape]",
            "[landscape]\nsplit = \"val\"",
            "landscape.split: an evaluator evaluates the data",
        ),
        (
            "python = \"mypkg.scan:build\"",
            "python = \"m:f\"\n[landscape.hessian]\nmethod = \"finite_difference\"",
            "landscape.hessian.method: an evaluator computes exact products",
        ),
        (
            "python = \"mypkg.scan:build\"",
            "python = \"m:f\"\ntimeout = 0",
            "landscape.evaluator.timeout: expected seconds > 0",
        ),
        (
            "python = \"mypkg.scan:build\"",
            "python = \"m:f\"\npoints_per_pass = 0",
            "landscape.evaluator.points_per_pass: expected 1 to 4096",
        ),
        (
            "[landscape]",
            "[landscape]\ndirections = { type = \"pca\", trajectory = \"sweep:s/best\" }",
            "landscape.directions.type: PCA directions come from a Ridgeline training trajectory",
        ),
        (
            "python = \"mypkg.scan:build\"",
            "python = \"m:f\"\ndtype = \"float16\"",
            "landscape.evaluator.dtype: unknown variant `float16`",
        ),
    ];
    for (from, to, want) in cases {
        assert!(ok.contains(from), "{from:?}");
        let e = err_of(&ok.replacen(from, to, 1)).to_string();
        assert!(e.starts_with(want), "got {e:?}, want {want:?}");
    }
}

/// `vtp` defaults by the grid's size and is refused on a 1-D scan.
#[test]
fn surface_vtp_is_written_for_small_grids_or_when_asked() {
    let spec = |x: usize, y: Option<usize>, extra: &str| {
        let y = y.map_or(String::new(), |n| {
            format!("y = {{ min = -1.0, max = 1.0, points = {n} }}\n")
        });
        SweepSpec::from_toml(&format!(
            "name = \"s\"\nkind = \"landscape\"\n[data]\npath = \"d.csv\"\n[landscape]\ncheckpoint = \"c\"\nx = {{ min = -1.0, max = 1.0, points = {x} }}\n{y}{extra}"
        ))
    };
    let l = |s: Result<SweepSpec, _>| s.unwrap().landscape.unwrap();
    assert!(l(spec(256, Some(256), "")).wants_vtp());
    assert!(!l(spec(257, Some(256), "")).wants_vtp());
    assert!(l(spec(1000, Some(1000), "vtp = true")).wants_vtp());
    assert!(!l(spec(51, Some(51), "vtp = false")).wants_vtp());
    assert!(!l(spec(51, None, "")).wants_vtp());
    let e = spec(51, None, "vtp = true").unwrap_err().to_string();
    assert!(
        e.contains("landscape.vtp: surface.vtp is a 2-D surface"),
        "{e}"
    );
}
