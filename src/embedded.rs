//! `ridgeline run`: a coordinator and local workers in one process, on loopback; the
//! training sweep a scan needs first; and the summary printed at the end.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;

use ridgeline_common::net::Security;
use ridgeline_common::params::params_from_proto;
use ridgeline_common::proto;
use ridgeline_common::spec::{SweepKind, SweepSpec};
use ridgeline_coordinator::service::describe_params;
use ridgeline_coordinator::{CoordinatorConfig, serve};
use ridgeline_worker::runner::{self, WorkerConfig};

use crate::settings::Settings;
use crate::{client, client_timeout, core_config, limits, observe, results, terminated};

/// `ridgeline run`: everything in one process, on loopback.
/// How `ridgeline run` treats failures and earlier runs of the same spec.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Exit 0 even when trials failed for good.
    pub allow_failures: bool,
    /// Start new sweeps even where this output folder has sweeps of the same specs.
    pub fresh: bool,
}

/// The embedded coordinator's settings for the folder `out`.
fn coordinator_config(
    s: &Settings,
    out: &Path,
    security: Security,
    ready: Option<&ridgeline_common::telemetry::Readiness>,
) -> CoordinatorConfig {
    CoordinatorConfig {
        data_dir: out.to_owned(),
        core: core_config(s),
        security,
        limits: limits(s),
        metrics_retention_ms: s.metrics_retention_s.saturating_mul(1000),
        ready: ready.map(|r| r.part("coordinator")),
    }
}

/// A coordinator for the folder of a `ridgeline run` (no workers: to read it), on a
/// free loopback port until the process ends; returns its URL.
pub async fn serve_folder(s: &Settings, out: &Path) -> Result<String> {
    if !out.join("ridgeline.db").is_file() {
        anyhow::bail!(
            "{}: no ridgeline.db here (give the --out folder of `ridgeline run`)",
            out.display()
        );
    }
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let security = Security {
        token: s.security()?.token,
        ..Security::default()
    };
    let cfg = coordinator_config(s, out, security, None);
    tokio::spawn(serve(listener, cfg, std::future::pending()));
    Ok(url)
}

