//! `ridgeline download` from a coordinator in another process with its own data folder:
//! every file of a scan and of a search arrives byte for byte, a connection dropped in
//! the middle of a checkpoint is picked up from the byte it stopped at, and a download
//! stopped for good is resumed by the next run.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;

/// Every file under `held` is under `got` with the same bytes; returns how many.
fn assert_same_files(held: &Path, got: &Path) -> usize {
    let files = files_under(held);
    assert!(!files.is_empty());
    for f in &files {
        let a = std::fs::read(held.join(f)).unwrap();
        let b =
            std::fs::read(got.join(f)).unwrap_or_else(|e| panic!("{}: {e}", got.join(f).display()));
        assert!(a == b, "{} differs", f.display());
    }
    files.len()
}

/// A TCP proxy to `upstream`. The connections numbered in `cut` (0 = the first) are
/// closed once `limit` bytes have gone from the coordinator to the client; the others
/// pass untouched. Counts every byte sent to clients.
struct Proxy {
    addr: String,
    to_client: Arc<AtomicU64>,
}

fn proxy(upstream: &str, cut: fn(usize) -> bool, limit: u64) -> Proxy {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let to_client = Arc::new(AtomicU64::new(0));
    let upstream = upstream.to_owned();
    let count = to_client.clone();
    let conns = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(client) = c else { return };
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let n = conns.fetch_add(1, Ordering::SeqCst);
            let limit = if cut(n) { limit } else { u64::MAX };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || pipe(c2, s2, u64::MAX, None));
            let count = count.clone();
            std::thread::spawn(move || pipe(server, client, limit, Some(count)));
        }
    });
    Proxy {
        addr: format!("http://{addr}"),
        to_client,
    }
}

