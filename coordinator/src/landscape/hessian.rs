//! The Hessian rounds of a scan: the vectors each round sends to the workers, and the
//! Lanczos step that turns the shards' products into the next round or `hessian.json`.

use std::path::Path;

use ridgeline_common::landscape::{HostTensor, ParamKind, param_kind};
use ridgeline_common::spec::SweepSpec;

use std::collections::BTreeMap;
use std::sync::Mutex;

use ridgeline_common::linalg::lanczos::{self, Krylov, Ritz};
use ridgeline_common::linalg::slq::{Slq, density};
use ridgeline_common::linalg::{dot, mean_and_se};
use serde_json::json;

use super::{MODEL_WEIGHTS, parameters};

/// Entries of the Hessian's vectors: every parameter but batch-norm statistics.
pub(super) fn hessian_size(params: &[HostTensor]) -> usize {
    params
        .iter()
        .filter(|t| param_kind(&t.name, &t.shape) != ParamKind::State)
        .map(|t| t.data.len())
        .sum()
}

/// The vectors of Hessian round `r`: `hessian_block_{r}.f64`, f64 little-endian,
/// one vector of `n` parameters after another.
pub fn block_file(r: usize) -> String {
    format!("hessian_block_{r}.f64")
}

/// Name of a Hessian unit's products inside its unit folder (same layout as a block).
pub const HVP_FILE: &str = "hvp.f64";
/// How the unit computed them (method; finite differences: steps and error estimates).
pub const HVP_INFO: &str = "hvp.json";

/// A unit's `hvp.json`, as the worker writes it.
mod hvp {
    #[derive(serde::Deserialize)]
    pub struct Info {
        pub method: String,
        #[serde(default)]
        pub steps: Vec<f64>,
        #[serde(default)]
        pub estimated_relative_errors: Vec<f64>,
        /// The Hessian's size, as an evaluator reports it.
        #[serde(default)]
        pub parameters: Option<usize>,
    }
}

