//! Checks of a `[landscape]` section; errors name the field.

use super::*;

impl LandscapeSpec {
    /// Checks ranges; errors name the field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let axis = |name: &str, a: &Axis| -> Result<(), (String, String)> {
            if a.points == 0 || a.points > 100_000 {
                return Err((
                    format!("landscape.{name}.points"),
                    format!("expected 1 to 100000, got {}", a.points),
                ));
            }
            if !(a.min.is_finite() && a.max.is_finite()) || (a.points > 1 && a.min >= a.max) {
                return Err((
                    format!("landscape.{name}"),
                    format!(
                        "expected finite min < max, got min={}, max={}",
                        a.min, a.max
                    ),
                ));
            }
            Ok(())
        };
        axis("x", &self.x_axis())?;
        let d = &self.directions;
        match d.kind {
            DirectionKind::Target if d.to.is_none() => {
                return Err((
                    "landscape.directions.to".into(),
                    "type = \"target\" needs the checkpoint that x points to".into(),
                ));
            }
            DirectionKind::Target if self.y.is_some() != d.y_to.is_some() => {
                return Err((
                    "landscape.directions.y_to".into(),
                    "a 2-D target scan needs y_to (and a 1-D one must not have it)".into(),
                ));
            }
            DirectionKind::Pca if d.trajectory.is_none() => {
                return Err((
                    "landscape.directions.trajectory".into(),
                    "type = \"pca\" needs the trial whose checkpoints form the trajectory".into(),
                ));
            }
            DirectionKind::File if d.file.is_none() => {
                return Err((
                    "landscape.directions.file".into(),
                    "type = \"file\" needs a safetensors file".into(),
                ));
            }
            _ => {}
        }
        if let Some(y) = &self.y {
            axis("y", y)?;
        }
        if self.tile == 0 {
            return Err((
                "landscape.tile".into(),
                "expected at least 1 point per tile".into(),
            ));
        }
        if self.vtp == Some(true) && self.y.is_none() {
            return Err((
                "landscape.vtp".into(),
                "surface.vtp is a 2-D surface; this scan has no y axis".into(),
            ));
        }
        if self.batch_size == 0 {
            return Err(("landscape.batch_size".into(), "expected at least 1".into()));
        }
        if self.samples == Some(0) {
            return Err(("landscape.samples".into(), "expected at least 1".into()));
        }
        if self.tokens == Some(0) {
            return Err(("landscape.tokens".into(), "expected at least 1".into()));
        }
        if let Some(h) = &self.hessian {
            let bad = |f: &str, r: String| Err((format!("landscape.hessian.{f}"), r));
            if h.top_k == 0 || h.block < h.top_k {
                return bad(
                    "block",
                    format!(
                        "expected top_k >= 1 and block >= top_k, got top_k={}, block={}",
                        h.top_k, h.block
                    ),
                );
            }
            if h.rounds == 0 || h.shards == 0 {
                return bad("rounds", "expected at least one round and one shard".into());
            }
            if !(h.epsilon > 0.0 && h.epsilon < 1.0) {
                return bad(
                    "epsilon",
                    format!("expected a number in (0, 1), got {}", h.epsilon),
                );
            }
            if !(h.tolerance > 0.0 && h.tolerance < 1.0) {
                return bad(
                    "tolerance",
                    format!("expected a number in (0, 1), got {}", h.tolerance),
                );
            }
            if let Some(d) = &h.density {
                if d.probes == 0 || d.steps < 2 {
                    return bad(
                        "density",
                        format!(
                            "expected probes >= 1 and steps >= 2, got probes={}, steps={}",
                            d.probes, d.steps
                        ),
                    );
                }
                if !(d.sigma > 0.0 && d.sigma < 1.0) {
                    return bad(
                        "density.sigma",
                        format!("expected a number in (0, 1), got {}", d.sigma),
                    );
                }
            }
        }
        if let Some(c) = &self.curvature {
            if c.points < 2 || c.steps < 2 || c.probes < 2 {
                return Err((
                    "landscape.curvature".into(),
                    format!(
                        "expected points, steps and probes >= 2, got points={}, steps={}, probes={}",
                        c.points, c.steps, c.probes
                    ),
                ));
            }
        }
        if let Some(c) = &self.curve {
            let bad = |f: &str, r: String| Err((format!("landscape.curve.{f}"), r));
            if self.directions.kind != DirectionKind::Target || self.y.is_some() {
                return Err((
                    "landscape.curve".into(),
                    "a curve connects two checkpoints: it needs a 1-D scan with directions.type = \"target\"".into(),
                ));
            }
            if c.epochs == 0 || c.batch_size == 0 {
                return bad("epochs", "expected epochs >= 1 and batch_size >= 1".into());
            }
            if c.points < 3 {
                return bad("points", format!("expected at least 3, got {}", c.points));
            }
            if !(c.lr > 0.0 && c.lr.is_finite()) {
                return bad("lr", format!("expected a number > 0, got {}", c.lr));
            }
        }
        if let Some(e) = &self.evaluator {
            return self.validate_evaluator(e);
        }
        if self.checkpoint.is_none() && self.train.is_none() {
            return Err((
                "landscape.checkpoint".into(),
                "expected a checkpoint folder, `sweep:ID/best`, or `train = \"search spec\"`"
                    .into(),
            ));
        }
        Ok(())
    }

    /// What an evaluator scan takes: random directions over a grid, on the evaluator's
    /// own model and data.
    fn validate_evaluator(&self, e: &EvaluatorSpec) -> Result<(), (String, String)> {
        let bad = |f: &str, r: &str| Err((format!("landscape.{f}"), r.to_owned()));
        let (module, attr) = e.python.split_once(':').unwrap_or(("", ""));
        if module.is_empty() || attr.is_empty() || e.python.contains('\0') {
            return bad(
                "evaluator.python",
                "expected \"package.module:function\" or \"file.py:function\"",
            );
        }
        if !(e.timeout.is_finite() && e.timeout > 0.0) {
            return bad("evaluator.timeout", "expected seconds > 0");
        }
        if !(1..=4096).contains(&e.points_per_pass) {
            return bad("evaluator.points_per_pass", "expected 1 to 4096");
        }
        if self.checkpoint.is_some() || self.train.is_some() {
            return bad(
                "evaluator",
                "an evaluator brings its own model: give it, or a checkpoint (or train), not both",
            );
        }
        if self.directions.kind == DirectionKind::Pca {
            return bad(
                "directions.type",
                "PCA directions come from a Ridgeline training trajectory: an evaluator scan takes random, target or file directions",
            );
        }
        if self.curve.is_some() {
            return bad(
                "curve",
                "a connecting curve is trained by the built-in models only: scan a checkpoint for it",
            );
        }
        if let Some(h) = &self.hessian
            && h.method != HvpMethod::Exact
        {
            return bad(
                "hessian.method",
                "an evaluator computes exact products (double backward): leave method out",
            );
        }
        if self.split != Split::Train || self.samples.is_some() || self.tokens.is_some() {
            return bad(
                "split",
                "an evaluator evaluates the data its function returns: leave split, samples and tokens out",
            );
        }
        Ok(())
    }
}
