//! The coordinator process: one event loop that owns the [`Core`] and the [`Store`], and
//! thin tonic services that validate requests, convert them, and post them to the loop.
//!
//! The loop runs on a dedicated OS thread. It takes every event waiting in its channel,
//! applies them to the core, writes the resulting actions (and trial artifacts) in one
//! SQLite transaction, and only then replies: nothing is acknowledged before it is
//! durable, and a burst of reports costs one commit.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tracing::{error, info, warn};

use ridgeline_common::ids::{SweepId, UnitId, WorkerId};
use ridgeline_common::params::Params;
use ridgeline_common::proto::{self, sweep_service_server, worker_service_server};
use ridgeline_common::spec::{SweepKind, SweepSpec};
use ridgeline_common::{MAX_MESSAGE_BYTES, PROTOCOL_VERSION};

use crate::convert::*;
use crate::core::{self, Action, Core, CoreConfig, CoreError, Lease, Outcome, WorkerInfo};
use crate::landscape;
use crate::store::{Store, StoreError};
use ridgeline_common::landscape::{DirectionKind, ScanUnit};
use ridgeline_common::net::{NetError, RequireToken, Security, server_tls};
use ridgeline_common::telemetry::ReadyFlag;
use tonic::service::interceptor::InterceptedService;

/// How the coordinator runs.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// Folder of the database (`ridgeline.db`) and trial artifacts (`sweeps/`).
    pub data_dir: PathBuf,
    /// Scheduling policy.
    pub core: CoreConfig,
    /// Token and TLS.
    pub security: Security,
    /// What a submission may ask for.
    pub limits: Limits,
    /// How long a finished sweep's series stay in the metrics, in ms.
    pub metrics_retention_ms: u64,
    /// Set while the database is open and the coordinator serves (`/readyz`).
    pub ready: Option<ReadyFlag>,
}

/// How long a finished sweep's series stay in the metrics by default: long enough for
/// a dashboard to show how it ended.
pub const DEFAULT_METRICS_RETENTION_MS: u64 = 3_600_000;

/// Limits on what one submission may ask for, so that no request can sink the
/// coordinator.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest spec accepted, in bytes of JSON.
    pub max_spec_bytes: usize,
    /// Most grid points (scans) or trials (searches) in one sweep.
    pub max_points_per_sweep: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_spec_bytes: 1 << 20,
            // A 10,000 x 10,000 scan.
            max_points_per_sweep: 100_000_000,
        }
    }
}

/// Errors that stop the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database could not be opened or read.
    #[error("{path}: {source}")]
    Store {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// The data folder could not be created.
    #[error("{path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Listening beyond loopback without a token would let anyone in.
    #[error(
        "listening on {0} (not loopback) needs a token: set RIDGELINE_TOKEN or token_file, or listen on 127.0.0.1"
    )]
    Insecure(std::net::SocketAddr),
    /// The TLS settings are unusable.
    #[error("TLS: {0}")]
    Tls(#[from] NetError),
}

/// The database file inside a data folder.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ridgeline.db")
}

/// The folder of a sweep's files.
pub fn sweep_dir(data_dir: &Path, sweep: &SweepId) -> PathBuf {
    data_dir.join("sweeps").join(sweep.as_str())
}

/// The folder holding a unit's artifacts (a trial's `model.safetensors` and
/// `model.json`, a tile's `tile.f64`).
pub fn trial_dir(data_dir: &Path, sweep: &SweepId, trial: u32) -> PathBuf {
    sweep_dir(data_dir, sweep)
        .join("trials")
        .join(format!("{trial:05}"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

mod artifacts;
mod event_loop;
mod logs;
mod queries;
mod scans;
mod secrets;
mod sweep_api;
mod worker_api;

use event_loop::{Event, EventLoop, Reply};
use sweep_api::SweepApi;
use worker_api::WorkerApi;

#[derive(Clone)]
struct Handle {
    tx: mpsc::Sender<Event>,
}

impl Handle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Event) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| Status::unavailable("coordinator is shutting down"))?;
        rx.await
            .map_err(|_| Status::unavailable("coordinator is shutting down"))?
    }
}

