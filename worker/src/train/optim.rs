//! The optimizers of the built-in trainer.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer as _, ParamsAdamW};
use ridgeline_common::spec::{Optimizer, TrialConfig};

use crate::subspace::Subspace;

/// Stochastic gradient descent with heavy-ball momentum and L2 weight decay, as in
/// PyTorch: `v = μ v + (g + λ θ)`, `θ = θ - η v`. (candle-nn's SGD has neither.)
pub struct Sgd {
    vars: Vec<Var>,
    velocity: Vec<Option<Tensor>>,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
}

impl Sgd {
    /// A new optimizer over `vars`.
    pub fn new(vars: Vec<Var>, lr: f64, momentum: f64, weight_decay: f64) -> Self {
        let velocity = vec![None; vars.len()];
        Sgd {
            vars,
            velocity,
            lr,
            momentum,
            weight_decay,
        }
    }

    /// One update from gradients.
    pub fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        for (var, v) in self.vars.iter().zip(self.velocity.iter_mut()) {
            let Some(g) = grads.get(var) else { continue };
            let mut g = g.clone();
            if self.weight_decay != 0.0 {
                g = (g + (var.as_tensor() * self.weight_decay)?)?;
            }
            let step = match v.take() {
                Some(prev) if self.momentum != 0.0 => ((prev * self.momentum)? + g)?,
                _ => g,
            };
            var.set(&(var.as_tensor() - (&step * self.lr)?)?)?;
            if self.momentum != 0.0 {
                *v = Some(step);
            }
        }
        Ok(())
    }
}

enum Rule {
    Adamw(AdamW),
    Sgd(Sgd),
}

pub(super) struct Optim {
    rule: Rule,
    vars: Vec<Var>,
}

impl Optim {
    pub(super) fn new(vars: Vec<Var>, c: &TrialConfig) -> candle_core::Result<Self> {
        let t = &c.train;
        let rule = match t.optimizer {
            Optimizer::Adamw => Rule::Adamw(AdamW::new(
                vars.clone(),
                ParamsAdamW {
                    lr: t.lr,
                    weight_decay: t.weight_decay,
                    ..ParamsAdamW::default()
                },
            )?),
            Optimizer::Sgd => Rule::Sgd(Sgd::new(vars.clone(), t.lr, t.momentum, t.weight_decay)),
        };
        Ok(Optim { rule, vars })
    }

    pub(super) fn set_lr(&mut self, lr: f64) {
        match &mut self.rule {
            Rule::Adamw(o) => o.set_learning_rate(lr),
            Rule::Sgd(o) => o.lr = lr,
        }
    }

    /// Backward, clipping of the gradients' global norm to `clip` (when > 0), update.
    /// In a subspace, the model's gradients are pulled back to ψ first.
    pub(super) fn backward_step(
        &mut self,
        loss: &Tensor,
        clip: f64,
        sub: Option<(&Subspace, &[Var])>,
    ) -> candle_core::Result<()> {
        let mut grads = loss.backward()?;
        if let Some((s, vars)) = sub {
            grads = s.pullback(&grads, vars)?;
        }
        let vars = &self.vars;
        if clip > 0.0 {
            let mut sq = 0f64;
            for v in vars {
                if let Some(g) = grads.get(v) {
                    sq += g
                        .to_dtype(DType::F64)?
                        .sqr()?
                        .sum_all()?
                        .to_scalar::<f64>()?;
                }
            }
            let norm = sq.sqrt();
            if norm > clip {
                for v in vars {
                    if let Some(g) = grads.remove(v) {
                        grads.insert(v, (g * (clip / norm))?);
                    }
                }
            }
        }
        match &mut self.rule {
            Rule::Adamw(o) => o.step(&grads),
            Rule::Sgd(o) => o.step(&grads),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn sgd_step_matches_the_formula() {
        let v = Var::from_tensor(&Tensor::new(&[1.0f64, -2.0], &Device::Cpu).unwrap()).unwrap();
        let mut o = Sgd::new(vec![v.clone()], 0.1, 0.9, 0.5);
        // loss = sum(θ²)/2 has gradient θ.
        for _ in 0..2 {
            let loss = (v.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
            o.step(&loss.backward().unwrap()).unwrap();
        }
        // By hand: g1 = θ0 (1 + λ) = 1.5 θ0; v1 = g1; θ1 = θ0 - 0.1 v1 = 0.85 θ0.
        // g2 = 1.5 θ1 = 1.275 θ0; v2 = 0.9 v1 + g2 = 2.625 θ0; θ2 = θ1 - 0.2625 θ0 = 0.5875 θ0.
        let got = v.as_tensor().to_vec1::<f64>().unwrap();
        assert!(
            (got[0] - 0.5875).abs() < 1e-12 && (got[1] + 1.175).abs() < 1e-12,
            "{got:?}"
        );
    }
}
