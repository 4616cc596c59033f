//! `ridgeline download`: a sweep's files from a coordinator anywhere, over the same gRPC
//! connection as every other verb.
//!
//! Resumable in two ways. Within one run, a dropped connection is reopened and the file
//! is asked for again from the byte it stopped at. Across runs, a file being fetched
//! lives as `.NAME.VERSION.part` beside its destination, and a later run continues it
//! (the version in the name guarantees the bytes kept belong to the same file). A
//! finished file gets the coordinator's modification time, so a later run skips files
//! it already has, as rsync's quick check does.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ridgeline_common::net::Security;
use ridgeline_common::params::params_from_proto;
use ridgeline_common::proto;

use crate::client::{self, Client};
use crate::results;

/// Which files of a sweep.
#[derive(Clone, Copy, Debug)]
pub enum Which {
    /// Everything, plus results.csv and results.json for a search.
    All,
    /// One trial's (unit's) folder, kept at `trials/NNNNN/`.
    Trial(u32),
    /// The best trial's checkpoint, in `best/` with its `params.json`.
    Best,
}

/// Where to fetch from and how hard to try.
pub struct Source<'a> {
    pub url: &'a str,
    pub security: &'a Security,
    pub timeout: Duration,
    /// Reconnections in a row that may fail to move a file forward before giving up.
    pub retries: u32,
}

/// What a download did.
#[derive(Debug, Default)]
pub struct Summary {
    pub files: usize,
    pub fetched_bytes: u64,
    pub skipped: usize,
    pub resumed: usize,
}

