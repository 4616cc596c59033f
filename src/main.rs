//! `ridgeline`: one binary for every role. `run` starts an embedded coordinator and
//! local workers in one process; `coordinator` and `worker` run the roles on a cluster;
//! the other verbs talk to a coordinator.

mod client;
mod download;
mod embedded;
mod follow;
mod observe;
mod results;
mod scan_report;
mod settings;
mod status;
mod ui;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;

use ridgeline_common::proto;
use ridgeline_common::spec::{SweepKind, SweepSpec};
use ridgeline_coordinator::core::CoreConfig;
use ridgeline_coordinator::{CoordinatorConfig, Limits, serve};
use ridgeline_worker::runner::{self, WorkerConfig};

use settings::Settings;

#[derive(Parser)]
#[command(
    name = "ridgeline",
    version,
    about = "Distributed hyperparameter and loss-landscape sweeps"
)]
struct Cli {
    /// Settings file (TOML); defaults to ./ridgeline.toml when present.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// On failure, print the error's full chain with its backtrace (when captured).
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct CoordinatorFlag {
    /// Coordinator URL [env: RIDGELINE_COORDINATOR] [default: http://127.0.0.1:50051]
    #[arg(long)]
    coordinator: Option<String>,
}

#[derive(Args)]
struct MetricsFlags {
    /// Metrics port (/metrics, /healthz, /readyz), or `off` [env: RIDGELINE_METRICS_LISTEN]
    /// [default: coordinator: its listening host, port 9871; run: off].
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Seconds a finished sweep's series stay in the metrics
    /// [env: RIDGELINE_METRICS_RETENTION_S] [default: 3600].
    #[arg(long)]
    metrics_retention_s: Option<u64>,
}

impl MetricsFlags {
    fn apply(self, s: &mut Settings) {
        s.metrics_listen = self.metrics_listen.or(s.metrics_listen.take());
        s.metrics_retention_s = self.metrics_retention_s.unwrap_or(s.metrics_retention_s);
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Csv,
    Json,
    /// A search over `subspace_dim`: intrinsic.json (accuracy per d, d_int90).
    Intrinsic,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a sweep on this machine: an embedded coordinator plus local workers.
    Run {
        /// Sweep spec (TOML or YAML).
        spec: PathBuf,
        /// Local worker processes' worth of slots [default: CPU cores, at most 4].
        #[arg(long)]
        workers: Option<u32>,
        /// Output folder: database, artifacts, results.csv, best checkpoint.
        #[arg(long, default_value = "ridgeline-out")]
        out: PathBuf,
        /// Device for the workers: cpu or cuda:N.
        #[arg(long)]
        device: Option<String>,
        /// Exit 0 even when trials failed for good (their reasons are printed anyway).
        #[arg(long)]
        allow_failures: bool,
        /// Start a new sweep even if OUT has one of this spec (which is otherwise
        /// continued: an interrupted run goes on where it stopped).
        #[arg(long)]
        fresh: bool,
        #[command(flatten)]
        m: MetricsFlags,
    },
    /// Run the coordinator.
    Coordinator {
        /// Address to listen on [env: RIDGELINE_LISTEN] [default: 127.0.0.1:50051].
        #[arg(long)]
        listen: Option<String>,
        /// Folder of the database and artifacts [env: RIDGELINE_DATA_DIR] [default: ridgeline-data].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Lease lifetime without heartbeat, in ms [env: RIDGELINE_LEASE_TTL_MS].
        #[arg(long)]
        lease_ttl_ms: Option<u64>,
        /// Heartbeat period asked of workers, in ms [env: RIDGELINE_HEARTBEAT_INTERVAL_MS].
        #[arg(long)]
        heartbeat_interval_ms: Option<u64>,
        /// Leases of a unit before it is failed [env: RIDGELINE_MAX_ATTEMPTS].
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Largest spec accepted, in bytes [env: RIDGELINE_MAX_SPEC_BYTES] [default: 1048576].
        #[arg(long)]
        max_spec_bytes: Option<usize>,
        /// Most grid points or trials in one sweep [env: RIDGELINE_MAX_POINTS_PER_SWEEP] [default: 100000000].
        #[arg(long)]
        max_points_per_sweep: Option<u64>,
        #[command(flatten)]
        m: MetricsFlags,
    },
    /// Run a worker that takes units from a coordinator.
    Worker {
        #[command(flatten)]
        c: CoordinatorFlag,
        /// Units run at once on each device [env: RIDGELINE_SLOTS] [default: 1].
        #[arg(long)]
        slots: Option<u32>,
        /// Device: cpu, cuda:N, a list (cuda:0,cuda:1), or auto: every GPU this build can
        /// open, else the CPU [env: RIDGELINE_DEVICE] [default: cpu].
        #[arg(long)]
        device: Option<String>,
        /// Leave after this long with nothing to run or no coordinator (e.g. 5m):
        /// elastic workers give their allocation back when the sweep is done.
        #[arg(long, value_parser = parse_duration)]
        idle_timeout: Option<Duration>,
        /// Name shown in results [default: host name].
        #[arg(long)]
        name: Option<String>,
        /// Bytes one unit may use; larger scan tiles run in chunks that fit
        /// [env: RIDGELINE_MEMORY_BYTES] [default: half the available memory / slots].
        #[arg(long)]
        memory_bytes: Option<u64>,
        /// Metrics port (/metrics, /healthz, /readyz), or `off`
        /// [env: RIDGELINE_METRICS_LISTEN] [default: 0.0.0.0:9872].
        #[arg(long)]
        metrics_listen: Option<String>,
        /// Where command trials keep their files; shared storage lets a trial re-run on
        /// another node resume [env: RIDGELINE_TRIAL_ROOT] [default: ridgeline-trials].
        #[arg(long)]
        trial_root: Option<PathBuf>,
    },
    /// Submit a sweep to a coordinator and print its id.
    Submit {
        /// Sweep spec (TOML or YAML).
        spec: PathBuf,
        #[command(flatten)]
        c: CoordinatorFlag,
        /// Follow the sweep until it ends; exit non-zero if trials failed for good.
        #[arg(long)]
        wait: bool,
        /// Exit 0 even when trials failed for good (their reasons are printed anyway).
        #[arg(long)]
        allow_failures: bool,
    },
    /// Serve the web page (sweeps, trials, histories, parameters, Pareto fronts, loss
    /// surfaces, Hessians) for a coordinator, read through its client API, behind its
    /// token.
    Ui {
        #[command(flatten)]
        c: CoordinatorFlag,
        /// The --out folder of `ridgeline run` instead of a coordinator: its own
        /// coordinator when it still runs, else one started here to read the folder.
        #[arg(long, conflicts_with = "coordinator")]
        out: Option<PathBuf>,
        /// Address of the page; another host than loopback needs the coordinator's
        /// token set.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Offer cancel, resume and enqueue buttons (read-only otherwise).
        #[arg(long)]
        allow_control: bool,
    },
    /// Write a finished synthetic search of N trials into a data folder through the
    /// store (for measuring the web page and the store at scale).
    #[command(hide = true)]
    Synthetic {
        /// The coordinator's data folder (created when missing).
        #[arg(long)]
        data_dir: PathBuf,
        /// Trials.
        #[arg(long)]
        trials: u32,
    },
    /// Show one sweep, or list all.
    Status {
        /// Sweep id.
        sweep: Option<String>,
        #[command(flatten)]
        c: CoordinatorFlag,
        /// Print JSON (one object, or a list of all sweeps) for programs to read.
        #[arg(long)]
        json: bool,
    },
    /// Follow a sweep until it ends; exit non-zero if trials failed for good.
    Watch {
        /// Sweep id.
        sweep: String,
        #[command(flatten)]
        c: CoordinatorFlag,
        /// Exit 0 even when trials failed for good (their reasons are printed anyway).
        #[arg(long)]
        allow_failures: bool,
    },
    /// Run a cancelled sweep again from where it stopped: finished trials (tiles) stay,
    /// the cancelled and never-run ones run (a scan's unfinished Hessian does not).
    Resume {
        /// Sweep id.
        sweep: String,
        #[command(flatten)]
        c: CoordinatorFlag,
        /// Follow the sweep until it ends; exit non-zero if trials failed for good.
        #[arg(long)]
        wait: bool,
        /// Exit 0 even when trials failed for good (their reasons are printed anyway).
        #[arg(long)]
        allow_failures: bool,
    },
    /// Add trials to a search, running or ended: the sampler continues from its trials
    /// (trial numbers go on; an ended search runs again).
    Extend {
        /// Sweep id.
        sweep: String,
        /// Trials to add.
        #[arg(long)]
        trials: u32,
        #[command(flatten)]
        c: CoordinatorFlag,
        /// Follow the sweep until it ends; exit non-zero if trials failed for good.
        #[arg(long)]
        wait: bool,
    },
    /// Run given configurations next in a search (Optuna's enqueue_trial): FILE holds a
    /// JSON object of parameters, or a list of them, one trial each (`-`: standard
    /// input); parameters left out are drawn by the sampler.
    Enqueue {
        /// Sweep id.
        sweep: String,
        /// JSON file of parameters.
        file: PathBuf,
        #[command(flatten)]
        c: CoordinatorFlag,
        /// Follow the sweep until it ends; exit non-zero if trials failed for good.
        #[arg(long)]
        wait: bool,
    },
    /// Cancel a sweep: nothing more is leased and running units stop.
    Cancel {
        /// Sweep id.
        sweep: String,
        #[command(flatten)]
        c: CoordinatorFlag,
    },
    /// Delete a sweep (cancelling it if it runs), its database rows and its files.
    Delete {
        /// Sweep id.
        sweep: String,
        #[command(flatten)]
        c: CoordinatorFlag,
    },
    /// Print or write a sweep's results, one row per trial.
    Results {
        /// Sweep id.
        sweep: String,
        #[command(flatten)]
        c: CoordinatorFlag,
        /// Output format.
        #[arg(long, value_enum, default_value = "csv")]
        format: Format,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Fetch a sweep's files from its coordinator (checkpoints, surface.npy and the
    /// other arrays, plots, hessian.json, logs; a search's results.csv/json), resuming
    /// what an earlier run or a dropped connection left unfinished.
    Download {
        /// Sweep id.
        sweep: String,
        #[command(flatten)]
        c: CoordinatorFlag,
        /// Output folder [default: ./SWEEP].
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Only this trial's (scan unit's) folder.
        #[arg(long, conflicts_with = "best")]
        trial: Option<u32>,
        /// Only the best trial's checkpoint and parameters, into OUTPUT/best/.
        #[arg(long)]
        best: bool,
        /// Reconnections in a row without progress before giving up (the partial file is
        /// kept: running the command again resumes it).
        #[arg(long, default_value_t = 5)]
        retries: u32,
    },
    /// Print a command trial's log (its stdout and stderr, report lines left out).
    Logs {
        /// Sweep id.
        sweep: String,
        /// Trial number.
        trial: u32,
        #[command(flatten)]
        c: CoordinatorFlag,
        /// Keep printing new output until the trial ends.
        #[arg(long, short)]
        follow: bool,
        /// Which attempt [default: the latest].
        #[arg(long)]
        attempt: Option<u32>,
    },
}

fn parse_duration(t: &str) -> Result<Duration, String> {
    let secs = ridgeline_common::spec::trial::parse_duration(t)?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{t:?}: {e}"))
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour codes only for a person at a terminal, never in log files.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Resolves on Ctrl-C or SIGTERM.
async fn terminated() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn client_timeout(s: &Settings) -> Duration {
    Duration::from_secs(s.timeout_s.max(1))
}

async fn connect(s: &Settings, c: CoordinatorFlag) -> Result<client::Client> {
    let url = c.coordinator.unwrap_or(s.coordinator.clone());
    client::connect(&url, &s.security()?, client_timeout(s)).await
}

/// Errors a person caused (a wrong flag, a bad spec, an unreachable address) print as
/// one line; `--verbose` adds the chain and the backtrace. Panics keep Rust's report.
fn main() -> std::process::ExitCode {
    // Before any thread exists, so setting the environment is sound: candle reads this
    // once per thread, and exact Hessian-vector products need their gradients' graphs
    // (worker/src/landscape/hessian.rs). Training only pays for a few more graph nodes.
    // SAFETY: no other thread runs yet.
    unsafe { std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1") };
    // SAFETY: as above.
    unsafe { ridgeline_worker::host::fix_thread_count() };
    ridgeline_worker::memory::keep_freed_buffers();
    ridgeline_common::telemetry::raise_open_files_limit();
    let verbose = std::env::args().any(|a| a == "-v" || a == "--verbose");
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if verbose {
                eprintln!("error: {e:?}");
            } else {
                eprintln!("error: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn limits(s: &Settings) -> Limits {
    Limits {
        max_spec_bytes: s.max_spec_bytes,
        max_points_per_sweep: s.max_points_per_sweep,
    }
}

fn core_config(s: &Settings) -> CoreConfig {
    CoreConfig {
        lease_ttl_ms: s.lease_ttl_ms,
        heartbeat_interval_ms: s.heartbeat_interval_ms,
        max_attempts: s.max_attempts.max(1),
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let mut s = Settings::load(cli.config.as_deref())?;
    // Before the runtime's threads: the launcher is a fork of this process as it is now
    // (worker/src/executors/command/launcher.rs), which starts the command trials'
    // supervisors without copying the running worker.
    if matches!(cli.cmd, Cmd::Run { .. } | Cmd::Worker { .. }) {
        ridgeline_worker::executors::start_launcher();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let quiet = matches!(cli.cmd, Cmd::Run { .. });
    init_tracing(if quiet { "warn" } else { "info" });
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Run {
                spec,
                workers,
                out,
                device,
                allow_failures,
                fresh,
                m,
            } => {
                if let Some(d) = device {
                    s.device = d;
                }
                m.apply(&mut s);
                let n = workers.unwrap_or_else(|| {
                    std::thread::available_parallelism()
                        .map_or(2, |n| n.get() as u32)
                        .min(4)
                });
                let opts = embedded::RunOptions {
                    allow_failures,
                    fresh,
                };
                embedded::cmd_run(&s, &spec, n.max(1), &out, opts).await
            }
            Cmd::Coordinator {
                listen,
                data_dir,
                lease_ttl_ms,
                heartbeat_interval_ms,
                max_attempts,
                max_spec_bytes,
                max_points_per_sweep,
                m,
            } => {
                m.apply(&mut s);
                s.listen = listen.unwrap_or(s.listen);
                s.data_dir = data_dir.unwrap_or(s.data_dir);
                s.lease_ttl_ms = lease_ttl_ms.unwrap_or(s.lease_ttl_ms);
                s.heartbeat_interval_ms = heartbeat_interval_ms.unwrap_or(s.heartbeat_interval_ms);
                s.max_attempts = max_attempts.unwrap_or(s.max_attempts);
                s.max_spec_bytes = max_spec_bytes.unwrap_or(s.max_spec_bytes);
                s.max_points_per_sweep = max_points_per_sweep.unwrap_or(s.max_points_per_sweep);
                let listener = TcpListener::bind(&s.listen)
                    .await
                    .with_context(|| format!("listen on {}", s.listen))?;
                let metrics = observe::start(
                    s.metrics_listen.as_deref(),
                    Some(observe::coordinator_default(&s.listen)),
                    observe::Roles { coordinator: true },
                )
                .await?;
                if let Some((_, addr)) = &metrics {
                    observe::write_addr(&s.data_dir, *addr)?;
                }
                let cfg = CoordinatorConfig {
                    data_dir: s.data_dir.clone(),
                    core: core_config(&s),
                    security: s.security()?,
                    limits: limits(&s),
                    metrics_retention_ms: s.metrics_retention_s.saturating_mul(1000),
                    ready: metrics.map(|(r, _)| r.part("coordinator")),
                };
                serve(listener, cfg, terminated()).await?;
                Ok(())
            }
            Cmd::Worker {
                c,
                slots,
                device,
                name,
                memory_bytes,
                metrics_listen,
                trial_root,
                idle_timeout,
            } => {
                s.metrics_listen = metrics_listen.or(s.metrics_listen.take());
                let metrics = observe::start(
                    s.metrics_listen.as_deref(),
                    Some(format!("0.0.0.0:{}", observe::WORKER_PORT)),
                    observe::Roles { coordinator: false },
                )
                .await?;
                let name = name.unwrap_or_else(runner::default_name);
                let cfg = WorkerConfig {
                    coordinator: c.coordinator.unwrap_or(s.coordinator.clone()),
                    ready: metrics.map(|(r, _)| r.part(&format!("worker {name}"))),
                    name,
                    slots: slots.unwrap_or(s.slots).max(1),
                    device: device.unwrap_or(s.device.clone()),
                    poll_interval: Duration::from_millis(250),
                    security: s.security()?,
                    memory_bytes: memory_bytes.or(s.memory_bytes),
                    idle_timeout,
                    trial_root: trial_root
                        .or(s.trial_root.clone())
                        .unwrap_or_else(|| "ridgeline-trials".into()),
                };
                runner::run(cfg, terminated()).await?;
                Ok(())
            }
            Cmd::Submit {
                spec,
                c,
                wait,
                allow_failures,
            } => {
                let mut client = connect(&s, c).await?;
                let r = client::submit(&mut client, &spec).await?;
                println!("{}", r.sweep_id);
                let kind = SweepSpec::from_file(&spec)
                    .map(|s| {
                        if s.kind == SweepKind::Landscape {
                            "landscape"
                        } else {
                            "search"
                        }
                    })
                    .unwrap_or("search");
                let seed = if kind == "search" {
                    format!(" (seed {})", r.seed)
                } else {
                    String::new()
                };
                eprintln!(
                    "submitted {} with {} {}{seed}",
                    r.sweep_id,
                    r.total_units,
                    client::unit_noun(kind)
                );
                if wait {
                    follow::follow_to_end(&mut client, &r.sweep_id, allow_failures, false)
                        .await?;
                }
                Ok(())
            }
            Cmd::Ui {
                c,
                out,
                listen,
                allow_control,
            } => {
                let c = match out {
                    Some(out) => CoordinatorFlag {
                        coordinator: Some(ui::folder_coordinator(&s, &out).await?),
                    },
                    None => c,
                };
                let client = connect(&s, c).await?;
                ui::run(client, &listen, s.security()?.token, allow_control).await
            }
            Cmd::Synthetic { data_dir, trials } => {
                let id = ridgeline_coordinator::synthetic::fill(&data_dir, trials, 1)
                    .map_err(anyhow::Error::msg)?;
                println!("{id}");
                Ok(())
            }
            Cmd::Status { sweep, c, json } => {
                let mut client = connect(&s, c).await?;
                match sweep {
                    Some(id) if json => {
                        let st = client
                            .get_status(proto::GetStatusRequest { sweep_id: id })
                            .await
                            .map_err(|e| anyhow::anyhow!("{}", e.message()))?
                            .into_inner();
                        println!("{}", status::json(&st));
                    }
                    None if json => {
                        let list = client::list_all(&mut client, false).await?;
                        let all: Vec<serde_json::Value> = list.iter().map(status::json).collect();
                        println!("{}", serde_json::Value::Array(all));
                    }
                    Some(id) => {
                        let st = client
                            .get_status(proto::GetStatusRequest {
                                sweep_id: id.clone(),
                            })
                            .await
                            .map_err(|e| anyhow::anyhow!("{}", e.message()))?
                            .into_inner();
                        let files = client
                            .list_artifacts(proto::ListArtifactsRequest {
                                sweep_id: id,
                                ..Default::default()
                            })
                            .await
                            .ok()
                            .map(|r| r.into_inner());
                        // A scan in its own words: points, Hessian rounds, curvature.
                        let scan = match st.kind.as_str() {
                            "landscape" => status::scan_lines(&mut client, &st).await?,
                            _ => Vec::new(),
                        };
                        print!("{}", status::detail(&st, &scan, files.as_ref()));
                    }
                    None => {
                        let list = client::list_all(&mut client, false).await?;
                        if list.is_empty() {
                            println!("no sweeps");
                        } else {
                            print!("{}", status::table(&list));
                        }
                    }
                }
                Ok(())
            }
            Cmd::Watch {
                sweep,
                c,
                allow_failures,
            } => {
                let mut client = connect(&s, c).await?;
                follow::follow_to_end(&mut client, &sweep, allow_failures, true).await
            }
            Cmd::Resume {
                sweep,
                c,
                wait,
                allow_failures,
            } => {
                let mut client = connect(&s, c).await?;
                client::resume(&mut client, &sweep).await?;
                eprintln!("{sweep} running again");
                if wait {
                    follow::follow_to_end(&mut client, &sweep, allow_failures, false).await?;
                }
                Ok(())
            }
            Cmd::Extend {
                sweep,
                trials,
                c,
                wait,
            } => {
                let mut client = connect(&s, c).await?;
                let total = client::extend(&mut client, &sweep, trials, Vec::new()).await?;
                eprintln!("{sweep}: {trials} trials added, {total} in all");
                if wait {
                    follow::follow_to_end(&mut client, &sweep, false, false).await?;
                }
                Ok(())
            }
            Cmd::Enqueue {
                sweep,
                file,
                c,
                wait,
            } => {
                let configs = client::read_configurations(&file)?;
                let n = configs.len();
                let mut client = connect(&s, c).await?;
                let total = client::extend(&mut client, &sweep, 0, configs).await?;
                eprintln!("{sweep}: {n} configurations enqueued, {total} trials in all");
                if wait {
                    follow::follow_to_end(&mut client, &sweep, false, false).await?;
                }
                Ok(())
            }
            Cmd::Cancel { sweep, c } => {
                let mut client = connect(&s, c).await?;
                let r = client
                    .cancel_sweep(proto::CancelSweepRequest {
                        sweep_id: sweep.clone(),
                    })
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", e.message()))?
                    .into_inner();
                println!("{sweep} {}", client::state_name(r.state));
                Ok(())
            }
            Cmd::Delete { sweep, c } => {
                let mut client = connect(&s, c).await?;
                let r = client
                    .delete_sweep(proto::DeleteSweepRequest {
                        sweep_id: sweep.clone(),
                    })
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", e.message()))?
                    .into_inner();
                println!("{sweep} deleted ({} bytes of files freed)", r.bytes_freed);
                Ok(())
            }
            Cmd::Results {
                sweep,
                c,
                format,
                output,
            } => {
                let mut client = connect(&s, c).await?;
                let r = client::results(&mut client, &sweep).await?;
                let text = match format {
                    Format::Csv => results::results_csv(&r)?,
                    Format::Json => results::results_json(&r)?,
                    Format::Intrinsic => match results::intrinsic(&r) {
                        Some(Ok(j)) => serde_json::to_string_pretty(&j)? + "\n",
                        Some(Err(e)) => anyhow::bail!("sweep {sweep}: {e}"),
                        None => anyhow::bail!(
                            "sweep {sweep}: no trial has a subspace_dim parameter (search.space.subspace_dim)"
                        ),
                    },
                };
                match output {
                    Some(p) => std::fs::write(&p, text)
                        .with_context(|| format!("write {}", p.display()))?,
                    None => print!("{text}"),
                }
                // On stderr: the rows on stdout stay a clean CSV or JSON.
                if let Ok(f) = client
                    .list_artifacts(proto::ListArtifactsRequest {
                        sweep_id: sweep.clone(),
                        ..Default::default()
                    })
                    .await
                {
                    let f = f.into_inner();
                    eprintln!(
                        "{} files (checkpoints, arrays, plots) in {} on the coordinator's host: ridgeline download {sweep} -o DIR",
                        f.files.len(),
                        f.location
                    );
                }
                Ok(())
            }
            Cmd::Download {
                sweep,
                c,
                output,
                trial,
                best,
                retries,
            } => {
                let url = c.coordinator.unwrap_or(s.coordinator.clone());
                let security = s.security()?;
                let src = download::Source {
                    url: &url,
                    security: &security,
                    timeout: client_timeout(&s),
                    retries,
                };
                let which = match (trial, best) {
                    (Some(n), _) => download::Which::Trial(n),
                    (None, true) => download::Which::Best,
                    (None, false) => download::Which::All,
                };
                let out = output.unwrap_or_else(|| PathBuf::from(&sweep));
                let started = std::time::Instant::now();
                let sum = download::download(&src, &sweep, which, &out).await?;
                println!(
                    "{sweep}: {} files in {} ({} fetched in {:.1} s, {} already here, {} resumed)",
                    sum.files,
                    out.display(),
                    client::bytes(sum.fetched_bytes),
                    started.elapsed().as_secs_f64(),
                    sum.skipped,
                    sum.resumed
                );
                Ok(())
            }
            Cmd::Logs {
                sweep,
                trial,
                c,
                follow,
                attempt,
            } => {
                let mut client = connect(&s, c).await?;
                client::logs(&mut client, &sweep, trial, attempt.unwrap_or(0), follow).await
            }
        }
    })
}
