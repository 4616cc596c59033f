//! Layered settings: built-in defaults, then a TOML file (`--config FILE`, or
//! `ridgeline.toml` in the working folder when present), then `RIDGELINE_*` environment
//! variables, then command-line flags.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

/// Every setting any verb uses.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address the coordinator listens on.
    pub listen: String,
    /// Folder of the coordinator's database and artifacts.
    pub data_dir: PathBuf,
    /// URL clients and workers use to reach the coordinator.
    pub coordinator: String,
    /// Lease lifetime without a heartbeat.
    pub lease_ttl_ms: u64,
    /// Heartbeat period asked of workers.
    pub heartbeat_interval_ms: u64,
    /// Leases of a unit before it is failed.
    pub max_attempts: u32,
    /// Units a worker runs at once.
    pub slots: u32,
    /// Worker device: `cpu` or `cuda:N`.
    pub device: String,
    /// Shared token (prefer `token_file` or the RIDGELINE_TOKEN environment variable).
    pub token: Option<String>,
    /// File holding the shared token.
    pub token_file: Option<PathBuf>,
    /// PEM certificate: the coordinator's, or a client's for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Clients and workers: CA of the coordinator's certificate (use https:// URLs).
    pub tls_ca: Option<PathBuf>,
    /// Coordinator: require client certificates signed by this CA.
    pub tls_client_ca: Option<PathBuf>,
    /// Clients and workers: server name expected in the coordinator's certificate.
    pub tls_domain: Option<String>,
    /// Coordinator: largest spec accepted, in bytes.
    pub max_spec_bytes: usize,
    /// Coordinator: most grid points (scans) or trials (searches) in one sweep.
    pub max_points_per_sweep: u64,
    /// Worker: bytes one unit may use (default: half the available memory, split
    /// between the slots).
    pub memory_bytes: Option<u64>,
    /// Clients: seconds to wait for a coordinator to answer.
    pub timeout_s: u64,
    /// Address of the metrics port (`/metrics`, `/healthz`, `/readyz`), or `off`.
    /// Default: the coordinator's host, port 9871; workers 0.0.0.0:9872; off for `run`.
    pub metrics_listen: Option<String>,
    /// Coordinator: seconds a finished sweep's series stay in the metrics.
    pub metrics_retention_s: u64,
    /// Worker: where command trials keep their files (`RIDGELINE_TRIAL_DIR` is a folder
    /// under it). Put it on storage all workers share, and a trial re-run on another
    /// node finds what its earlier attempt saved. Default: `ridgeline-trials` (for
    /// `run`: `trial-dirs` in the data folder).
    pub trial_root: Option<PathBuf>,
}

/// The settings' names, as environment variables take them (`RIDGELINE_` + upper case).
const KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "coordinator",
    "lease_ttl_ms",
    "heartbeat_interval_ms",
    "max_attempts",
    "slots",
    "device",
    "token",
    "token_file",
    "tls_cert",
    "tls_key",
    "tls_ca",
    "tls_client_ca",
    "tls_domain",
    "max_spec_bytes",
    "max_points_per_sweep",
    "memory_bytes",
    "timeout_s",
    "metrics_listen",
    "metrics_retention_s",
    "trial_root",
];

/// The `RIDGELINE_*` variables that name a setting. Others (`RIDGELINE_BIN` in the Slurm
/// scripts, anything a site adds) are left alone rather than failing every command.
fn environment() -> config::Map<String, String> {
    std::env::vars()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix("RIDGELINE_")?.to_ascii_lowercase();
            KEYS.contains(&key.as_str()).then_some((key, v))
        })
        .collect()
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "127.0.0.1:50051".into(),
            data_dir: "ridgeline-data".into(),
            coordinator: "http://127.0.0.1:50051".into(),
            lease_ttl_ms: 10_000,
            heartbeat_interval_ms: 1_000,
            max_attempts: 3,
            slots: 1,
            device: "cpu".into(),
            token: None,
            token_file: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_client_ca: None,
            tls_domain: None,
            max_spec_bytes: 1 << 20,
            max_points_per_sweep: 100_000_000,
            memory_bytes: None,
            timeout_s: 10,
            metrics_listen: None,
            metrics_retention_s: ridgeline_coordinator::DEFAULT_METRICS_RETENTION_MS / 1000,
            trial_root: None,
        }
    }
}

impl Settings {
    /// Token and TLS settings, with the token read from `token_file` when given.
    pub fn security(&self) -> Result<ridgeline_common::net::Security> {
        let token = match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => anyhow::bail!("settings: set token or token_file, not both"),
            (Some(t), None) => Some(t.trim().to_owned()),
            (None, Some(f)) => {
                let t = std::fs::read_to_string(f)
                    .with_context(|| format!("token_file {}", f.display()))?;
                let t = t.trim().to_owned();
                anyhow::ensure!(
                    !t.is_empty(),
                    "token_file {}: the file is empty",
                    f.display()
                );
                Some(t)
            }
            (None, None) => None,
        };
        Ok(ridgeline_common::net::Security {
            token,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_client_ca: self.tls_client_ca.clone(),
            tls_domain: self.tls_domain.clone(),
        })
    }

    /// Defaults, then the file, then the environment. Flags are applied by the caller.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let mut b = config::Config::builder();
        match file {
            Some(f) => {
                anyhow::ensure!(f.exists(), "{}: settings file not found", f.display());
                b = b.add_source(config::File::from(f).format(config::FileFormat::Toml));
            }
            None => {
                b = b.add_source(
                    config::File::with_name("ridgeline.toml")
                        .format(config::FileFormat::Toml)
                        .required(false),
                )
            }
        }
        b = b.add_source(
            config::Environment::default()
                .source(Some(environment()))
                .try_parsing(true),
        );
        let where_ = file
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "ridgeline.toml / RIDGELINE_* environment".into());
        b.build()
            .and_then(|c| c.try_deserialize())
            .with_context(|| format!("settings ({where_})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.toml");
        std::fs::write(&f, "slots = 4\ndevice = \"cuda:1\"\n").unwrap();
        let s = Settings::load(Some(&f)).unwrap();
        assert_eq!(
            (s.slots, s.device.as_str(), s.max_attempts),
            (4, "cuda:1", 3)
        );
        std::fs::write(&f, "slotz = 4\n").unwrap();
        let e = format!("{:#}", Settings::load(Some(&f)).unwrap_err());
        assert!(e.contains("slotz"), "{e}");
    }

    #[test]
    fn every_setting_can_come_from_the_environment() {
        // The list of keys the environment may set and the struct's fields agree: a
        // field missing from KEYS could never be set by RIDGELINE_*.
        let fields = serde_json::to_value(Settings::default()).unwrap();
        let mut names: Vec<&str> = fields
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut keys = KEYS.to_vec();
        names.sort();
        keys.sort();
        assert_eq!(names, keys);
    }
}
