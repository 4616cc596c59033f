//! Real faults: a coordinator whose data folder becomes unwritable mid-sweep (run as an
//! unprivileged user, since root ignores file modes), and scan tiles far larger than a
//! worker's memory.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn chmod_recursive(dir: &Path, writable: bool) {
    let mode = if writable { "u+w" } else { "a-w" };
    let st = Command::new("chmod")
        .args(["-R", mode])
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Item 1: while the data folder is read-only, results cannot be persisted; nothing is
/// acknowledged, the core does not advance, and every result arrives once the folder is
/// writable again: status, database and files agree, with whole histories.
#[test]
fn an_unwritable_data_dir_loses_nothing() {
    const TRIALS: u64 = 48;
    const EPOCHS: u64 = 30;
    let dir = KeptOnFailure::new();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let root_user = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    let mut cmd = if root_user {
        // Root writes through any mode bits: run the coordinator as `nobody`, from a copy
        // of the binary it can surely read.
        use std::os::unix::fs::PermissionsExt;
        let exe = dir.path().join("ridgeline");
        std::fs::copy(bin(), &exe).unwrap();
        for p in [dir.path(), exe.as_path()] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(exe);
        c
    } else {
        Command::new(bin())
    };
    let log = std::fs::File::create(dir.path().join("coordinator.log")).unwrap();
    let child = cmd
        .args(["coordinator", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .args(["--lease-ttl-ms", "3000", "--heartbeat-interval-ms", "200"])
        .args(["--max-attempts", "1000"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let _coord = Proc {
        child,
        name: "coordinator".into(),
    };
    let addr = wait_for_file(&data.join("coordinator.addr"), Duration::from_secs(30));
    let url = format!("http://{addr}");
    let _w1 = worker(dir.path(), &url, "w1", &["--slots", "2"]);
    let _w2 = worker(dir.path(), &url, "w2", &["--slots", "2"]);
    let spec = digits_spec(dir.path(), "ro", TRIALS as u32, EPOCHS as u32);
    let id = submit(&spec, &url);
    let completed = || -> u64 {
        let s = run_ok(
            &["status", &id, "--coordinator", &url],
            Duration::from_secs(30),
        );
        s.split(": ")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap()
            .parse()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while completed() < 4 {
        assert!(Instant::now() < deadline, "the sweep never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    chmod_recursive(&data, false);
    std::thread::sleep(Duration::from_secs(4));
    // A status asked while commits fail may itself be refused (it would otherwise show
    // what the database does not hold): that is an answer, not a hang.
    let during = run(
        &["status", &id, "--coordinator", &url],
        Duration::from_secs(30),
    );
    chmod_recursive(&data, true);
    if !during.status.success() {
        let err = String::from_utf8_lossy(&during.stderr);
        assert!(err.contains("Permission denied"), "{err}");
    }
    let log = std::fs::read_to_string(dir.path().join("coordinator.log")).unwrap();
    assert!(
        log.contains("could not persist a batch"),
        "the fault never hit a commit"
    );
    let st = run_ok(
        &["watch", &id, "--coordinator", &url],
        Duration::from_secs(300),
    );
    assert!(
        st.contains(&format!("completed: {TRIALS}/{TRIALS} trials completed")),
        "{st}"
    );
    let json = run_ok(
        &["results", &id, "--coordinator", &url, "--format", "json"],
        Duration::from_secs(30),
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let trials = v["trials"].as_array().unwrap();
    assert_eq!(trials.len() as u64, TRIALS);
    assert_whole_histories(&v, EPOCHS);
    for t in trials {
        assert_eq!(t["state"], "completed", "{t}");
        assert!(t["metrics"]["val_accuracy"].as_f64().is_some(), "{t}");
        let ckpt = Path::new(t["checkpoint_dir"].as_str().unwrap());
        assert!(ckpt.join("model.safetensors").is_file(), "{t}");
    }
    // Results come in pages: pages of 7 put together are exactly what the CLI printed.
    let paged = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use ridgeline_common::proto;
        let mut c = proto::sweep_service_client::SweepServiceClient::connect(url.clone())
            .await
            .unwrap();
        let (mut all, mut token, mut pages) = (Vec::new(), String::new(), 0);
        loop {
            let r = c
                .get_results(proto::GetResultsRequest {
                    sweep_id: id.clone(),
                    page_size: 7,
                    page_token: token,
                })
                .await
                .unwrap()
                .into_inner();
            assert!(r.trials.len() <= 7);
            pages += 1;
            all.extend(r.trials);
            if r.next_page_token.is_empty() {
                return (all, pages);
            }
            token = r.next_page_token;
        }
    });
    assert_eq!(paged.1, TRIALS.div_ceil(7));
    let indices: Vec<u64> = paged.0.iter().map(|t| u64::from(t.trial_index)).collect();
    assert_eq!(indices, (0..TRIALS).collect::<Vec<_>>());
    for (p, t) in paged.0.iter().zip(trials) {
        assert_eq!(p.history.len() as u64, EPOCHS, "{t}");
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Item 6: a 65,536-point tile, whose batched evaluation would need ~3.4 GB at once,
/// runs in chunks within a 16 MiB budget and gives the same surface as tiles that fit;
/// a unit that cannot fit at all is reported as out of memory, once, and the worker
/// lives on.
#[test]
fn oversized_tiles_fit_the_worker_or_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let huge = scan_fixture(dir.path(), 64, 256, 256, 65_536);
    let fit = dir.path().join("fit.toml");
    std::fs::write(
        &fit,
        std::fs::read_to_string(&huge)
            .unwrap()
            .replace("tile = 65536", "tile = 8192")
            .replace("name = \"linreg-scan\"", "name = \"fits\""),
    )
    .unwrap();
    let (_coord, url) = coordinator(dir.path(), &[]);
    // `watch` fails when units failed for good; the oom sweep below does.
    let wait = |spec: &Path| {
        let id = submit(spec, &url);
        let o = run(
            &["watch", &id, "--coordinator", &url],
            Duration::from_secs(300),
        );
        let st =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        (id, st)
    };

    let small = worker(dir.path(), &url, "small", &["--memory-bytes", "16777216"]);
    let (huge_id, st) = wait(&huge);
    assert!(
        st.contains("completed: ") && st.contains(" points in 1/1 tiles"),
        "{st}"
    );
    let peak = peak_rss_kib(small.child.id());
    assert!(peak < 400 * 1024, "peak RSS {peak} KiB for a 16 MiB budget");
    drop(small);

    let roomy = worker(dir.path(), &url, "roomy", &[]);
    let (fit_id, st) = wait(&fit);
    assert!(
        st.contains("completed: ") && st.contains(" points in 8/8 tiles"),
        "{st}"
    );
    let surface = |id: &str| {
        let b = std::fs::read(dir.path().join("sweeps").join(id).join("surface.npy")).unwrap();
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        b[10 + hl..]
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect::<Vec<f64>>()
    };
    let (a, b) = (surface(&huge_id), surface(&fit_id));
    assert_eq!(a.len(), 65_536);
    for (k, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-6 * y.abs().max(1.0),
            "point {k}: {x} in chunks vs {y}"
        );
    }
    drop(roomy);

    let mut tiny = worker(dir.path(), &url, "tiny", &["--memory-bytes", "1000"]);
    let oom = dir.path().join("oom.toml");
    std::fs::write(
        &oom,
        std::fs::read_to_string(&huge)
            .unwrap()
            .replace("name = \"linreg-scan\"", "name = \"oom\""),
    )
    .unwrap();
    let (oom_id, st) = wait(&oom);
    assert!(
        st.contains("failed: 0/") && st.contains(" points in 0/1 tiles (1 failed)"),
        "{st}"
    );
    assert!(st.contains("1 of 1 units failed:"), "{st}");
    assert!(st.contains("1 x out of memory: "), "{st}");
    let json = run_ok(
        &[
            "results",
            &oom_id,
            "--coordinator",
            &url,
            "--format",
            "json",
        ],
        Duration::from_secs(30),
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let t = &v["trials"][0];
    assert!(
        t["error"].as_str().unwrap().starts_with("out of memory: "),
        "{t}"
    );
    assert_eq!(t["attempts"], 1, "out of memory is not retried: {t}");
    assert!(
        tiny.child.try_wait().unwrap().is_none(),
        "the worker is alive"
    );
}