fn worker_id(s: &str) -> Result<WorkerId, Status> {
    if s.is_empty() {
        return Err(Status::invalid_argument("worker_id: required"));
    }
    Ok(WorkerId(s.to_owned()))
}

/// Sweep ids become folder names: only the characters the coordinator itself uses.
fn sweep_id(s: &str) -> Result<SweepId, Status> {
    if s.is_empty() {
        return Err(Status::invalid_argument("sweep_id: required"));
    }
    let ok = s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(Status::invalid_argument(format!(
            "sweep_id: {s:?} is not a sweep id"
        )));
    }
    Ok(SweepId(s.to_owned()))
}

/// Runs the coordinator on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    cfg: CoordinatorConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    if let Ok(a) = listener.local_addr() {
        if !a.ip().is_loopback() && cfg.security.token.is_none() {
            return Err(ServeError::Insecure(a));
        }
    }
    let tls = server_tls(&cfg.security)?;
    let el = EventLoop::open(&cfg)?;
    let (tx, rx) = mpsc::channel(4096);
    let thread = std::thread::Builder::new()
        .name("ridgeline-core".into())
        .spawn(move || el.run(rx))
        .expect("spawning the core thread");
    let h = Handle { tx };
    // At least every second: ticks also refresh the gauges, which vanish when stale.
    let tick_every = Duration::from_millis((cfg.core.heartbeat_interval_ms / 2).clamp(50, 1000));
    let ticker = {
        let h = h.clone();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(tick_every);
            loop {
                iv.tick().await;
                if h.tx.send(Event::Tick).await.is_err() {
                    break;
                }
            }
        })
    };
    let addr = listener.local_addr().map_err(|source| ServeError::Io {
        path: cfg.data_dir.clone(),
        source,
    })?;
    // Workers and scripts on a shared file system can find the coordinator here, which
    // also makes `--listen host:0` (any free port) usable.
    let addr_file = cfg.data_dir.join("coordinator.addr");
    crate::fsafe::write_atomic(&addr_file, format!("{addr}\n").as_bytes()).map_err(|source| {
        ServeError::Io {
            path: addr_file.clone(),
            source,
        }
    })?;
    info!(%addr, data_dir = %cfg.data_dir.display(), "coordinator listening");
    let workers = worker_service_server::WorkerServiceServer::new(WorkerApi {
        h: h.clone(),
        cfg: cfg.core.clone(),
        data_dir: cfg.data_dir.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let sweeps = sweep_service_server::SweepServiceServer::new(SweepApi {
        h,
        data_dir: cfg.data_dir.clone(),
        limits: cfg.limits.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // Small request/response messages: without TCP_NODELAY, Nagle's algorithm and
    // delayed ACKs add ~40 ms to every exchange.
    let incoming = TcpListenerStream::new(listener).map(|s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    });
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    // Every RPC of both services needs the token, when one is set.
    let check = RequireToken::new(cfg.security.token.as_deref());
    if let Some(r) = &cfg.ready {
        r.set(true);
    }
    let result = builder
        .layer(crate::telemetry::RpcMetricsLayer)
        .add_service(InterceptedService::new(workers, check.clone()))
        .add_service(InterceptedService::new(sweeps, check))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    if let Some(r) = &cfg.ready {
        r.set(false);
    }
    ticker.abort();
    let _ = ticker.await;
    // The services (and their senders) are dropped with the server: the loop drains
    // what is queued, commits, and ends.
    if tokio::task::spawn_blocking(move || thread.join())
        .await
        .is_err()
    {
        warn!("core thread panicked");
    }
    result.map_err(ServeError::from)
}

/// Parameters of the best trial, for printing.
pub fn describe_params(p: &Params) -> String {
    p.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}
