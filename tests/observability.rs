//! The metrics, proven against a real Prometheus (Debian's `prometheus`; `scripts/test`
//! installs it): a coordinator and two worker processes are scraped every second while
//! a search and a scan run; then every target of every panel of the shipped Grafana
//! dashboard is evaluated through Prometheus's HTTP API and must return finite data,
//! and key values must agree with the database. Also: `promtool check metrics` on both
//! expositions, the port's GET-only rule, readiness, and retention.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `(status, body)` of one HTTP/1.0 request (no chunked bodies to decode).
fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Evaluates PromQL at the current time; the `result` array.
fn query(prom: &str, expr: &str) -> Vec<Value> {
    let (status, body) = http(
        prom,
        "GET",
        &format!("/api/v1/query?query={}", encode(expr)),
    );
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{status}: {body}"));
    assert_eq!(v["status"], "success", "{expr}: {body}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The sum of an instant vector's values.
fn scalar(prom: &str, expr: &str) -> f64 {
    query(prom, expr)
        .iter()
        .map(|r| r["value"][1].as_str().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// The address a worker logged for its metrics port.
fn logged_metrics_addr(log: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(rest) = text.split("/readyz on http://").nth(1) {
            return rest.split_whitespace().next().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no metrics address in {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Prometheus scraping `targets` every second; fails (never skips) when it cannot run.
fn prometheus(dir: &Path, coordinator: &str, workers: &[String]) -> (Proc, String) {
    let config = dir.join("prometheus.yml");
    let quote = |v: &[String]| {
        v.iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
             - job_name: ridgeline-coordinator\n    static_configs:\n      - targets: [\"{coordinator}\"]\n  \
             - job_name: ridgeline-workers\n    static_configs:\n      - targets: [{}]\n",
            quote(workers)
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("the `prometheus` binary (Debian package prometheus; scripts/test installs it)");
    let p = Proc {
        child,
        name: "prometheus".into(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect(&addr).is_ok() && http(&addr, "GET", "/-/ready").0 == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus did not start: {}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (p, addr)
}

fn promtool_check(exposition: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the `promtool` binary (Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );
}

/// Every panel target of a dashboard (rows' panels included): `(panel title, expr)`.
fn targets(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(p) = stack.pop() {
        if let Some(inner) = p["panels"].as_array() {
            stack.extend(inner);
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap().to_owned(),
                t["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

/// Waits until Prometheus has scraped a value satisfying `ok` for `expr`.
fn until(prom: &str, expr: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = scalar(prom, expr);
        if ok(v) && !query(prom, expr).is_empty() {
            return v;
        }
        assert!(Instant::now() < deadline, "{expr} stayed at {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn every_dashboard_panel_has_data_in_a_real_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let (coordinator_proc, url) = coordinator(dir.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let cm = wait_for_file(&dir.path().join("metrics.addr"), Duration::from_secs(30));
    let metrics_flag = ["--metrics-listen", "127.0.0.1:0"];
    let _w1 = worker(dir.path(), &url, "alpha", &metrics_flag);
    let _w2 = worker(dir.path(), &url, "beta", &metrics_flag);
    let wm = vec![
        logged_metrics_addr(&dir.path().join("alpha.log")),
        logged_metrics_addr(&dir.path().join("beta.log")),
    ];
    let (_prom, prom) = prometheus(dir.path(), &cm, &wm);

    // Every target is scraped before anything is submitted.
    until(&prom, "sum(up)", |v| v == 3.0);

    // A search and a scan, run to their end.
    const TRIALS: usize = 6;
    const EPOCHS: usize = 20;
    // The multi-objective search's trials (`num_samples` below).
    const PARETO_TRIALS: usize = 6;
    let (nx, ny, tile) = (9, 9, 9);
    let search = submit(
        &digits_spec(dir.path(), "obs", TRIALS as u32, EPOCHS as u32),
        &url,
    );
    let scan_dir = dir.path().join("scan");
    std::fs::create_dir_all(&scan_dir).unwrap();
    let scan = submit(&scan_fixture(&scan_dir, 0, nx, ny, tile), &url);
    // A multi-objective search, for the hypervolume.
    let pareto_spec = dir.path().join("pareto.toml");
    std::fs::write(
        &pareto_spec,
        r#"name = "obs-pareto"
[trial]
command = "awk -v x={x} 'BEGIN { printf \"ridgeline: {\\\"a\\\": %.6f, \\\"b\\\": %.6f}\\n\", x, (1 - x)^2 }'"
[search]
algorithm = "nsga2"
metric = ["a", "b"]
mode = ["min", "min"]
num_samples = 6
seed = 0
[search.space]
x = { type = "uniform", low = 0.0, high = 1.0 }
"#,
    )
    .unwrap();
    let pareto = submit(&pareto_spec, &url);
    for id in [&search, &scan, &pareto] {
        let out = run_ok(
            &["watch", id, "--coordinator", &url],
            Duration::from_secs(300),
        );
        assert!(out.contains("completed"), "{out}");
    }
    // Prometheus has the final state of all three, and the front's hypervolume as the
    // coordinator computed it.
    let st: Value = serde_json::from_str(&run_ok(
        &["status", &pareto, "--json", "--coordinator", &url],
        Duration::from_secs(30),
    ))
    .unwrap();
    let hv = st["hypervolume"].as_f64().unwrap();
    assert!(hv > 0.0, "{st}");
    until(
        &prom,
        &format!("ridgeline_sweep_hypervolume{{sweep=\"{pareto}\"}}"),
        |v| v == hv,
    );
    for id in [&search, &scan] {
        until(
            &prom,
            &format!("ridgeline_sweep_progress_ratio{{sweep=\"{id}\"}}"),
            |v| v == 1.0,
        );
    }
    // Workers report their final units (and their gauges are sampled every 2 s).
    until(&prom, "sum(ridgeline_worker_landscape_points_total)", |v| {
        v == (nx * ny) as f64
    });
    // Epochs of the built-in trials, and the one report line of each command trial.
    until(&prom, "sum(ridgeline_worker_training_epochs_total)", |v| {
        v == (TRIALS * EPOCHS + PARETO_TRIALS) as f64
    });

    // Rates need two samples of a series: the histograms of the last units appeared
    // with them.
    until(
        &prom,
        "min(count_over_time(ridgeline_worker_unit_duration_seconds_count[2m]))",
        |v| v >= 3.0,
    );

    // The template variables list what the dashboard filters on.
    let sweeps = http(
        &prom,
        "GET",
        &format!(
            "/api/v1/label/sweep/values?match[]={}",
            encode("ridgeline_sweep_progress_ratio")
        ),
    )
    .1;
    assert!(
        sweeps.contains(&search) && sweeps.contains(&scan) && sweeps.contains(&pareto),
        "{sweeps}"
    );
    let instances = query(&prom, "ridgeline_process_start_time_seconds");
    assert_eq!(
        instances.len(),
        3,
        "coordinator and two workers: {instances:?}"
    );

    // Every target of every panel, with the variables as Grafana substitutes them.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/dashboards/ridgeline.json")).unwrap(),
    )
    .unwrap();
    let all = targets(&dashboard);
    assert!(all.len() >= 20, "{} targets", all.len());
    let mut empty = Vec::new();
    for (title, expr) in &all {
        let e = expr
            .replace("$sweep", &format!("{search}|{scan}|{pareto}"))
            .replace("$instance", ".*")
            .replace("$__rate_interval", "2m");
        let finite = query(&prom, &e)
            .iter()
            .filter_map(|r| r["value"][1].as_str()?.parse::<f64>().ok())
            .filter(|v| v.is_finite())
            .count();
        if finite == 0 {
            empty.push(format!("{title}: {e} -> {:?}", query(&prom, &e)));
        }
    }
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );

    // What Prometheus says now, to hold against the database once the coordinator has
    // stopped (it holds the database's lock while it runs).
    let prom_completed = scalar(
        &prom,
        &format!("ridgeline_sweep_units{{sweep=\"{search}\",state=\"completed\"}}"),
    );
    let prom_finished = scalar(
        &prom,
        "sum(ridgeline_units_finished_total{outcome=\"completed\"})",
    );
    let prom_workers = scalar(&prom, "sum(ridgeline_workers)");
    let prom_registered = scalar(&prom, "sum(ridgeline_worker_registered)");
    let prom_leases = scalar(&prom, "ridgeline_leases_granted_total");
    let prom_retries = scalar(&prom, "ridgeline_retries_total");

    // Both expositions pass promtool.
    promtool_check(&http(&cm, "GET", "/metrics").1);
    promtool_check(&http(&wm[0], "GET", "/metrics").1);

    // GET of three paths, nothing else.
    for addr in [&cm, &wm[0]] {
        assert_eq!(http(addr, "GET", "/healthz").0, 200);
        assert_eq!(http(addr, "GET", "/readyz").0, 200);
        for m in ["POST", "PUT", "DELETE", "PATCH", "HEAD"] {
            assert_eq!(http(addr, m, "/metrics").0, 405, "{m} /metrics on {addr}");
        }
        assert_eq!(http(addr, "POST", "/readyz").0, 405);
        for p in [
            "/",
            "/metrics/",
            "/debug/pprof",
            "/api/v1/query",
            "/../etc/passwd",
        ] {
            assert_eq!(http(addr, "GET", p).0, 404, "GET {p} on {addr}");
        }
    }

    // Without its coordinator a worker is alive but not ready.
    drop(coordinator_proc);
    let deadline = Instant::now() + Duration::from_secs(60);
    while http(&wm[0], "GET", "/readyz").0 != 503 {
        assert!(
            Instant::now() < deadline,
            "worker stayed ready without a coordinator"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(http(&wm[0], "GET", "/healthz").0, 200);

    // Key values agree with the database.
    let db = rusqlite::Connection::open(dir.path().join("ridgeline.db")).unwrap();
    let count =
        |sql: &str| -> f64 { db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as f64 };
    let stored_trials = count(&format!(
        "SELECT COUNT(*) FROM units WHERE sweep_id = '{search}' AND state = 'completed'"
    ));
    assert_eq!(stored_trials, TRIALS as f64);
    assert_eq!(prom_completed, stored_trials);
    let stored_units = count("SELECT COUNT(*) FROM units WHERE state = 'completed'");
    assert_eq!(prom_finished, stored_units);
    let registered = count("SELECT COUNT(*) FROM workers WHERE gone_reason IS NULL");
    assert_eq!(registered, 2.0);
    assert_eq!(prom_workers, registered);
    assert_eq!(prom_registered, registered);
    assert_eq!(
        prom_leases,
        stored_units + prom_retries,
        "one lease per unit, plus one per retry"
    );
}

#[test]
fn a_finished_sweeps_series_leave_after_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let (_c, url) = coordinator(
        dir.path(),
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--metrics-retention-s",
            "1",
        ],
    );
    let cm = wait_for_file(&dir.path().join("metrics.addr"), Duration::from_secs(30));
    let _w = worker(dir.path(), &url, "w", &["--metrics-listen", "off"]);
    let id = submit(&digits_spec(dir.path(), "short", 2, 1), &url);
    let series = |body: &str| body.lines().filter(|l| l.contains(&id)).count();
    // Its series appear (published every tick; kept a retention past its end plus the
    // exporter's idle timeout, so they cannot be missed)...
    let deadline = Instant::now() + Duration::from_secs(60);
    while series(&http(&cm, "GET", "/metrics").1) == 0 {
        assert!(
            Instant::now() < deadline,
            "the sweep never showed in the metrics"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = run_ok(
        &["watch", &id, "--coordinator", &url],
        Duration::from_secs(120),
    );
    assert!(out.contains("completed"), "{out}");
    // ... and leave once it has ended.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = http(&cm, "GET", "/metrics").1;
        if series(&body) == 0 {
            // Counters without a sweep label stay.
            assert!(body.contains("ridgeline_units_finished_total{"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sweep's series stayed: {body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