/// Downloads `sweep`'s files into `out`.
pub async fn download(src: &Source<'_>, sweep: &str, which: Which, out: &Path) -> Result<Summary> {
    let mut c = client::connect(src.url, src.security, src.timeout).await?;
    let (trial, best) = match which {
        Which::All => (None, false),
        Which::Trial(n) => (Some(n), false),
        Which::Best => (None, true),
    };
    let list = c
        .list_artifacts(proto::ListArtifactsRequest {
            sweep_id: sweep.to_owned(),
            trial,
            best,
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    if let Which::Trial(n) = which {
        if list.files.is_empty() {
            bail!("sweep {sweep}: trial {n} has no files on the coordinator");
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let total: u64 = list.files.iter().map(|f| f.size).sum();
    let bar = progress_bar(total);
    let mut sum = Summary {
        files: list.files.len(),
        ..Default::default()
    };
    for f in &list.files {
        let dest = out.join(local_path(&f.path, which)?);
        if is_current(&dest, f) {
            sum.skipped += 1;
            bar.inc(f.size);
            continue;
        }
        let (got, resumed) = fetch(&mut c, src, sweep, f, &dest, &bar).await?;
        sum.fetched_bytes += got;
        sum.resumed += usize::from(resumed);
    }
    bar.finish_and_clear();
    match which {
        // Files made here from the results count among the files written.
        Which::All => sum.files += write_results(&mut c, sweep, out, &list.files).await?,
        Which::Best => {
            let st = c
                .get_status(proto::GetStatusRequest {
                    sweep_id: sweep.to_owned(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            if let Some(b) = st.best {
                let params = params_from_proto(&b.params).map_err(anyhow::Error::msg)?;
                std::fs::write(
                    out.join("best/params.json"),
                    serde_json::to_string_pretty(&params)? + "\n",
                )?;
                sum.files += 1;
            }
        }
        Which::Trial(_) => {}
    }
    Ok(sum)
}

/// A chunk that arrived at byte `at` of a file listed as `listed` bytes: what the file
/// may take of it. A coordinator that sends more than it listed is refused (no download
/// grows past what the user was told).
fn within_listed(listed: u64, at: u64, chunk: &[u8]) -> Result<&[u8], String> {
    if at.saturating_add(chunk.len() as u64) > listed {
        return Err(format!(
            "the coordinator sent more than the {listed} bytes it listed; not kept"
        ));
    }
    Ok(chunk)
}

/// The deepest path a download writes: a sweep's files sit a few folders down
/// (trials/NNNNN/...); a listing that asks for more is refused.
const MAX_DEPTH: usize = 16;

/// Where a listed file goes under the output folder. The coordinator's paths are
/// checked again here: a client never writes outside the folder it was given, nor
/// deeper than [`MAX_DEPTH`].
fn local_path(rel: &str, which: Which) -> Result<PathBuf> {
    let mut p = PathBuf::new();
    let mut parts: Vec<&str> = rel.split('/').collect();
    if parts.len() > MAX_DEPTH {
        bail!(
            "the coordinator listed a path {} folders deep (at most {MAX_DEPTH}): {:?}...",
            parts.len(),
            rel.chars().take(60).collect::<String>()
        );
    }
    if let Which::Best = which {
        // trials/NNNNN/model.safetensors -> best/model.safetensors
        parts.drain(..2.min(parts.len().saturating_sub(1)));
        p.push("best");
    }
    for part in parts {
        if part.is_empty() || part.starts_with('.') || part.contains('\\') {
            bail!("the coordinator listed an unusable path {rel:?}");
        }
        p.push(part);
    }
    Ok(p)
}

/// A finished earlier download of the same version.
fn is_current(dest: &Path, f: &proto::ArtifactInfo) -> bool {
    std::fs::metadata(dest).is_ok_and(|m| m.len() == f.size && mtime_ns(&m) == Some(f.version))
}

fn mtime_ns(m: &std::fs::Metadata) -> Option<u64> {
    let t = m.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some(t.as_nanos() as u64)
}

fn part_path(dest: &Path, version: u64) -> PathBuf {
    let name = dest.file_name().expect("a file").to_string_lossy();
    dest.with_file_name(format!(".{name}.{version}.part"))
}

/// Leftovers of earlier downloads of other versions of `dest`.
fn stale_parts(dest: &Path, version: u64) -> Vec<PathBuf> {
    let name = dest.file_name().expect("a file").to_string_lossy();
    let prefix = format!(".{name}.");
    let keep = part_path(dest, version);
    let Some(dir) = dest.parent() else {
        return vec![];
    };
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with(&prefix) && n.ends_with(".part") && *p != keep
        })
        .collect()
}

/// Fetches one file into its `.part` file, reconnecting after dropped connections, then
/// moves it into place. Returns the bytes fetched and whether an earlier part was used.
async fn fetch(
    c: &mut Client,
    src: &Source<'_>,
    sweep: &str,
    f: &proto::ArtifactInfo,
    dest: &Path,
    bar: &ProgressBar,
) -> Result<(u64, bool)> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    for p in stale_parts(dest, f.version) {
        let _ = std::fs::remove_file(p);
    }
    let part = part_path(dest, f.version);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&part)
        .with_context(|| format!("open {}", part.display()))?;
    let mut offset = file.metadata()?.len();
    if offset > f.size {
        file.set_len(0)?;
        offset = 0;
    }
    let resumed = offset > 0;
    if resumed {
        bar.suspend(|| eprintln!("resuming {} at byte {offset} of {}", f.path, f.size));
    }
    bar.inc(offset);
    let start = offset;
    let mut failures = 0u32;
    let mut backoff = Duration::from_millis(200);
    while offset < f.size {
        let before = offset;
        match read_from(c, sweep, f, offset, &mut file, bar).await {
            Ok(n) => {
                offset += n;
                // A stream that ends cleanly short of the listed size is a file that
                // changed under the coordinator: asking again would not help.
                if offset < f.size {
                    file.sync_all()?;
                    bail!(
                        "{}: the coordinator sent {offset} of {} bytes; run the same command again",
                        f.path,
                        f.size
                    );
                }
            }
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Dropped(n, why)) => {
                offset += n;
                if offset > before {
                    failures = 0;
                }
                failures += 1;
                if failures > src.retries {
                    file.sync_all()?;
                    bail!(
                        "{}: connection lost at byte {offset} of {} ({why}); run the same command again to resume",
                        f.path,
                        f.size
                    );
                }
                bar.suspend(|| {
                    eprintln!(
                        "{}: connection lost at byte {offset} of {} ({why}); reconnecting",
                        f.path, f.size
                    )
                });
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                if let Ok(nc) = client::connect(src.url, src.security, src.timeout).await {
                    *c = nc;
                }
            }
        }
    }
    file.sync_all()?;
    // The coordinator's time: a later run sees the file is current and skips it.
    file.set_modified(UNIX_EPOCH + Duration::from_nanos(f.version))
        .with_context(|| format!("set the time of {}", part.display()))?;
    drop(file);
    std::fs::rename(&part, dest).with_context(|| format!("move into {}", dest.display()))?;
    Ok((offset - start, resumed))
}

enum Failure {
    /// The connection broke after this many bytes were written: retry.
    Dropped(u64, String),
    /// The coordinator refused (gone sweep, changed file): retrying cannot help.
    Fatal(anyhow::Error),
}

/// Streams `f` from `offset` into `file`; returns the bytes written.
async fn read_from(
    c: &mut Client,
    sweep: &str,
    f: &proto::ArtifactInfo,
    offset: u64,
    file: &mut std::fs::File,
    bar: &ProgressBar,
) -> Result<u64, Failure> {
    let classify = |s: tonic::Status, n: u64| {
        if client::transient(&s) {
            Failure::Dropped(n, s.message().to_owned())
        } else if s.code() == tonic::Code::FailedPrecondition {
            Failure::Fatal(anyhow::anyhow!(
                "{}; run the same command again to fetch the new version",
                s.message()
            ))
        } else {
            Failure::Fatal(anyhow::anyhow!("{}: {}", f.path, s.message()))
        }
    };
    let mut stream = c
        .read_artifact(proto::ReadArtifactRequest {
            sweep_id: sweep.to_owned(),
            path: f.path.clone(),
            offset,
            version: f.version,
        })
        .await
        .map_err(|s| classify(s, 0))?
        .into_inner();
    let mut n = 0u64;
    loop {
        match stream.message().await {
            Ok(Some(chunk)) => {
                let data = within_listed(f.size, offset + n, &chunk.data)
                    .map_err(|e| Failure::Fatal(anyhow::anyhow!("{}: {e}", f.path)))?;
                file.write_all(data)
                    .map_err(|e| Failure::Fatal(anyhow::anyhow!("write {}: {e}", f.path)))?;
                n += data.len() as u64;
                bar.inc(data.len() as u64);
            }
            Ok(None) => return Ok(n),
            Err(s) => return Err(classify(s, n)),
        }
    }
}

/// A search's results.csv and results.json, made from its results when the coordinator
/// holds none (a coordinator writes them only for `run`).
async fn write_results(
    c: &mut Client,
    sweep: &str,
    out: &Path,
    files: &[proto::ArtifactInfo],
) -> Result<usize> {
    let r = client::results(c, sweep).await?;
    if r.status.as_ref().is_some_and(|s| s.kind == "landscape") {
        return Ok(0);
    }
    let mut written = 0;
    if !files.iter().any(|f| f.path == "results.csv") {
        std::fs::write(out.join("results.csv"), results::results_csv(&r)?)?;
        written += 1;
    }
    if !files.iter().any(|f| f.path == "results.json") {
        std::fs::write(out.join("results.json"), results::results_json(&r)?)?;
        written += 1;
    }
    if !files.iter().any(|f| f.path == "pareto.png")
        && let Some(Ok(())) = results::pareto_plot(&r, &out.join("pareto.png"))
    {
        written += 1;
    }
    if !files.iter().any(|f| f.path == "pbt.png")
        && let Some(Ok(())) = results::pbt_plot(&r, &out.join("pbt.png"))
    {
        written += 1;
    }
    Ok(written)
}

fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "[{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template"),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_stay_inside_the_output_folder() {
        assert_eq!(
            local_path("trials/00003/model.json", Which::All).unwrap(),
            PathBuf::from("trials/00003/model.json")
        );
        assert_eq!(
            local_path("trials/00003/model.json", Which::Best).unwrap(),
            PathBuf::from("best/model.json")
        );
        for bad in [
            "../x",
            "a/../../x",
            ".hidden",
            "a//b",
            "/etc/passwd",
            "a\\..\\b",
        ] {
            assert!(local_path(bad, Which::All).is_err(), "{bad}");
        }
        // 2,000 nested folders on a coordinator's say-so: refused.
        let deep = vec!["d"; 2000].join("/");
        assert!(local_path(&deep, Which::All).is_err());
        assert!(local_path(&vec!["d"; MAX_DEPTH].join("/"), Which::All).is_ok());
    }

    #[test]
    fn a_file_never_grows_past_its_listed_size() {
        assert_eq!(within_listed(10, 0, b"0123456789").unwrap(), b"0123456789");
        assert_eq!(within_listed(10, 6, b"6789").unwrap(), b"6789");
        // 64 MiB streamed for a file listed as 10 bytes.
        assert!(within_listed(10, 0, &vec![0u8; 1 << 20]).is_err());
        assert!(within_listed(10, 8, b"89x").is_err());
    }

    #[test]
    fn parts_of_other_versions_are_stale() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("surface.npy");
        std::fs::write(part_path(&dest, 7), b"old").unwrap();
        std::fs::write(part_path(&dest, 9), b"new").unwrap();
        std::fs::write(d.path().join(".other.npy.7.part"), b"x").unwrap();
        assert_eq!(stale_parts(&dest, 9), vec![part_path(&dest, 7)]);
    }
}
