//! The devices a worker runs units on: opened from its `device` setting, described to
//! the coordinator at registration.

use candle_core::Device;
use ridgeline_common::proto;
use tracing::warn;

use crate::error::WorkerError;

/// Opens a device by name: `cpu`, or `cuda:N` in builds with the `cuda` feature.
pub fn open_device(name: &str) -> Result<Device, WorkerError> {
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    if let Some(n) = name
        .strip_prefix("cuda:")
        .or((name == "cuda").then_some("0"))
    {
        let ordinal: usize = n
            .parse()
            .map_err(|_| WorkerError::Device(name.into(), "expected cuda:N".into()))?;
        return Device::new_cuda(ordinal)
            .map_err(|e| WorkerError::Device(name.into(), e.to_string()));
    }
    Err(WorkerError::Device(
        name.into(),
        "expected cpu or cuda:N".into(),
    ))
}

/// Opens every device a worker's `device` setting names: `cpu`, `cuda:N`, a
/// comma-separated list, or `auto`. `auto` asks the build rather than the environment
/// (`CUDA_VISIBLE_DEVICES` says what a scheduler allocated, not whether this binary can
/// use it): it opens `cuda:0`, `cuda:1`, ... until one fails, and falls back to the CPU
/// when none opens (a CPU-only build, or no GPU visible).
pub fn open_devices(spec: &str) -> Result<Vec<(String, Device)>, WorkerError> {
    if spec.trim() == "auto" {
        let mut gpus = Vec::new();
        while let Ok(d) = Device::new_cuda(gpus.len()) {
            gpus.push((format!("cuda:{}", gpus.len()), d));
        }
        if gpus.is_empty() {
            if std::env::var("CUDA_VISIBLE_DEVICES").is_ok_and(|v| !v.is_empty()) {
                warn!(
                    "GPUs are allocated (CUDA_VISIBLE_DEVICES) but none opens in this build \
                     (built with the cuda feature: {}); running on the CPU",
                    cfg!(feature = "cuda")
                );
            }
            gpus.push(("cpu".to_owned(), Device::Cpu));
        }
        return Ok(gpus);
    }
    let names: Vec<&str> = spec.split(',').map(str::trim).collect();
    let mut out: Vec<(String, Device)> = Vec::with_capacity(names.len());
    for n in names {
        if out.iter().any(|(m, _)| m == n) {
            return Err(WorkerError::Device(
                spec.into(),
                format!("{n} is listed twice"),
            ));
        }
        out.push((n.to_owned(), open_device(n)?));
    }
    Ok(out)
}

/// A device as registration describes it.
pub fn describe(name: &str) -> proto::Device {
    let (kind, ordinal) = match name.split_once(':') {
        Some((k, n)) => (k.to_owned(), n.parse().unwrap_or(0)),
        None => (name.to_owned(), 0),
    };
    proto::Device {
        kind,
        ordinal,
        name: name.to_owned(),
        memory_bytes: 0,
    }
}

/// The device (index) running the fewest of the units `busy` lists by device; the
/// first of equals, so units fill GPUs in order.
pub fn least_busy(devices: usize, busy: impl Iterator<Item = usize>) -> usize {
    let mut load = vec![0usize; devices.max(1)];
    for d in busy {
        if let Some(n) = load.get_mut(d) {
            *n += 1;
        }
    }
    (0..load.len()).min_by_key(|&i| load[i]).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(spec: &str) -> Result<Vec<String>, String> {
        open_devices(spec)
            .map(|d| d.into_iter().map(|(n, _)| n).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn settings_name_devices_or_fail_clearly() {
        assert_eq!(names("cpu").unwrap(), ["cpu"]);
        let e = names("cpu, cpu").unwrap_err();
        assert!(e.contains("cpu is listed twice"), "{e}");
        let e = names("gpu").unwrap_err();
        assert!(e.contains("expected cpu or cuda:N"), "{e}");
        let e = names("cuda:x").unwrap_err();
        assert!(e.contains("expected cuda:N"), "{e}");
        let d = describe("cuda:3");
        assert_eq!(
            (d.kind.as_str(), d.ordinal, d.name.as_str()),
            ("cuda", 3, "cuda:3")
        );
        assert_eq!(describe("cpu").kind, "cpu");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn auto_falls_back_to_the_cpu_in_a_cpu_build_whatever_the_environment_says() {
        // A scheduler's CUDA_VISIBLE_DEVICES says GPUs were allocated, not that this
        // binary can use them: the build decides.
        assert_eq!(names("auto").unwrap(), ["cpu"]);
        let e = names("cuda:0").unwrap_err();
        assert!(e.starts_with("device cuda:0"), "{e}");
    }

    #[test]
    fn units_go_to_the_least_busy_device() {
        assert_eq!(least_busy(1, [].into_iter()), 0);
        assert_eq!(least_busy(4, [].into_iter()), 0);
        assert_eq!(least_busy(4, [0, 1].into_iter()), 2);
        assert_eq!(least_busy(3, [0, 0, 1, 2, 2].into_iter()), 1);
        assert_eq!(least_busy(2, [0, 1, 1].into_iter()), 0);
    }
}
