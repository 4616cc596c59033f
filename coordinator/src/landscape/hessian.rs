//! The Hessian rounds of a scan: the vectors each round sends to the workers, and the
//! Lanczos step that turns the shards' products into the next round or `hessian.json`.

use std::path::Path;

use ridgeline_common::landscape::{HostTensor, ParamKind, param_kind};
use ridgeline_common::spec::SweepSpec;

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

fn write_vectors(path: &Path, v: &[Vec<f64>]) -> Result<(), String> {
    let bytes: Vec<u8> = v.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    crate::telemetry::wrote(bytes.len() as u64);
    Ok(())
}

fn read_vectors(path: &Path, n: usize) -> Result<Vec<Vec<f64>>, String> {
    let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
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
    let blocks = (0..h.rounds)
        .take_while(|r| sweep_dir.join(block_file(*r)).exists())
        .count();
    Some((l.tiles() + blocks.max(1) * h.shards) as u32)
}

/// The first round's vectors: an orthonormal random block and the trace probes.
pub(super) fn first_block(spec: &SweepSpec, n: usize) -> Option<Vec<Vec<f64>>> {
    let h = spec.landscape.as_ref()?.hessian.as_ref()?;
    let mut v = ridgeline_common::linalg::lanczos::start_block(n, h.block, h.seed);
    v.extend(ridgeline_common::linalg::lanczos::probes(
        n, h.probes, h.seed,
    ));
    Some(v)
}

/// After Hessian round `round` of a scan: sums the shards' products, extends the Krylov
/// basis, and writes the next block (returning the units it releases), or, after the
/// last round or on convergence, `hessian.json` (returning `None`). Everything is read
/// from disk, so a restarted coordinator continues where it stopped.
pub fn hessian_step(
    sweep_dir: &Path,
    spec: &SweepSpec,
    round: usize,
    unit_dir: impl Fn(u32) -> std::path::PathBuf,
) -> Result<Option<u32>, String> {
    let l = spec.landscape.as_ref().ok_or("not a landscape spec")?;
    let h = l.hessian.as_ref().ok_or("no [landscape.hessian]")?;
    let n = hessian_size(&parameters(
        &std::fs::read(sweep_dir.join(MODEL_WEIGHTS)).map_err(|e| e.to_string())?,
    )?);
    let mut k = ridgeline_common::linalg::lanczos::Krylov::default();
    let mut next = Vec::new();
    let mut probes = (Vec::new(), Vec::new());
    for r in 0..=round {
        let mut v = read_vectors(&sweep_dir.join(block_file(r)), n)?;
        let mut w = vec![vec![0.0; n]; v.len()];
        for s in 0..h.shards {
            let unit = (l.tiles() + r * h.shards + s) as u32;
            let part = read_vectors(&unit_dir(unit).join(HVP_FILE), n)?;
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
        }
        if r == 0 {
            let m = v.len() - h.probes;
            probes = (v.split_off(m), w.split_off(m));
        }
        next = k.extend(v, w);
    }
    if round + 1 < h.rounds && !next.is_empty() {
        write_vectors(&sweep_dir.join(block_file(round + 1)), &next)?;
        return Ok(Some((l.tiles() + (round + 2) * h.shards) as u32));
    }
    let ritz = k.ritz();
    let (trace, se) = ridgeline_common::linalg::lanczos::hutchinson(&probes.0, &probes.1);
    let vectors = k.q.len() + h.probes;
    let json = serde_json::json!({
        "top_eigenvalues": ritz.iter().take(h.top_k).map(|(v, r)| serde_json::json!({"value": v, "residual": r})).collect::<Vec<_>>(),
        "lambda_min": ritz.last().map(|(v, r)| serde_json::json!({"value": v, "residual": r})),
        "trace": {"estimate": trace, "std_error": se, "probes": h.probes},
        "method": "block Lanczos with full reorthogonalisation over data shards; Hutchinson (Rademacher) trace",
        "tolerance": "each eigenvalue is within its residual ‖Hy − θy‖ of a true eigenvalue; the trace is within a few std_error",
        "rounds": round + 1,
        "krylov_dimension": k.q.len(),
        "hvps": vectors,
        "hvps_per_shard": vectors,
        "shard_hvps_total": vectors * h.shards,
        "shards": h.shards,
        "epsilon": h.epsilon,
        "parameters": n,
    });
    let p = sweep_dir.join("hessian.json");
    let bytes = serde_json::to_vec_pretty(&json).expect("json");
    std::fs::write(&p, &bytes).map_err(|e| format!("{}: {e}", p.display()))?;
    crate::telemetry::wrote(bytes.len() as u64);
    Ok(None)
}
