//! Layered settings: built-in defaults, then a TOML file (`--config FILE`, or
//! `ridgeline.toml` in the working folder when present), then `RIDGELINE_*` environment
//! variables, then command-line flags.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

/// Every setting any verb uses.
#[derive(Clone, Debug, Deserialize)]
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
        }
    }
}

impl Settings {
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
        b = b.add_source(config::Environment::with_prefix("RIDGELINE").try_parsing(true));
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
}