fn write_vectors(path: &Path, v: &[Vec<f64>]) -> Result<(), String> {
    let bytes: Vec<u8> = v.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    crate::fsafe::write_atomic(path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    crate::telemetry::wrote(bytes.len() as u64);
    Ok(())
}

fn read_vectors(path: &Path, n: usize) -> Result<Vec<Vec<f64>>, String> {
    let b = crate::fsafe::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if n == 0 || b.len() % (8 * n) != 0 {
        return Err(format!(
            "{}: {} bytes is not a whole number of {n}-vectors",
            path.display(),
            b.len()
        ));
    }
    let flat: Vec<f64> = b
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    Ok(flat.chunks(n).map(<[f64]>::to_vec).collect())
}

/// Units released so far by a scan's Hessian rounds, from the block files on disk
/// (for a restarted coordinator); `None` when the scan has no Hessian.
pub fn released_units(sweep_dir: &Path, spec: &SweepSpec) -> Option<u32> {
    let l = spec.landscape.as_ref()?;
    let h = l.hessian.as_ref()?;
    let blocks = (0..h.max_rounds())
        .take_while(|r| sweep_dir.join(block_file(*r)).exists())
        .count();
    // No first block: the Hessian's working files went with the end of the sweep (it was
    // cancelled, and is now resumed): no round can run.
    Some((l.hessian_base() + blocks * h.shards) as u32)
}

/// The first round's vectors: an orthonormal random block for Lanczos, the trace
/// probes, and the density's start vectors.
pub(super) fn first_block(spec: &SweepSpec, n: usize) -> Option<Vec<Vec<f64>>> {
    Some(spec.landscape.as_ref()?.hessian.as_ref()?.first_vectors(n))
}

/// Where a scan's Hessian stands after some round. Rebuilt from the block and product
/// files when missing (a restarted coordinator), so that every round is a function of
/// the files on disk alone; kept in memory between rounds otherwise.
struct State {
    /// Entries of each vector (the Hessian's parameters).
    n: usize,
    /// The last round fed in.
    round: usize,
    krylov: Krylov,
    /// The next Lanczos block; empty once Lanczos has ended.
    next: Vec<Vec<f64>>,
    /// `zᵀ H z` for each trace probe.
    trace: Vec<f64>,
    slq: Option<Slq>,
    slq_next: Vec<Vec<f64>>,
    /// Finite-difference steps and error estimates reported by the workers.
    fd: (Vec<f64>, Vec<f64>),
    method: String,
    /// Whether the reported eigenvalues met the tolerance.
    converged: bool,
    ends: Option<(Vec<Ritz>, Ritz)>,
}

impl State {
    fn new(spec: &SweepSpec, n: usize) -> Option<Self> {
        let h = spec.landscape.as_ref()?.hessian.as_ref()?;
        let (slq, slq_next) = match &h.density {
            Some(d) => {
                let (s, v) = Slq::start(n, d.probes, d.steps, h.seed);
                (Some(s), v)
            }
            None => (None, Vec::new()),
        };
        Some(State {
            n,
            round: usize::MAX,
            krylov: Krylov::default(),
            next: lanczos::start_block(n, h.block, h.seed),
            trace: Vec::new(),
            slq,
            slq_next,
            fd: (Vec::new(), Vec::new()),
            method: String::new(),
            converged: false,
            ends: None,
        })
    }

    /// The vectors of the next round: Lanczos's block, then the density's.
    fn block(&self) -> Vec<Vec<f64>> {
        self.next.iter().chain(&self.slq_next).cloned().collect()
    }

    fn finished(&self) -> bool {
        self.next.is_empty() && self.slq.as_ref().is_none_or(Slq::finished)
    }
}

/// A round's vectors, their products summed over shards, and the shards' reports.
type Round = (Vec<Vec<f64>>, Vec<Vec<f64>>, Vec<hvp::Info>);

/// Sums round `r`'s products over the shards, with the workers' reports on them.
fn round_products(
    sweep_dir: &Path,
    spec: &SweepSpec,
    r: usize,
    n: usize,
    unit_dir: &impl Fn(u32) -> std::path::PathBuf,
) -> Result<Round, String> {
    let l = spec.landscape.as_ref().ok_or("not a landscape spec")?;
    let h = l.hessian.as_ref().ok_or("no [landscape.hessian]")?;
    let v = read_vectors(&sweep_dir.join(block_file(r)), n)?;
    let mut w = vec![vec![0.0; n]; v.len()];
    let mut infos = Vec::new();
    for s in 0..h.shards {
        let dir = unit_dir((l.hessian_base() + r * h.shards + s) as u32);
        let part = read_vectors(&dir.join(HVP_FILE), n)?;
        if part.len() != v.len() {
            return Err(format!(
                "shard {s} of round {r} returned {} products for {} vectors",
                part.len(),
                v.len()
            ));
        }
        for (acc, p) in w.iter_mut().zip(part) {
            acc.iter_mut().zip(p).for_each(|(a, b)| *a += b);
        }
        if let Ok(b) = crate::fsafe::read(dir.join(HVP_INFO)) {
            infos.push(serde_json::from_slice(&b).map_err(|e| format!("{HVP_INFO}: {e}"))?);
        }
    }
    Ok((v, w, infos))
}

/// Feeds round `r` into the state.
fn feed(
    st: &mut State,
    spec: &SweepSpec,
    r: usize,
    (mut v, mut w, infos): Round,
) -> Result<(), String> {
    let h = spec
        .landscape
        .as_ref()
        .and_then(|l| l.hessian.as_ref())
        .ok_or("no [landscape.hessian]")?;
    let m = st.next.len();
    let p = if r == 0 { h.probes } else { 0 };
    let s = st.slq_next.len();
    if v.len() != m + p + s {
        return Err(format!(
            "round {r} holds {} vectors, expected {m} + {p} + {s}",
            v.len()
        ));
    }
    let (slq_w, probe_w) = (w.split_off(m + p), w.split_off(m));
    let probe_v = v.split_off(m);
    v.truncate(m);
    st.trace
        .extend(probe_v.iter().zip(&probe_w).map(|(z, hz)| dot(z, hz)));
    for i in infos {
        st.method = i.method;
        st.fd.0.extend(i.steps);
        st.fd.1.extend(i.estimated_relative_errors);
    }
    if m > 0 {
        let next = st.krylov.extend(v, w);
        st.ends = st.krylov.ends(h.top_k);
        let (top, bottom) = st.ends.as_ref().expect("a block was added");
        let tol = h.tolerance * top[0].value.abs().max(bottom.value.abs());
        st.converged = top.len() == h.top_k.min(st.krylov.q.len())
            && top.iter().all(|t| t.residual <= tol)
            && (!h.bottom || bottom.residual <= tol);
        st.next = if st.converged || r + 1 >= h.rounds {
            Vec::new()
        } else {
            next
        };
    }
    if let Some(slq) = &mut st.slq
        && s > 0
    {
        st.slq_next = slq.extend(slq_w);
    }
    st.round = r;
    Ok(())
}

/// After Hessian round `round` of a scan: sums the shards' products, advances Lanczos
/// and the density runs, and writes the next round's vectors (returning the units it
/// releases), or, once everything has converged or run its course, `hessian.json`
/// and `esd.png` (returning `None`).
pub fn hessian_step(
    sweep_dir: &Path,
    spec: &SweepSpec,
    round: usize,
    unit_dir: impl Fn(u32) -> std::path::PathBuf,
) -> Result<Option<u32>, String> {
    static STATES: Mutex<BTreeMap<std::path::PathBuf, State>> = Mutex::new(BTreeMap::new());
    let l = spec.landscape.as_ref().ok_or("not a landscape spec")?;
    let h = l.hessian.as_ref().ok_or("no [landscape.hessian]")?;
    let cached = STATES
        .lock()
        .expect("hessian states")
        .remove(sweep_dir)
        .filter(|s| round > 0 && s.round == round - 1);
    let mut st = match cached {
        Some(s) => s,
        None => {
            // Replay the earlier rounds from disk.
            let n = hessian_parameters(sweep_dir, spec, &unit_dir)?;
            let mut s = State::new(spec, n).ok_or("no [landscape.hessian]")?;
            for r in 0..round {
                feed(
                    &mut s,
                    spec,
                    r,
                    round_products(sweep_dir, spec, r, n, &unit_dir)?,
                )?;
            }
            s
        }
    };
    let n = st.n;
    feed(
        &mut st,
        spec,
        round,
        round_products(sweep_dir, spec, round, n, &unit_dir)?,
    )?;
    if !st.finished() {
        write_vectors(&sweep_dir.join(block_file(round + 1)), &st.block())?;
        STATES
            .lock()
            .expect("hessian states")
            .insert(sweep_dir.to_owned(), st);
        return Ok(Some((l.hessian_base() + (round + 2) * h.shards) as u32));
    }
    write_results(sweep_dir, spec, &st, n)?;
    Ok(None)
}

/// Entries of a scan's Hessian vectors: from its checkpoint, or, for an evaluator scan
/// (whose model only its workers see), from the first round's reports. An evaluator
/// scan's first block is drawn by its workers from the seed (the coordinator leaves the
/// file empty until then): it is written here, the same vectors, so that every round
/// after is read from disk alike.
fn hessian_parameters(
    sweep_dir: &Path,
    spec: &SweepSpec,
    unit_dir: &impl Fn(u32) -> std::path::PathBuf,
) -> Result<usize, String> {
    let weights = sweep_dir.join(MODEL_WEIGHTS);
    if weights.exists() {
        let bytes = crate::fsafe::read(&weights).map_err(|e| e.to_string())?;
        return Ok(hessian_size(&parameters(&bytes)?));
    }
    let l = spec.landscape.as_ref().ok_or("not a landscape spec")?;
    let info = unit_dir(l.hessian_base() as u32).join(HVP_INFO);
    let bytes = crate::fsafe::read(&info).map_err(|e| format!("{}: {e}", info.display()))?;
    let n = serde_json::from_slice::<hvp::Info>(&bytes)
        .map_err(|e| format!("{HVP_INFO}: {e}"))?
        .parameters
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            format!("{HVP_INFO} of the first Hessian unit does not give the parameters")
        })?;
    let first = sweep_dir.join(block_file(0));
    if crate::fsafe::read(&first).is_ok_and(|b| b.is_empty()) {
        write_vectors(
            &first,
            &first_block(spec, n).ok_or("no [landscape.hessian]")?,
        )?;
    }
    Ok(n)
}