pub async fn cmd_run(
    s: &Settings,
    spec: &Path,
    workers: u32,
    out: &Path,
    opts: RunOptions,
) -> Result<()> {
    // A wrong spec is reported before anything starts (no half-started processes, no
    // reconnect noise around the error).
    let parsed = SweepSpec::from_file(spec)?;
    if let Some(t) = parsed.landscape.as_ref().and_then(|l| l.train.as_ref()) {
        SweepSpec::from_file(t)?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    // Workers stop first, then the coordinator: a worker never sees its coordinator
    // vanish (and warn about it) during a normal end.
    let (stop_workers, workers_stopped) = watch::channel(false);
    let (stop_coordinator, coordinator_stopped) = watch::channel(false);
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // Everything stays on loopback: no TLS, and the token only if one is configured.
    let security = Security {
        token: s.security()?.token,
        ..Security::default()
    };
    // One port for the coordinator and every local worker (each worker's series carry
    // its name).
    let metrics = observe::start(
        s.metrics_listen.as_deref(),
        None,
        observe::Roles { coordinator: true },
    )
    .await?;
    if let Some((_, addr)) = &metrics {
        observe::write_addr(out, *addr)?;
        eprintln!("metrics on http://{addr}/metrics");
    }
    let ready = metrics.map(|(r, _)| r);
    let cfg = coordinator_config(s, out, security.clone(), ready.as_ref());
    let coordinator = tokio::spawn(serve(listener, cfg, until_stopped(coordinator_stopped)));
    let mut pool = Vec::new();
    for i in 0..workers {
        let cfg = WorkerConfig {
            coordinator: url.clone(),
            name: format!("local{i}"),
            ready: ready.as_ref().map(|r| r.part(&format!("worker local{i}"))),
            slots: 1,
            device: s.device.clone(),
            poll_interval: Duration::from_millis(100),
            security: security.clone(),
            memory_bytes: s.memory_bytes,
            idle_timeout: None,
            trial_root: s
                .trial_root
                .clone()
                .unwrap_or_else(|| out.join("trial-dirs")),
        };
        pool.push(tokio::spawn(runner::run(
            cfg,
            until_stopped(workers_stopped.clone()),
        )));
    }
    let result = drive(
        &url,
        &security,
        client_timeout(s),
        spec,
        workers,
        out,
        opts.fresh,
    )
    .await
    .and_then(|(st, r)| crate::follow::check_failures(&st, &r, opts.allow_failures));
    let _ = stop_workers.send(true);
    for w in pool {
        w.await?.context("local worker")?;
    }
    let _ = stop_coordinator.send(true);
    coordinator.await?.context("embedded coordinator")?;
    result
}

/// Runs a spec on the embedded coordinator and follows it to its end. A sweep of the
/// same spec already in this output folder is continued rather than started again
/// (Optuna's `load_if_exists`, Ray's `Tuner.restore`): one that was interrupted goes on
/// where it stopped, a cancelled search is resumed, a completed one is reported as it
/// is; `fresh` always starts a new sweep. Ctrl-C leaves the sweep as it is, to be
/// continued by running the same command again.
async fn run_one(
    client: &mut client::Client,
    spec_path: &Path,
    spec: &SweepSpec,
    workers: u32,
    fresh: bool,
) -> Result<(String, proto::SweepStatus)> {
    let what = if spec.kind == SweepKind::Landscape {
        "units (tiles, Hessian rounds)"
    } else {
        "trials"
    };
    let found = if fresh {
        None
    } else {
        existing(client, spec).await?
    };
    let running = proto::SweepState::Running as i32;
    let cancelled = proto::SweepState::Cancelled as i32;
    let completed = proto::SweepState::Completed as i32;
    let id = match found {
        Some(st) if st.state == running => {
            eprintln!(
                "sweep {}: continuing it ({}/{} {what} done before); --fresh starts a new one",
                st.sweep_id,
                st.completed + st.failed + st.diverged + st.pruned,
                st.total
            );
            st.sweep_id
        }
        Some(st) if st.state == cancelled => {
            client::resume(client, &st.sweep_id).await?;
            eprintln!(
                "sweep {}: resuming it after its cancellation; --fresh starts a new one",
                st.sweep_id
            );
            st.sweep_id
        }
        Some(st) if st.state == completed => {
            eprintln!(
                "sweep {}: this spec already ran to completion here; --fresh runs it again",
                st.sweep_id
            );
            st.sweep_id
        }
        _ => {
            let sub = client::submit_spec(client, spec_path, spec).await?;
            let seed = match spec.kind {
                SweepKind::Search => format!(" (seed {})", sub.seed),
                SweepKind::Landscape => String::new(),
            };
            eprintln!(
                "sweep {}: {} {what} on {workers} local workers{seed}",
                sub.sweep_id, sub.total_units
            );
            sub.sweep_id
        }
    };
    let st = tokio::select! {
        st = crate::follow::watch(client, &id) => st?,
        _ = terminated() => {
            anyhow::bail!(
                "interrupted: sweep {id} stops here and is kept; run the same command again to continue it (--fresh starts a new one)"
            );
        }
    };
    Ok((id, st))
}

/// Whether a stored sweep ran `spec`: the same spec, where a spec without a seed
/// matches the seed the coordinator drew for it.
fn same_spec(spec: &SweepSpec, stored_json: &str) -> bool {
    let Ok(stored) = SweepSpec::from_json(stored_json) else {
        return false;
    };
    let mut mine = spec.clone();
    if mine.search.seed.is_none() {
        mine.search.seed = stored.search.seed;
    }
    mine.to_json() == stored_json
}

/// The latest sweep of this coordinator with exactly this spec, if any (deleted and
/// failed sweeps aside).
async fn existing(
    client: &mut client::Client,
    spec: &SweepSpec,
) -> Result<Option<proto::SweepStatus>> {
    let list = client::list_all(client, true).await?;
    Ok(list
        .into_iter()
        .rev()
        .find(|s| s.state != proto::SweepState::Failed as i32 && same_spec(spec, &s.spec_json)))
}

async fn drive(
    url: &str,
    security: &Security,
    timeout: Duration,
    spec_path: &Path,
    workers: u32,
    out: &Path,
    fresh: bool,
) -> Result<(proto::SweepStatus, proto::GetResultsResponse)> {
    let started = std::time::Instant::now();
    let mut client = client::connect(url, security, timeout).await?;
    let mut spec = SweepSpec::from_file(spec_path)?;
    // A scan of "the best model of this search": run the search first, or reuse it.
    let train = spec.landscape.as_ref().and_then(|l| {
        let trial = l
            .checkpoint
            .as_deref()
            .is_none_or(|c| c.starts_with("trial:"));
        trial.then(|| l.train.clone()).flatten()
    });
    if let Some(train_path) = train {
        let tspec = SweepSpec::from_file(&train_path)?;
        let (id, st) = run_one(&mut client, &train_path, &tspec, workers, fresh).await?;
        anyhow::ensure!(
            st.best.is_some(),
            "{}: the training sweep {id} produced no model",
            train_path.display()
        );
        finish_search(&mut client, &id, &st, out).await?;
        let l = spec.landscape.as_mut().expect("checked above");
        // The scanned model is the best trial unless `checkpoint = "trial:N"` names one.
        if !l
            .checkpoint
            .as_deref()
            .is_some_and(|c| c.starts_with("trial:"))
        {
            l.checkpoint = Some("trial:best".into());
        }
        // `trial:N` / `trial:best` name trials of the training sweep (the scanned model,
        // an interpolation target, a PCA trajectory).
        let d = &mut l.directions;
        for r in [&mut l.checkpoint, &mut d.to, &mut d.y_to, &mut d.trajectory]
            .into_iter()
            .flatten()
        {
            match r.strip_prefix("trial:") {
                Some("best") => *r = format!("sweep:{id}/best"),
                Some(n) => *r = format!("sweep:{id}/trial/{n}"),
                None => {}
            }
        }
        // Scan the data the model was trained on, split and normalised the same way.
        spec.data = tspec.data.clone();
    }
    let (id, st) = run_one(&mut client, spec_path, &spec, workers, fresh).await?;
    match spec.kind {
        SweepKind::Search => finish_search(&mut client, &id, &st, out).await?,
        SweepKind::Landscape => finish_landscape(&mut client, &id, &spec, &st, out).await?,
    }
    println!("finished in {:.1}s", started.elapsed().as_secs_f64());
    println!("database: {}", out.join("ridgeline.db").display());
    // The reasons of failures, when there are any.
    let res = if st.failed > 0 {
        client::results(&mut client, &id).await?
    } else {
        proto::GetResultsResponse::default()
    };
    Ok((st, res))
}

async fn finish_landscape(
    client: &mut client::Client,
    id: &str,
    spec: &SweepSpec,
    st: &proto::SweepStatus,
    out: &Path,
) -> Result<()> {
    let dir = out.join("sweeps").join(id);
    // Large and cancelled scans are assembled on their own thread after the sweep
    // ends; meta.json is written once everything else is in place.
    let big = client::state_name(st.state) == "cancelled"
        || spec
            .landscape
            .as_ref()
            .is_some_and(|l| l.assembled_in_background());
    let waited = std::time::Instant::now();
    while big && !dir.join("meta.json").exists() && waited.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Points, Hessian rounds and curvature points counted apart; the lowest loss by its
    // coordinates.
    let json = |name: &str| -> serde_json::Value {
        std::fs::read(dir.join(name))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    };
    let r = client::results(client, id).await?;
    let states: Vec<(u32, i32)> = r.trials.iter().map(|t| (t.trial_index, t.state)).collect();
    let l = spec.landscape.as_ref().context("not a scan")?;
    let (meta, hessian) = (json("meta.json"), json("hessian.json"));
    let state = client::state_name(st.state);
    for line in crate::scan_report::lines(id, state, l, &states, &meta, &hessian) {
        println!("{line}");
    }
    let main = ["surface.npy", "points.npy"]
        .into_iter()
        .find(|f| dir.join(f).exists())
        .with_context(|| {
            format!(
                "the scan {id} ended without a surface ({})",
                client::state_name(st.state)
            )
        })?;
    if main == "surface.npy" {
        println!(
            "surface: {}  (np.load; shape [ny, nx], row i is y[i])",
            dir.join(main).display()
        );
    }
    for f in [
        "points.npy",
        "accuracy.npy",
        "val_surface.npy",
        "val_accuracy.npy",
        "x.npy",
        "y.npy",
        "surface.csv",
        "meta.json",
        "contour.png",
        "heatmap.png",
        "curve.png",
        "surface3d.png",
        "surface.h5",
        "surface.vtp",
        "lmc.json",
        "connectivity.json",
        "connectivity.png",
        "hessian.json",
        "esd.png",
        "curvature.json",
        "curvature_lambda_max.png",
        "curvature_trace.png",
        "trajectory.json",
    ] {
        if dir.join(f).exists() {
            println!("        {}", dir.join(f).display());
        }
    }
    Ok(())
}

async fn finish_search(
    client: &mut client::Client,
    id: &str,
    st: &proto::SweepStatus,
    out: &Path,
) -> Result<()> {
    let r = client::results(client, id).await?;
    let sweep_dir = out.join("sweeps").join(id);
    std::fs::create_dir_all(&sweep_dir)?;
    let csv_path = sweep_dir.join("results.csv");
    std::fs::write(&csv_path, results::results_csv(&r)?)?;
    std::fs::write(sweep_dir.join("results.json"), results::results_json(&r)?)?;
    println!("{}", client::summary(st));
    println!("results: {}", csv_path.display());
    let png = sweep_dir.join("pareto.png");
    if let Some(done) = results::pareto_plot(&r, &png) {
        match done {
            Ok(()) => println!("Pareto front: {}", png.display()),
            Err(e) => println!("Pareto front: not drawn: {e}"),
        }
    }
    let png = sweep_dir.join("pbt.png");
    if let Some(done) = results::pbt_plot(&r, &png) {
        match done {
            Ok(()) => println!("PBT lineage: {}", png.display()),
            Err(e) => println!("PBT lineage: not drawn: {e}"),
        }
    }
    match results::intrinsic(&r) {
        Some(Ok(j)) => {
            let p = sweep_dir.join("intrinsic.json");
            std::fs::write(&p, serde_json::to_string_pretty(&j)?)?;
            ridgeline_coordinator::plot::intrinsic(&sweep_dir.join("intrinsic.png"), id, &j)
                .map_err(anyhow::Error::msg)?;
            match j["d_int"].as_u64() {
                Some(d) => println!(
                    "intrinsic dimension: d_int90 = {d} (90 % of the full model's val_accuracy {:.4}): {}",
                    j["full_model"].as_f64().unwrap_or(f64::NAN),
                    p.display()
                ),
                None => println!(
                    "intrinsic dimension: no subspace_dim reached 90 % of the full model's val_accuracy: {}",
                    p.display()
                ),
            }
        }
        Some(Err(e)) => println!("intrinsic dimension: not measured: {e}"),
        None => {}
    }
    if let Some(b) = &st.best {
        let best_dir = sweep_dir.join("best");
        let params = params_from_proto(&b.params).map_err(anyhow::Error::msg)?;
        if !b.checkpoint_dir.is_empty() {
            std::fs::create_dir_all(&best_dir)?;
            for f in std::fs::read_dir(&b.checkpoint_dir)? {
                let f = f?;
                std::fs::copy(f.path(), best_dir.join(f.file_name()))?;
            }
            std::fs::write(
                best_dir.join("params.json"),
                serde_json::to_string_pretty(&params)?,
            )?;
        }
        println!(
            "best trial {}: {}={:.4}  {}",
            b.trial_index,
            st.metric,
            b.value,
            describe_params(&params)
        );
        if best_dir.join("model.safetensors").exists() {
            println!("best checkpoint: {}", best_dir.display());
        } else if best_dir.exists() {
            // A command trial's folder: its parameters and its logs.
            println!("best trial's files: {}", best_dir.display());
        }
    }
    Ok(())
}
