//! What `status` and `watch` print: a table of all sweeps, one sweep in detail, and the
//! time a running sweep has left.

use std::time::Duration;

use anyhow::Result;

use ridgeline_common::proto;

use crate::client::{self, state_name};

/// Units that need no more work: completed, failed, diverged, cancelled or pruned.
pub fn done(st: &proto::SweepStatus) -> u32 {
    st.completed + st.failed + st.diverged + st.cancelled + st.pruned
}

/// The time a running sweep has left at the pace it has gone so far; `None` before the
/// first unit ends, or once the sweep has.
pub fn eta(st: &proto::SweepStatus) -> Option<Duration> {
    let done = done(st);
    if st.state != proto::SweepState::Running as i32 || done == 0 || done >= st.total {
        return None;
    }
    let per_unit = st.elapsed_s.max(0.0) / f64::from(done);
    Duration::try_from_secs_f64(per_unit * f64::from(st.total - done)).ok()
}

/// `1h02m`, `3m05s`, `42s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// A sweep's status as JSON, for programs (the Python package) to read.
pub fn json(st: &proto::SweepStatus) -> serde_json::Value {
    let best = st.best.as_ref().map(|b| {
        serde_json::json!({
            "trial": b.trial_index,
            "value": b.value.is_finite().then_some(b.value),
            "params": ridgeline_common::params::params_from_proto(&b.params).unwrap_or_default(),
        })
    });
    serde_json::json!({
        "sweep_id": st.sweep_id,
        "name": st.name,
        "kind": if st.kind.is_empty() { "search" } else { st.kind.as_str() },
        "state": client::state_name(st.state),
        "total": st.total,
        "done": done(st),
        "pending": st.pending,
        "running": st.running,
        "completed": st.completed,
        "failed": st.failed,
        "diverged": st.diverged,
        "cancelled": st.cancelled,
        "pruned": st.pruned,
        "metric": st.metric,
        "mode": st.mode,
        "best": best,
        "objectives": st.objectives,
        "modes": st.modes,
        "pareto": st.pareto.iter().map(|p| serde_json::json!({
            "trial": p.trial_index,
            "values": p.values,
            "params": ridgeline_common::params::params_from_proto(&p.params).unwrap_or_default(),
        })).collect::<Vec<_>>(),
        "hypervolume": (st.objectives.len() > 1).then_some(st.hypervolume),
        "reference_point": st.reference_point,
        "created_unix": st.created_unix,
        "elapsed_s": st.elapsed_s,
        "eta_s": eta(st).map(|d| d.as_secs_f64()),
    })
}

