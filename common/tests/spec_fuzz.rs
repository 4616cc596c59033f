//! The spec parsers never panic, whatever they are given: arbitrary text, and mutations
//! of a valid spec (which exercise the validation paths far more than random text).

use proptest::prelude::*;
use ridgeline_common::spec::SweepSpec;

const VALID: &str = r#"
name = "f"
kind = "landscape"
[data]
path = "d.csv"
task = "regression"
target_columns = 1
val_fraction = 0.25
[landscape]
checkpoint = "c"
loss = "mse"
tile = 4
x = { min = -1.0, max = 1.0, points = 7 }
y = { min = -0.5, max = 1.5, points = 4 }
directions = { type = "target", to = "a", y_to = "b" }
[landscape.hessian]
top_k = 2
block = 3
"#;

const SEARCH: &str = r#"
name = "s"
[data]
path = "d.csv"
[train]
epochs = 3
[search]
algorithm = "random"
num_samples = 5
[search.space]
lr = { type = "loguniform", low = 1e-4, high = 1e-1 }
width = { type = "grid", values = [16, 32] }
depth = { type = "int", low = 0, high = 3 }
activation = { type = "choice", values = ["relu", "tanh"] }
"#;

fn mutate(base: &str, edits: &[(usize, u8)]) -> String {
    let mut b = base.as_bytes().to_vec();
    for (pos, byte) in edits {
        let i = pos % b.len();
        // Mostly characters that matter to TOML and to numbers.
        let alphabet = b" =[]{}\",.-+0123456789eE_abxyzn\n#'";
        b[i] = alphabet[*byte as usize % alphabet.len()];
    }
    String::from_utf8_lossy(&b).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(s in ".{0,400}") {
        let _ = SweepSpec::from_toml(&s);
        let _ = SweepSpec::from_yaml(&s);
        let _ = SweepSpec::from_json(&s);
    }

    #[test]
    fn mutated_specs_never_panic(edits in proptest::collection::vec((0usize..2000, any::<u8>()), 1..6)) {
        for base in [VALID, SEARCH] {
            let text = mutate(base, &edits);
            if let Ok(spec) = SweepSpec::from_toml(&text) {
                // Whatever parses must be usable without panicking.
                let _ = spec.total_units();
                let _ = spec.grid().len();
                if let Some(l) = &spec.landscape {
                    for i in 0..l.units().min(50) {
                        let _ = l.unit(i);
                    }
                    let _ = l.point(l.points().saturating_sub(1));
                }
                prop_assert_eq!(SweepSpec::from_json(&spec.to_json()).ok(), Some(spec));
            }
        }
    }
}

#[test]
fn the_bases_are_valid() {
    SweepSpec::from_toml(VALID).unwrap();
    SweepSpec::from_toml(SEARCH).unwrap();
}
