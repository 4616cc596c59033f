//! Limits the host sets and the coordinator's own: a worker under an address-space
//! rlimit sizes its work to it, a metrics port flooded with idle connections leaves the
//! gRPC port its descriptors, a database that a second coordinator cannot share, and
//! labels no model can have refused before any training.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Starts `ridgeline ARGS` under `prlimit LIMITS` (util-linux), logging to `name.log`.
fn spawn_limited(name: &str, limits: &[&str], args: &[&str], dir: &std::path::Path) -> Proc {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new("prlimit")
        .args(limits)
        .arg("--")
        .arg(bin())
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prlimit (util-linux) runs");
    Proc {
        child,
        name: name.into(),
    }
}

#[test]
fn a_worker_under_an_address_space_limit_sizes_its_tiles_to_it() {
    let dir = KeptOnFailure::new();
    // One 65,536-point tile: evaluated in one batch, as a worker that sized its units
    // from MemAvailable alone does, it aborts the worker under a 1 GiB address space.
    let huge = scan_fixture(dir.path(), 64, 256, 256, 65_536);
    let (_coord, url) = coordinator(dir.path(), &[]);
    let mut w = spawn_limited(
        "limited",
        &["--as=1073741824"],
        &["worker", "--coordinator", &url, "--name", "limited"],
        dir.path(),
    );
    let id = submit(&huge, &url);
    let st = run_ok(
        &["watch", &id, "--coordinator", &url],
        Duration::from_secs(300),
    );
    assert!(
        st.contains("completed: ") && st.contains(" points in 1/1 tiles"),
        "{st}"
    );
    assert!(w.child.try_wait().unwrap().is_none(), "the worker is alive");
    let log = std::fs::read_to_string(dir.path().join("limited.log")).unwrap();
    assert!(
        log.contains("RLIMIT_AS"),
        "the worker names the limit it sized from:\n{log}"
    );
}

/// Open descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn idle_metrics_connections_leave_the_grpc_port_alone() {
    let dir = KeptOnFailure::new();
    let dd = dir.path().to_str().unwrap();
    let _ = std::fs::remove_file(dir.path().join("coordinator.addr"));
    let coord = spawn_limited(
        "coordinator",
        &["--nofile=1024:8192"],
        &[
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dd,
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        dir.path(),
    );
    let addr = wait_for_file(
        &dir.path().join("coordinator.addr"),
        Duration::from_secs(30),
    );
    let metrics = wait_for_file(&dir.path().join("metrics.addr"), Duration::from_secs(30));
    let url = format!("http://{addr}");
    // The soft limit was raised to the hard one at start. (prlimit execs the binary:
    // its pid is the coordinator's.)
    let pid = coord.child.id();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(nums, ["8192", "8192"], "{line}");
    // Up to 1,100 idle connections to the metrics port, held open by another process.
    let (host, port) = metrics.rsplit_once(':').unwrap();
    let mut flood = Command::new("python3")
        .arg("-c")
        .arg(format!(
            r#"
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held, missed = [], 0
for _ in range(1100):
    try:
        held.append(socket.create_connection(("{host}", {port}), timeout=0.2))
    except OSError:
        # The listen backlog is full: the rest would wait the same way.
        missed += 1
        if missed > 10:
            break
print(len(held), flush=True)
sys.stdin.read()
"#
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(flood.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let held: usize = line.trim().parse().unwrap();
    // Connections past what the coordinator serves wait in the listen backlog.
    assert!(held > 120, "the flood opened {held} connections");
    // The coordinator took a bounded number of them; gRPC answers.
    let fds = open_fds(pid);
    eprintln!("{held} connections held, {fds} descriptors open in the coordinator");
    assert!(fds < 150, "{fds} descriptors open in the coordinator");
    let t = Instant::now();
    run_ok(&["status", "--coordinator", &url], Duration::from_secs(60));
    eprintln!("status under the flood took {:?}", t.elapsed());
    let log = std::fs::read_to_string(dir.path().join("coordinator.log")).unwrap();
    assert!(!log.contains("accept failed"), "{log}");
    flood.stdin.take().unwrap().write_all(b"").unwrap();
    let _ = flood.kill();
    let _ = flood.wait();
    drop(coord);
}

#[test]
fn the_database_belongs_to_one_coordinator_and_uses_no_shared_memory() {
    let dir = KeptOnFailure::new();
    let (_coord, url) = coordinator(dir.path(), &[]);
    let spec = digits_spec(dir.path(), "one", 2, 1);
    submit(&spec, &url);
    // No -shm file (the WAL index lives in the coordinator's memory): nothing for a
    // shared file system to get wrong between nodes.
    assert!(dir.path().join("ridgeline.db").exists());
    assert!(!dir.path().join("ridgeline.db-shm").exists());
    // A second coordinator on the same data folder is refused, saying why.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let out = run(
        &[
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked"), "{err}");
    // The first one still works.
    run_ok(&["status", "--coordinator", &url], Duration::from_secs(30));
}

#[test]
fn labels_no_model_can_have_are_refused_before_training() {
    let dir = KeptOnFailure::new();
    let spec = digits_spec(dir.path(), "labels", 1, 1);
    let text = std::fs::read_to_string(&spec).unwrap();
    // The spec's data, with one label of a million.
    let csv_line = text.lines().find(|l| l.contains("path")).unwrap();
    let data_path = csv_line.split('"').nth(1).unwrap();
    let bytes = std::fs::read(data_path).unwrap();
    let rows: String = if data_path.ends_with(".gz") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut s)
            .unwrap();
        s
    } else {
        String::from_utf8(bytes).unwrap()
    };
    let mut lines: Vec<String> = rows.lines().map(str::to_owned).collect();
    let last = lines[5].rsplit_once(',').unwrap().0.to_owned();
    lines[5] = format!("{last},1000000");
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, lines.join("\n") + "\n").unwrap();
    std::fs::write(&spec, text.replace(data_path, bad.to_str().unwrap())).unwrap();
    let out = dir.path().join("out");
    let t = Instant::now();
    let o = run(
        &[
            "run",
            spec.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let results = std::fs::read_to_string(
        std::fs::read_dir(out.join("sweeps"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("results.json"),
    )
    .unwrap_or_default();
    let said = format!("{all}{results}");
    assert!(
        said.contains("line 6") && said.contains("1000000"),
        "{said}"
    );
    assert!(!said.contains("0: candle"), "{said}");
    eprintln!("refused after {:?}", t.elapsed());
}
