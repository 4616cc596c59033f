//! The metrics port of each role: `/metrics`, `/healthz` and `/readyz`.
//!
//! On by default for `coordinator` (port 9871, on the host it listens on) and `worker`
//! (port 9872, every interface: Prometheus scrapes it from elsewhere); off for `run`
//! unless `--metrics-listen` asks. `off` turns it off anywhere. When the *default*
//! port is taken (two workers on one node), the role takes any free port and logs it
//! rather than refusing to start; an address given explicitly must be free.

use std::path::Path;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tracing::warn;

use ridgeline_common::telemetry::{self, Readiness};

/// The coordinator's default metrics port.
pub const COORDINATOR_PORT: u16 = 9871;
/// A worker's default metrics port.
pub const WORKER_PORT: u16 = 9872;

/// Which metrics a process exports.
pub struct Roles {
    /// The coordinator's (its counters start at zero).
    pub coordinator: bool,
}

/// Where to listen: the setting (`off` for nowhere), else `default` (`None`: off).
fn resolve(setting: Option<&str>, default: Option<String>) -> Option<(String, bool)> {
    match setting {
        Some("off") => None,
        Some(a) => Some((a.to_owned(), false)),
        None => default.map(|d| (d, true)),
    }
}

/// Starts the metrics port, if wanted; returns the readiness the roles report to and
/// the address bound. The port serves until the process ends.
pub async fn start(
    setting: Option<&str>,
    default: Option<String>,
    roles: Roles,
) -> Result<Option<(Readiness, std::net::SocketAddr)>> {
    let Some((addr, is_default)) = resolve(setting, default) else {
        return Ok(None);
    };
    let listener = match TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) if is_default && e.kind() == std::io::ErrorKind::AddrInUse => {
            let host = addr.rsplit_once(':').map_or("0.0.0.0", |(h, _)| h);
            let l = TcpListener::bind(format!("{host}:0"))
                .await
                .with_context(|| format!("metrics: listen on {host}:0"))?;
            warn!(
                "metrics: default address {addr} is taken; serving on {} instead",
                l.local_addr()?
            );
            l
        }
        Err(e) => {
            return Err(e).with_context(|| format!("metrics: listen on {addr} (--metrics-listen)"));
        }
    };
    let bound = listener.local_addr()?;
    let histograms = [
        ridgeline_coordinator::telemetry::HISTOGRAMS,
        ridgeline_worker::telemetry::HISTOGRAMS,
    ]
    .concat();
    let handle = telemetry::install(&histograms);
    if roles.coordinator {
        ridgeline_coordinator::telemetry::describe();
    }
    ridgeline_worker::telemetry::describe();
    let ready = Readiness::default();
    tokio::spawn(telemetry::serve(
        listener,
        handle,
        ready.clone(),
        std::future::pending(),
    ));
    Ok(Some((ready, bound)))
}

/// The coordinator's default metrics address: its own listening host, port 9871.
pub fn coordinator_default(listen: &str) -> String {
    let host = listen.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
    format!("{host}:{COORDINATOR_PORT}")
}

/// Records where the coordinator's metrics are, next to `coordinator.addr`.
pub fn write_addr(data_dir: &Path, addr: std::net::SocketAddr) -> Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let p = data_dir.join("metrics.addr");
    std::fs::write(&p, format!("{addr}\n")).with_context(|| format!("write {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_defaults_and_explicit_addresses() {
        assert_eq!(resolve(Some("off"), Some("x:1".into())), None);
        assert_eq!(resolve(None, None), None);
        assert_eq!(
            resolve(None, Some("x:1".into())),
            Some(("x:1".into(), true))
        );
        assert_eq!(
            resolve(Some("127.0.0.1:0"), None),
            Some(("127.0.0.1:0".into(), false))
        );
        assert_eq!(coordinator_default("0.0.0.0:50051"), "0.0.0.0:9871");
        assert_eq!(coordinator_default("[::1]:50051"), "[::1]:9871");
    }
}