/// All sweeps, a row each, newest last, columns aligned.
pub fn table(list: &[proto::SweepStatus]) -> String {
    let mut rows = vec![
        [
            "SWEEP", "KIND", "STATE", "DONE", "RUNNING", "FAILED", "BEST", "ELAPSED", "ETA",
        ]
        .map(String::from),
    ];
    for st in list {
        let best = if st.objectives.len() > 1 {
            format!("front={} hv={:.4}", st.pareto.len(), st.hypervolume)
        } else {
            st.best
                .as_ref()
                .map(|b| format!("{}={:.4}", st.metric, b.value))
                .unwrap_or_else(|| "-".into())
        };
        rows.push([
            st.sweep_id.clone(),
            if st.kind.is_empty() {
                "search".into()
            } else {
                st.kind.clone()
            },
            state_name(st.state).into(),
            format!("{}/{}", done(st), st.total),
            st.running.to_string(),
            (st.failed + st.diverged).to_string(),
            best,
            human(Duration::from_secs_f64(st.elapsed_s.max(0.0))),
            eta(st).map(human).unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    out
}

/// A scan's status in its own words ([`crate::scan_report`]): its results give the
/// units' states, and meta.json and hessian.json (once written) the lowest loss and
/// whether the Hessian converged.
pub async fn scan_lines(
    client: &mut client::Client,
    st: &proto::SweepStatus,
) -> Result<Vec<String>> {
    let spec = ridgeline_common::spec::SweepSpec::from_json(&st.spec_json)
        .map_err(|e| anyhow::anyhow!("the coordinator sent a spec this client cannot read: {e}"))?;
    let Some(l) = spec.landscape.as_ref() else {
        return Ok(Vec::new());
    };
    let r = client::results(client, &st.sweep_id).await?;
    let states: Vec<(u32, i32)> = r.trials.iter().map(|t| (t.trial_index, t.state)).collect();
    let meta = client::small_json(client, &st.sweep_id, "meta.json").await;
    let hessian = client::small_json(client, &st.sweep_id, "hessian.json").await;
    Ok(crate::scan_report::lines(
        &st.sweep_id,
        client::state_name(st.state),
        l,
        &states,
        &meta,
        &hessian,
    ))
}

/// One sweep: its summary, time, and where its files are.
/// `scan` holds a scan's own summary lines, which replace the line of unit counts.
pub fn detail(
    st: &proto::SweepStatus,
    scan: &[String],
    files: Option<&proto::ListArtifactsResponse>,
) -> String {
    let mut out = match scan {
        [] => client::summary(st) + "\n",
        lines => lines.join("\n") + "\n",
    };
    let elapsed = human(Duration::from_secs_f64(st.elapsed_s.max(0.0)));
    match eta(st) {
        Some(left) => out += &format!("elapsed {elapsed}, about {} left\n", human(left)),
        None => out += &format!("elapsed {elapsed}\n"),
    }
    if let Some(f) = files {
        let bytes: u64 = f.files.iter().map(|f| f.size).sum();
        out += &format!(
            "artifacts: {} files ({}) in {} on the coordinator's host; fetch them with: ridgeline download {} -o DIR\n",
            f.files.len(),
            client::bytes(bytes),
            f.location,
            st.sweep_id
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(done: u32, total: u32, elapsed_s: f64) -> proto::SweepStatus {
        proto::SweepStatus {
            sweep_id: "s-1".into(),
            state: proto::SweepState::Running as i32,
            completed: done,
            total,
            elapsed_s,
            kind: "search".into(),
            metric: "val_accuracy".into(),
            ..Default::default()
        }
    }

    #[test]
    fn eta_follows_the_pace_so_far() {
        assert_eq!(eta(&st(0, 10, 5.0)), None);
        assert_eq!(eta(&st(2, 10, 30.0)), Some(Duration::from_secs(120)));
        assert_eq!(eta(&st(10, 10, 30.0)), None);
        let mut fin = st(4, 10, 30.0);
        fin.state = proto::SweepState::Cancelled as i32;
        assert_eq!(eta(&fin), None);
        assert_eq!(human(Duration::from_secs(42)), "42s");
        assert_eq!(human(Duration::from_secs(185)), "3m05s");
        assert_eq!(human(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn the_table_lines_up() {
        let mut a = st(3, 12, 9.0);
        a.best = Some(proto::BestTrial {
            value: 0.98765,
            ..Default::default()
        });
        let mut b = st(1500, 1500, 61.0);
        b.sweep_id = "a-much-longer-sweep-id".into();
        b.kind = "landscape".into();
        b.state = proto::SweepState::Completed as i32;
        let t = table(&[a, b]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        let col = |l: &str, name: &str| l.find(name);
        let at = lines[0].find("STATE").unwrap();
        assert_eq!(col(lines[1], "running"), Some(at), "{t}");
        assert_eq!(col(lines[2], "completed"), Some(at), "{t}");
        assert!(lines[1].contains("3/12") && lines[1].contains("27s"), "{t}");
        assert!(lines[1].contains("val_accuracy=0.9877"), "{t}");
        assert!(
            lines[2].contains("1500/1500") && lines[2].ends_with('-'),
            "{t}"
        );
    }
}
