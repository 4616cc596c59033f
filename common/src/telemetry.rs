//! Process-wide metrics and the small HTTP endpoint that serves them.
//!
//! Metrics are recorded through the `metrics` facade everywhere (a no-op until a
//! recorder is installed, so libraries and tests pay nothing). A process that exposes
//! them installs the Prometheus recorder once with [`install`] and serves
//! `GET /metrics`, `GET /healthz` and `GET /readyz` with [`serve`]: nothing else, no
//! other method, and no control operation, so the port can be opened to a scraper
//! without opening the coordinator.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

/// Gauges not set again for this long disappear from the exposition. Every gauge of a
/// live thing is refreshed at least every [`SAMPLE_EVERY`]; what stops being refreshed
/// (a sweep past its retention, a worker that left) is dropped, so a long-lived process
/// does not grow.
pub const GAUGE_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the process-level gauges (resident memory) are sampled and histograms
/// drained into their buckets.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// Resident memory of this process.
pub const PROCESS_RESIDENT_MEMORY: &str = "ridgeline_process_resident_memory_bytes";
/// When this process started (Unix time).
pub const PROCESS_START_TIME: &str = "ridgeline_process_start_time_seconds";

/// Bucket boundaries of a histogram, by metric name.
pub type Buckets = (&'static str, &'static [f64]);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's Prometheus recorder (once; later calls return the same
/// handle). `histograms` gives bucket boundaries per histogram name: a histogram
/// without them would be exported as a summary, which cannot be aggregated across
/// instances.
pub fn install(histograms: &[Buckets]) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let mut b = PrometheusBuilder::new()
                .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE_TIMEOUT));
            for (name, buckets) in histograms {
                b = b
                    .set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)
                    .expect("bucket lists are non-empty constants");
            }
            let recorder = b.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder)
                .expect("no other metrics recorder is installed in this process");
            metrics::describe_gauge!(
                PROCESS_RESIDENT_MEMORY,
                metrics::Unit::Bytes,
                "Resident set size of this process."
            );
            metrics::describe_gauge!(
                PROCESS_START_TIME,
                metrics::Unit::Seconds,
                "Start time of this process since the Unix epoch."
            );
            handle
        })
        .clone()
}

/// Resident set size of this process in bytes (Linux; `None` elsewhere).
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Host memory in bytes: `(in use, total)`, from `/proc/meminfo` (Linux).
pub fn host_memory_bytes() -> Option<(u64, u64)> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = info.lines().find(|l| l.starts_with(name))?;
        Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    Some((total.saturating_sub(available), total))
}

/// Readiness of the parts of a process: `/readyz` answers 200 only while every
/// registered part is ready (and at least one is registered).
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<Mutex<BTreeMap<String, bool>>>);

/// One part's readiness, set by the part itself.
#[derive(Clone, Debug)]
pub struct ReadyFlag {
    parts: Readiness,
    name: String,
}

impl Readiness {
    /// Registers a part, not ready yet.
    pub fn part(&self, name: &str) -> ReadyFlag {
        self.0
            .lock()
            .expect("readiness lock")
            .insert(name.to_owned(), false);
        ReadyFlag {
            parts: self.clone(),
            name: name.to_owned(),
        }
    }

    /// `Ok` when ready, else the names of the parts that are not.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let parts = self.0.lock().expect("readiness lock");
        let waiting: Vec<String> = parts
            .iter()
            .filter(|(_, ready)| !**ready)
            .map(|(n, _)| n.clone())
            .collect();
        if parts.is_empty() {
            return Err(vec!["nothing started yet".into()]);
        }
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(waiting)
        }
    }
}

impl ReadyFlag {
    /// Marks the part ready or not.
    pub fn set(&self, ready: bool) {
        if let Some(r) = self
            .parts
            .0
            .lock()
            .expect("readiness lock")
            .get_mut(&self.name)
        {
            *r = ready;
        }
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        content_type.parse().expect("static content type"),
    );
    r
}

/// Answers one request: GET of the three paths, nothing else.
fn route(
    method: &Method,
    path: &str,
    handle: &PrometheusHandle,
    ready: &Readiness,
) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: only GET /metrics, /healthz and /readyz are served\n",
        );
    }
    if method != Method::GET {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            format!("method {method} not allowed: this port serves GET only\n"),
        );
        r.headers_mut()
            .insert(ALLOW, "GET".parse().expect("static header"));
        return r;
    }
    match path {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            handle.render(),
        ),
        "/healthz" => reply(StatusCode::OK, TEXT, "ok\n"),
        _ => match ready.check() {
            Ok(()) => reply(StatusCode::OK, TEXT, "ready\n"),
            Err(waiting) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                format!("not ready: {}\n", waiting.join(", ")),
            ),
        },
    }
}

/// Connections the metrics port serves at once (Prometheus keeps one per target).
pub const MAX_CONNECTIONS: usize = 64;

/// Raises the soft limit on open files to the hard one (many hosts start processes at
/// 1,024), so that many workers, scrapes and log files do not run a coordinator out of
/// descriptors. Returns the limit in force.
pub fn raise_open_files_limit() -> Option<u64> {
    // SAFETY: getrlimit/setrlimit on this process with a zeroed struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return None;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r = want;
            }
        }
        Some(r.rlim_cur as u64)
    }
}

/// Serves the metrics port until `shutdown` resolves. Process-level gauges are sampled
/// on the side while it runs.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    ready: Readiness,
    shutdown: impl std::future::Future<Output = ()>,
) {
    if let Ok(a) = listener.local_addr() {
        info!("metrics, /healthz and /readyz on http://{a}");
    }
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let sampler = {
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SAMPLE_EVERY);
            loop {
                every.tick().await;
                if let Some(rss) = resident_memory_bytes() {
                    metrics::gauge!(PROCESS_RESIDENT_MEMORY).set(rss as f64);
                }
                metrics::gauge!(PROCESS_START_TIME).set(start);
                handle.run_upkeep();
            }
        })
    };
    let mut shutdown = std::pin::pin!(shutdown);
    // A bounded number of connections at once: past it, new ones wait in the kernel's
    // backlog instead of taking file descriptors the gRPC port needs.
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => p.expect("never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    warn!("metrics port: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (handle, ready) = (handle.clone(), ready.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let r = route(req.method(), req.uri().path(), &handle, &ready);
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                // A client that never finishes its headers is not kept forever.
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                debug!(%peer, "metrics connection: {e}");
            }
        });
    }
    sampler.abort();
}