fn write_results(sweep_dir: &Path, spec: &SweepSpec, st: &State, n: usize) -> Result<(), String> {
    let l = spec.landscape.as_ref().ok_or("not a landscape spec")?;
    let h = l.hessian.as_ref().ok_or("no [landscape.hessian]")?;
    let (top, bottom) = st.ends.clone().ok_or("no Lanczos round completed")?;
    let tol = h.tolerance * top[0].value.abs().max(bottom.value.abs());
    let ritz = |r: &Ritz| json!({"value": r.value, "residual": r.residual, "converged": r.residual <= tol});
    let (trace, se) = mean_and_se(&st.trace);
    let rounds = st.round + 1;
    let vectors = st.krylov.q.len()
        + h.probes
        + h.density.as_ref().map_or(0, |_| {
            st.slq
                .as_ref()
                .map_or(0, |s| s.quadrature().iter().map(|q| q.nodes.len()).sum())
        });
    let hvp = if st.method == "finite_difference" {
        let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        let min = st.fd.0.iter().copied().fold(f64::INFINITY, f64::min);
        json!({
            "method": "finite_difference",
            "formula": "(∇L(θ + h v) − ∇L(θ − h v)) / 2h, h per vector from a ladder by the smallest estimated error",
            "step_min": min,
            "step_max": max(&st.fd.0),
            "estimated_relative_error_max": max(&st.fd.1),
        })
    } else {
        json!({"method": "exact", "formula": "double backward: ∇(∇L · v)"})
    };
    let mut json = json!({
        "top_eigenvalues": top.iter().map(ritz).collect::<Vec<_>>(),
        "lambda_min": ritz(&bottom),
        "lambda_min_note": "the smallest Ritz value: an upper bound on the smallest eigenvalue (interlacing), and within its residual of an eigenvalue; when converged, that eigenvalue is the smallest unless the start block missed its eigenvector",
        "trace": {"estimate": trace, "std_error": se, "probes": h.probes, "method": "Hutchinson, Rademacher probes"},
        "converged": st.converged,
        "tolerance": tol,
        "tolerance_relative": h.tolerance,
        "method": "block Lanczos with full reorthogonalisation over data shards, run until the top and bottom Ritz values' residuals are within tolerance",
        "hvp": hvp,
        "rounds": rounds,
        "krylov_dimension": st.krylov.q.len(),
        "hvps": vectors,
        "shard_hvps_total": vectors * h.shards,
        "shards": h.shards,
        "parameters": n,
    });
    if let (Some(d), Some(slq)) = (&h.density, &st.slq) {
        let quad = slq.quadrature();
        let (grid, rho, sigma) = density(&quad, d.sigma, 1000);
        // Σ τ θ over a run is its q₁ᵀ H q₁; n times its mean is a trace estimate.
        let per_run: Vec<f64> = quad
            .iter()
            .map(|q| {
                n as f64
                    * q.nodes
                        .iter()
                        .zip(&q.weights)
                        .map(|(t, w)| t * w)
                        .sum::<f64>()
            })
            .collect();
        let (tr, tr_se) = mean_and_se(&per_run);
        json["density"] = json!({
            "method": "stochastic Lanczos quadrature",
            "probes": d.probes,
            "steps": d.steps,
            "sigma": sigma,
            "eigenvalue": grid,
            "density": rho,
            "note": "density integrates to 1 over eigenvalue; multiply by parameters for counts",
            "runs": quad,
            "trace_estimate": {"estimate": tr, "std_error": tr_se},
        });
        crate::plot::esd(
            &sweep_dir.join("esd.png"),
            &format!(
                "{}: Hessian eigenvalue density (SLQ, {} runs × {} steps)",
                spec.name, d.probes, d.steps
            ),
            &grid,
            &rho,
        )?;
    }
    let p = sweep_dir.join("hessian.json");
    let bytes = serde_json::to_vec_pretty(&json).expect("json");
    crate::fsafe::write_atomic(&p, &bytes).map_err(|e| format!("{}: {e}", p.display()))?;
    crate::telemetry::wrote(bytes.len() as u64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ridgeline_common::linalg::{axpy, orthonormalise};
    use ridgeline_common::rng::Rng;

    /// A scan of `n` parameters whose Hessian rounds are answered in the test by a
    /// matrix with a known spectrum, split over two shards.
    fn scan_dir(n: usize) -> (tempfile::TempDir, SweepSpec) {
        let spec = SweepSpec::from_toml(
            r#"
name = "h"
kind = "landscape"
data = { path = "x.csv" }
[landscape]
checkpoint = "ckpt"
tile = 4
x = { min = 0.0, max = 1.0, points = 4 }
[landscape.hessian]
top_k = 2
block = 2
rounds = 60
probes = 8
shards = 2
tolerance = 1e-8
density = { probes = 3, steps = 10 }
"#,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        crate::fsafe::add_root(dir.path()).unwrap();
        let data: Vec<u8> = (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![n], &data).unwrap();
        let bytes = safetensors::serialize([("layers.0.weight", view)], None).unwrap();
        std::fs::write(dir.path().join(MODEL_WEIGHTS), bytes).unwrap();
        write_vectors(
            &dir.path().join(block_file(0)),
            &first_block(&spec, n).unwrap(),
        )
        .unwrap();
        (dir, spec)
    }

    /// Runs the rounds to the end, answering each from `h`; with `restart`, every round
    /// runs in a fresh copy of the folder, so the state is rebuilt from disk each time.
    fn run(
        dir: &Path,
        spec: &SweepSpec,
        h: &impl Fn(&[f64]) -> Vec<f64>,
        n: usize,
        restart: bool,
    ) -> (serde_json::Value, usize) {
        let mut here = dir.to_owned();
        let copies = tempfile::tempdir().unwrap();
        crate::fsafe::add_root(copies.path()).unwrap();
        for round in 0.. {
            let v = read_vectors(&here.join(block_file(round)), n).unwrap();
            for s in 0..2u32 {
                let unit = here.join(format!("u{}", 1 + 2 * round as u32 + s));
                std::fs::create_dir_all(&unit).unwrap();
                // Shard s holds a share of the data: its products sum to H v.
                let w = if s == 0 { 0.3 } else { 0.7 };
                let hv: Vec<Vec<f64>> = v
                    .iter()
                    .map(|x| h(x).into_iter().map(|y| w * y).collect())
                    .collect();
                write_vectors(&unit.join(HVP_FILE), &hv).unwrap();
            }
            if restart {
                let next = copies.path().join(format!("r{round}"));
                std::fs::create_dir_all(&next).unwrap();
                for e in std::fs::read_dir(&here).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        let d = next.join(p.file_name().unwrap());
                        std::fs::create_dir_all(&d).unwrap();
                        for f in std::fs::read_dir(&p).unwrap() {
                            let f = f.unwrap().path();
                            std::fs::copy(&f, d.join(f.file_name().unwrap())).unwrap();
                        }
                    } else {
                        std::fs::copy(&p, next.join(p.file_name().unwrap())).unwrap();
                    }
                }
                here = next;
            }
            let at = here.clone();
            if hessian_step(&here, spec, round, |t| at.join(format!("u{t}")))
                .unwrap()
                .is_none()
            {
                let j = std::fs::read(here.join("hessian.json")).unwrap();
                assert!(here.join("esd.png").exists());
                return (serde_json::from_slice(&j).unwrap(), round + 1);
            }
        }
        unreachable!()
    }

    /// Both ends of a known spectrum converge to the tolerance, Lanczos stops before its
    /// round limit, the density runs take their 10 steps, and a coordinator that
    /// rebuilds its state from disk before every round writes the same hessian.json.
    #[test]
    fn rounds_converge_and_a_rebuilt_state_gives_the_same_results() {
        let n = 40;
        let lambdas: Vec<f64> = (0..n)
            .map(|i| match i {
                0 => 9.0,
                1 => 6.0,
                2 => -1.5,
                _ => (i as f64 - 20.0) * 0.05,
            })
            .collect();
        let mut r = Rng::new(3);
        let q = orthonormalise(
            &[],
            (0..n)
                .map(|_| (0..n).map(|_| r.normal()).collect())
                .collect(),
        );
        let h = |v: &[f64]| {
            let mut out = vec![0.0; n];
            for (k, l) in lambdas.iter().enumerate() {
                axpy(&mut out, l * dot(&q[k], v), &q[k]);
            }
            out
        };
        let (a, spec) = scan_dir(n);
        let (ja, rounds) = run(a.path(), &spec, &h, n, false);
        let (b, _) = scan_dir(n);
        let (jb, rounds_b) = run(b.path(), &spec, &h, n, true);
        assert_eq!(ja, jb);
        assert_eq!(rounds, rounds_b);
        assert_eq!(ja["converged"], true);
        // 40 dimensions, two per round: Lanczos cannot need more than 20 rounds, and
        // the density's ten steps set the number of rounds.
        assert_eq!(
            rounds,
            10.max(ja["krylov_dimension"].as_u64().unwrap() as usize / 2)
        );
        for (t, want) in ja["top_eigenvalues"]
            .as_array()
            .unwrap()
            .iter()
            .zip([9.0, 6.0])
        {
            assert!((t["value"].as_f64().unwrap() - want).abs() < 1e-7, "{t}");
        }
        assert!((ja["lambda_min"]["value"].as_f64().unwrap() + 1.5).abs() < 1e-7);
        assert_eq!(ja["density"]["runs"].as_array().unwrap().len(), 3);
        assert_eq!(ja["hvp"]["method"], "exact");
    }
}
