//! The optimizers of the built-in trainer.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
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
            // Detached: with CANDLE_GRAD_DO_NOT_DETACH (set for exact Hessian products)
            // gradients keep their graph, and a velocity built from them would hold every
            // step's graph before it: memory without end, and a stack overflow on drop.
            if self.momentum != 0.0 {
                *v = Some(step.detach());
            }
        }
        Ok(())
    }
}

/// AdamW (Loshchilov & Hutter), step for step as candle-nn's (same operations in the
/// same order, so the same bits), with its moments and step count open to checkpoints:
/// a PBT round resumes the optimizer where its parent left it.
pub struct Adamw {
    vars: Vec<Var>,
    first: Vec<Tensor>,
    second: Vec<Tensor>,
    steps: usize,
    lr: f64,
    weight_decay: f64,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

impl Adamw {
    /// A new optimizer over `vars`, moments at zero.
    pub fn new(vars: Vec<Var>, lr: f64, weight_decay: f64) -> candle_core::Result<Self> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        Ok(Adamw {
            first: vars.iter().map(zeros).collect::<candle_core::Result<_>>()?,
            second: vars.iter().map(zeros).collect::<candle_core::Result<_>>()?,
            vars,
            steps: 0,
            lr,
            weight_decay,
        })
    }

    /// One update from gradients.
    pub fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        let (scale_m, scale_v) = (1.0 / (1.0 - BETA1.powi(t)), 1.0 / (1.0 - BETA2.powi(t)));
        for ((theta, m), v) in self.vars.iter().zip(&mut self.first).zip(&mut self.second) {
            let Some(g) = grads.get(theta) else { continue };
            let c = Coefficients {
                scale_m,
                scale_v,
                decay: 1.0 - self.lr * self.weight_decay,
                lr: self.lr,
            };
            if let Some((theta2, m2, v2)) = fused_adamw(theta.as_tensor(), g, m, v, &c)? {
                theta.set(&theta2)?;
                (*m, *v) = (m2, v2);
                continue;
            }
            let next_m = ((&*m * BETA1)? + (g * (1.0 - BETA1))?)?;
            let next_v = ((&*v * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
            let m_hat = (&next_m * scale_m)?;
            let v_hat = (&next_v * scale_v)?;
            let decayed = (theta.as_tensor() * (1.0 - self.lr * self.weight_decay))?;
            let adjusted = (m_hat / (v_hat.sqrt()? + EPS)?)?;
            theta.set(&(decayed - (adjusted * self.lr)?)?)?;
            // Detached, as SGD's velocity (see there).
            *m = next_m.detach();
            *v = next_v.detach();
        }
        Ok(())
    }
}

/// The scalars of one AdamW step.
struct Coefficients {
    scale_m: f64,
    scale_v: f64,
    decay: f64,
    lr: f64,
}

/// One AdamW step of an f32 tensor on the CPU in one pass: θ, m and v are each read and
/// written once, where the tensor ops below make 14 passes and allocations (perf showed
/// the optimizer's elementwise ops as a tenth of a training epoch). Every value goes
/// through the same f32 operations in the same order as those ops (candle's `x * s` is
/// `x * s + 0`, its `x + s` is `x * 1 + s`), so the result is the same to the bit
/// (`adamw_is_candles_bit_for_bit`). `None` for other dtypes, devices and layouts.
#[allow(clippy::type_complexity)]
fn fused_adamw(
    theta: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    c: &Coefficients,
) -> candle_core::Result<Option<(Tensor, Tensor, Tensor)>> {
    use candle_core::{Device, Storage};
    use rayon::prelude::*;
    let tensors = [theta, g, m, v];
    let fast = tensors
        .iter()
        .all(|t| t.dtype() == DType::F32 && matches!(t.device(), Device::Cpu) && t.is_contiguous())
        && tensors.iter().all(|t| t.shape() == theta.shape());
    if !fast {
        return Ok(None);
    }
    let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices: Vec<&[f32]> = Vec::with_capacity(4);
    for (t, (storage, layout)) in tensors.iter().zip(&guards) {
        let Storage::Cpu(cpu) = &**storage else {
            return Ok(None);
        };
        let all = cpu.as_slice::<f32>()?;
        slices.push(&all[layout.start_offset()..layout.start_offset() + t.elem_count()]);
    }
    let (th, gs, ms, vs) = (slices[0], slices[1], slices[2], slices[3]);
    let f = |x: f64| x as f32;
    let (b1, one_b1, b2, one_b2) = (f(BETA1), f(1.0 - BETA1), f(BETA2), f(1.0 - BETA2));
    let (sm, sv, decay, lr, eps) = (f(c.scale_m), f(c.scale_v), f(c.decay), f(c.lr), f(EPS));
    let n = th.len();
    let (mut t2, mut m2, mut v2) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    const GRAIN: usize = 8192;
    t2.par_chunks_mut(GRAIN)
        .zip(m2.par_chunks_mut(GRAIN))
        .zip(v2.par_chunks_mut(GRAIN))
        .enumerate()
        .for_each(|(blk, ((to, mo), vo))| {
            let at = blk * GRAIN;
            for i in 0..to.len() {
                let (x, gr) = (th[at + i], gs[at + i]);
                let next_m = (ms[at + i] * b1 + 0.0) + (gr * one_b1 + 0.0);
                let next_v = (vs[at + i] * b2 + 0.0) + ((gr * gr) * one_b2 + 0.0);
                let m_hat = next_m * sm + 0.0;
                let v_hat = next_v * sv + 0.0;
                let decayed = x * decay + 0.0;
                let adjusted = m_hat / (v_hat.sqrt() * 1.0 + eps);
                to[i] = decayed - (adjusted * lr + 0.0);
                mo[i] = next_m;
                vo[i] = next_v;
            }
        });
    drop(guards);
    let shape = theta.shape();
    let dev = theta.device();
    Ok(Some((
        Tensor::from_vec(t2, shape, dev)?,
        Tensor::from_vec(m2, shape, dev)?,
        Tensor::from_vec(v2, shape, dev)?,
    )))
}

enum Rule {
    Adamw(Adamw),
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
            Optimizer::Adamw => Rule::Adamw(Adamw::new(vars.clone(), t.lr, t.weight_decay)?),
            Optimizer::Sgd => Rule::Sgd(Sgd::new(vars.clone(), t.lr, t.momentum, t.weight_decay)),
        };
        Ok(Optim { rule, vars })
    }

    pub(super) fn set_lr(&mut self, lr: f64) {
        match &mut self.rule {
            Rule::Adamw(o) => o.lr = lr,
            Rule::Sgd(o) => o.lr = lr,
        }
    }

    /// The optimizer's state, its tensors named after the variables' `names` (in the
    /// order the optimizer was given them): AdamW's moments `adamw.m.NAME`,
    /// `adamw.v.NAME` and step count; SGD's velocities `sgd.velocity.NAME` (none before
    /// the first step, or without momentum).
    pub(super) fn state(&self, names: &[String]) -> (Vec<(String, Tensor)>, usize) {
        match &self.rule {
            Rule::Adamw(o) => {
                let m = names
                    .iter()
                    .zip(&o.first)
                    .map(|(n, t)| (format!("adamw.m.{n}"), t.clone()));
                let v = names
                    .iter()
                    .zip(&o.second)
                    .map(|(n, t)| (format!("adamw.v.{n}"), t.clone()));
                (m.chain(v).collect(), o.steps)
            }
            Rule::Sgd(o) => (
                names
                    .iter()
                    .zip(&o.velocity)
                    .filter_map(|(n, v)| {
                        v.as_ref().map(|v| (format!("sgd.velocity.{n}"), v.clone()))
                    })
                    .collect(),
                0,
            ),
        }
    }

    /// Takes up the state [`Optim::state`] gave (names and shapes checked: a missing
    /// AdamW moment or a misshapen tensor is an error naming it).
    pub(super) fn restore(
        &mut self,
        names: &[String],
        tensors: &std::collections::HashMap<String, Tensor>,
        steps: usize,
    ) -> Result<(), String> {
        let take = |key: String, like: &Var| -> Result<Option<Tensor>, String> {
            let Some(t) = tensors.get(&key) else {
                return Ok(None);
            };
            if t.dims() != like.dims() {
                return Err(format!(
                    "{key}: expected shape {:?}, found {:?}",
                    like.dims(),
                    t.dims()
                ));
            }
            t.to_dtype(like.dtype())
                .and_then(|t| t.to_device(like.device()))
                .map(Some)
                .map_err(|e| format!("{key}: {e}"))
        };
        match &mut self.rule {
            Rule::Adamw(o) => {
                for (i, (n, var)) in names.iter().zip(&o.vars).enumerate() {
                    let need =
                        |k: String| take(k.clone(), var)?.ok_or(format!("missing tensor {k}"));
                    o.first[i] = need(format!("adamw.m.{n}"))?;
                    o.second[i] = need(format!("adamw.v.{n}"))?;
                }
                o.steps = steps;
            }
            Rule::Sgd(o) => {
                for (i, (n, var)) in names.iter().zip(&o.vars).enumerate() {
                    o.velocity[i] = take(format!("sgd.velocity.{n}"), var)?;
                }
            }
        }
        Ok(())
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

    /// A trial's settings with this optimizer (momentum 0.9 for SGD).
    fn config(opt: Optimizer) -> TrialConfig {
        let mut cfg = TrialConfig {
            model: Default::default(),
            train: Default::default(),
            context: 1,
        };
        cfg.train.optimizer = opt;
        cfg.train.momentum = 0.9;
        cfg
    }

    /// loss = Σ w·θ² (a quadratic with a different curvature per element), in f32.
    fn quadratic(v: &Var) -> Tensor {
        let w = Tensor::new(&[0.5f32, 2.0, -0.25, 1.0], &Device::Cpu).unwrap();
        (v.as_tensor().sqr().unwrap() * w)
            .unwrap()
            .sum_all()
            .unwrap()
    }

    fn var() -> Var {
        Var::from_tensor(&Tensor::new(&[1.0f32, -2.0, 0.5, 3.0], &Device::Cpu).unwrap()).unwrap()
    }

    #[test]
    fn adamw_is_candles_bit_for_bit() {
        use candle_nn::optim::{AdamW, Optimizer as _, ParamsAdamW};
        let (a, b) = (var(), var());
        let mut ours = Adamw::new(vec![a.clone()], 0.1, 0.05).unwrap();
        let p = ParamsAdamW {
            lr: 0.1,
            weight_decay: 0.05,
            ..ParamsAdamW::default()
        };
        let mut theirs = AdamW::new(vec![b.clone()], p).unwrap();
        for step in 0..25 {
            // A schedule, as the trainer sets one.
            let lr = 0.1 / (1.0 + step as f64);
            ours.lr = lr;
            theirs.set_learning_rate(lr);
            ours.step(&quadratic(&a).backward().unwrap()).unwrap();
            theirs.step(&quadratic(&b).backward().unwrap()).unwrap();
        }
        let (x, y) = (
            a.as_tensor().to_vec1::<f32>().unwrap(),
            b.as_tensor().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(
            x.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_ne!(x, var().as_tensor().to_vec1::<f32>().unwrap());
    }

    /// Ten steps straight, or five, the state saved and restored into a new optimizer,
    /// and five more: the same bits, for both rules.
    #[test]
    fn a_restored_optimizer_continues_exactly() {
        for opt in [Optimizer::Adamw, Optimizer::Sgd] {
            let mut cfg = config(opt);
            cfg.train.lr = 0.05;
            let names = vec!["theta".to_owned()];
            let straight = var();
            let mut o = Optim::new(vec![straight.clone()], &cfg).unwrap();
            for _ in 0..10 {
                o.backward_step(&quadratic(&straight), 0.0, None).unwrap();
            }
            let resumed = var();
            let mut first = Optim::new(vec![resumed.clone()], &cfg).unwrap();
            for _ in 0..5 {
                first
                    .backward_step(&quadratic(&resumed), 0.0, None)
                    .unwrap();
            }
            let (tensors, steps) = first.state(&names);
            assert_eq!(steps, if opt == Optimizer::Adamw { 5 } else { 0 });
            let saved: std::collections::HashMap<_, _> = tensors.into_iter().collect();
            let mut second = Optim::new(vec![resumed.clone()], &cfg).unwrap();
            second.restore(&names, &saved, steps).unwrap();
            for _ in 0..5 {
                second
                    .backward_step(&quadratic(&resumed), 0.0, None)
                    .unwrap();
            }
            assert_eq!(
                straight.as_tensor().to_vec1::<f32>().unwrap(),
                resumed.as_tensor().to_vec1::<f32>().unwrap(),
                "{opt:?}"
            );
            // Without the state, the continuation differs (the test can fail).
            let fresh = var();
            let mut f = Optim::new(vec![fresh.clone()], &cfg).unwrap();
            for _ in 0..5 {
                f.backward_step(&quadratic(&fresh), 0.0, None).unwrap();
            }
            let mut g = Optim::new(vec![fresh.clone()], &cfg).unwrap();
            for _ in 0..5 {
                g.backward_step(&quadratic(&fresh), 0.0, None).unwrap();
            }
            assert_ne!(
                straight.as_tensor().to_vec1::<f32>().unwrap(),
                fresh.as_tensor().to_vec1::<f32>().unwrap()
            );
        }
    }

    #[test]
    fn a_misshapen_or_missing_moment_is_refused_by_name() {
        let cfg = TrialConfig {
            model: Default::default(),
            train: Default::default(),
            context: 1,
        };
        let names = vec!["theta".to_owned()];
        let mut o = Optim::new(vec![var()], &cfg).unwrap();
        let err = o.restore(&names, &Default::default(), 3).unwrap_err();
        assert!(err.contains("adamw.m.theta"), "{err}");
        let bad: std::collections::HashMap<_, _> = ["adamw.m.theta", "adamw.v.theta"]
            .iter()
            .map(|k| {
                (
                    k.to_string(),
                    Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
                )
            })
            .collect();
        let err = o.restore(&names, &bad, 3).unwrap_err();
        assert!(err.contains("expected shape [4]"), "{err}");
    }

    /// The binary sets CANDLE_GRAD_DO_NOT_DETACH (exact Hessian products), so gradients
    /// keep their graph; the optimizers' state must not (a 600-epoch trial overflowed
    /// its stack dropping the chain of every step's graph).
    #[test]
    fn optimizer_state_holds_no_graph_when_gradients_keep_theirs() {
        // SAFETY: the variable is only ever set to this value, by this test and by the
        // binary's main before any thread starts; candle reads it once per thread.
        unsafe { std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1") };
        std::thread::spawn(|| {
            for opt in [Optimizer::Adamw, Optimizer::Sgd] {
                let cfg = config(opt);
                let v = var();
                let g = quadratic(&v).backward().unwrap();
                assert!(
                    g.get(&v).unwrap().track_op(),
                    "the gradient keeps its graph here"
                );
                let mut o = Optim::new(vec![v.clone()], &cfg).unwrap();
                for _ in 0..3 {
                    o.backward_step(&quadratic(&v), 0.0, None).unwrap();
                }
                let (state, _) = o.state(&["theta".to_owned()]);
                assert!(!state.is_empty());
                assert!(state.iter().all(|(_, t)| !t.track_op()), "{opt:?}");
            }
        })
        .join()
        .unwrap();
    }
}