/// Copies `from` to `to` until either ends or `limit` bytes have passed, then closes
/// both directions.
fn pipe(mut from: TcpStream, mut to: TcpStream, limit: u64, count: Option<Arc<AtomicU64>>) {
    let mut buf = [0u8; 16 * 1024];
    let mut sent = 0u64;
    while sent < limit {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n.min((limit - sent) as usize),
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        if let Some(c) = &count {
            c.fetch_add(n as u64, Ordering::SeqCst);
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// A two-trial search whose checkpoints are large enough (about 4.5 MB, five chunks)
/// to be cut in the middle.
fn big_search(dir: &Path) -> PathBuf {
    let p = dir.join("big.toml");
    std::fs::write(
        &p,
        format!(
            r#"
name = "big"
[data]
path = "{}"
limit = 200
[model]
depth = 2
width = 1024
[train]
epochs = 1
[search]
algorithm = "grid"
[search.space]
lr = {{ type = "grid", values = [1e-3, 3e-3] }}
"#,
            root().join("examples/data/digits.csv.gz").display()
        ),
    )
    .unwrap();
    p
}

fn download(url: &str, sweep: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "download",
        sweep,
        "--coordinator",
        url,
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args, Duration::from_secs(300))
}

fn ok(o: std::process::Output) -> (String, String) {
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "download failed: {out}\n{err}");
    (out, err)
}

#[test]
fn downloads_are_byte_identical_and_resume_after_dropped_connections() {
    let tmp = KeptOnFailure::new();
    let data = tmp.path().join("coordinator-data");
    std::fs::create_dir_all(&data).unwrap();
    let (_c, url) = coordinator(&data, &["--metrics-listen", "off"]);
    let _w = worker(
        tmp.path(),
        &url,
        "w",
        &["--slots", "2", "--metrics-listen", "off"],
    );
    let addr = url.trim_start_matches("http://").to_owned();

    // A scan: surface.npy, the other arrays, plots, meta.json, the units' tiles.
    let scan = submit_wait(
        &scan_fixture(tmp.path(), 0, 9, 7, 16),
        &url,
        Duration::from_secs(300),
    );
    let got = tmp.path().join("scan");
    let (out, _) = ok(download(&url, &scan, &got, &[]));
    let held = data.join("sweeps").join(&scan);
    let n = assert_same_files(&held, &got);
    assert!(got.join("surface.npy").exists() && got.join("contour.png").exists());
    assert!(out.contains(&format!("{n} files")), "{out}");
    // A second run finds everything there and fetches nothing.
    let (out, _) = ok(download(&url, &scan, &got, &[]));
    assert!(
        out.contains("0 B fetched") && out.contains(&format!("{n} already here")),
        "{out}"
    );

    // A search: checkpoints, plus results.csv and results.json made from its results.
    let search = submit_wait(&big_search(tmp.path()), &url, Duration::from_secs(600));
    let held = data.join("sweeps").join(&search);
    let ckpt = held.join("trials/00000/model.safetensors");
    let size = std::fs::metadata(&ckpt).unwrap().len();
    assert!(
        size > 4 << 20,
        "checkpoint of {size} bytes: too small to cut"
    );
    let total: u64 = files_under(&held)
        .iter()
        .map(|f| std::fs::metadata(held.join(f)).unwrap().len())
        .sum();

    // The first connection breaks 2.5 MB in (inside the first checkpoint); the
    // download reconnects and goes on from where it stopped.
    let p = proxy(&addr, |n| n == 0, 5 << 19);
    let got = tmp.path().join("search");
    let (_, err) = ok(download(&p.addr, &search, &got, &[]));
    assert!(
        err.contains("connection lost at byte") && err.contains("reconnecting"),
        "{err}"
    );
    assert_same_files(&held, &got);
    let csv = std::fs::read_to_string(got.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(got.join("results.json").exists());
    let through = p.to_client.load(Ordering::SeqCst);
    assert!(
        through < total + (1 << 20),
        "{through} bytes sent for {total}: the broken file was fetched again from the start"
    );

    // Every connection breaks: the first run gives up (the part it has stays), the next
    // one, with a working connection, continues it instead of starting over.
    let p = proxy(&addr, |_| true, 5 << 19);
    let got = tmp.path().join("search-again");
    let o = download(&p.addr, &search, &got, &["--retries", "0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("run the same command again to resume"),
        "{err}"
    );
    let parts: Vec<PathBuf> = files_under(&got)
        .into_iter()
        .filter(|f| f.to_string_lossy().ends_with(".part"))
        .collect();
    assert_eq!(parts.len(), 1, "{parts:?}");
    let (out, err) = ok(download(&url, &search, &got, &[]));
    let at: u64 = err
        .lines()
        .find_map(|l| l.strip_prefix("resuming trials/00000/model.safetensors at byte "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no resume: {err}"));
    assert!(at > 0 && at < size, "{at}");
    assert!(out.contains("1 resumed"), "{out}");
    assert_same_files(&held, &got);
    assert!(
        files_under(&got)
            .iter()
            .all(|f| !f.to_string_lossy().ends_with(".part"))
    );

    // One trial, and the best one with its parameters.
    let one = tmp.path().join("one");
    ok(download(&url, &search, &one, &["--trial", "1"]));
    assert_eq!(
        files_under(&one),
        [
            PathBuf::from("trials/00001/model.json"),
            PathBuf::from("trials/00001/model.safetensors")
        ]
    );
    let best = tmp.path().join("best");
    let (said, _) = ok(download(&url, &search, &best, &["--best"]));
    // The count said is the files written (params.json included).
    let written = files_under(&best).len();
    assert!(
        said.contains(&format!(": {written} files in ")),
        "{said} vs {written}"
    );
    let st = run_ok(
        &["status", &search, "--coordinator", &url],
        Duration::from_secs(30),
    );
    let b: u32 = st
        .split("(trial ")
        .nth(1)
        .and_then(|s| s.split(')').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{st}"));
    assert_eq!(
        std::fs::read(best.join("best/model.safetensors")).unwrap(),
        std::fs::read(held.join(format!("trials/{b:05}/model.safetensors"))).unwrap()
    );
    let params: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(best.join("best/params.json")).unwrap())
            .unwrap();
    assert!(params["lr"].as_f64().is_some(), "{params}");

    // Unknown sweeps and trials are clear errors.
    let o = download(&url, "nope-000000", &tmp.path().join("x"), &[]);
    assert!(!o.status.success());
    let o = download(&url, &search, &tmp.path().join("y"), &["--trial", "7"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("trial 7 has no files"),
        "{err}"
    );
}
