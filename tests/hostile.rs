//! A hostile or careless user against a real coordinator process: forged and impossible
//! reports, oversized specs and grids, a planted symbolic link, many sweeps, deletion,
//! and the command-line clients against silent or restarting coordinators.

mod common;

use std::time::{Duration, Instant};

use common::grpc::*;
use common::*;
use ridgeline_common::proto::{self, worker_service_client::WorkerServiceClient};

/// Item 7: only the lease holder finishes a unit; unregistered workers are refused;
/// impossible and non-finite final metrics are not results. Item 4: a restarted
/// coordinator never gives out a dead worker's id again.
#[test]
fn reports_are_validated_and_worker_ids_never_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let (mut coord, url) = coordinator(dir.path(), &[]);
    let spec = digits_spec(dir.path(), "forged", 2, 2);
    let id = submit(&spec, &url);
    let first_ids = rt().block_on(async {
        let mut c = WorkerServiceClient::connect(url.clone()).await.unwrap();
        let a = register(&mut c, "a", &W::default()).await;
        let b = register(&mut c, "b", &W::default()).await;
        let first = lease(&mut c, &a, 1).await;
        let unit = first[0].unit_id;
        assert!(
            matches!(&first[0].work, Some(proto::unit::Work::Train(t)) if t.spec_json.is_empty()),
            "leases no longer carry the spec"
        );
        let report = |worker: &W, o: proto::Outcome| report(worker, vec![o], vec![]);
        let ghost = W {
            id: "w77-ghost".into(),
            secret: String::new(),
        };
        // b holds nothing: its "result" for a's unit is acknowledged and dropped.
        c.report(report(
            &b,
            completed(unit, &[("val_accuracy", 0.99)], vec![]),
        ))
        .await
        .unwrap();
        // An id nobody registered: refused, nothing taken.
        let e = c
            .report(report(
                &ghost,
                completed(unit, &[("val_accuracy", 0.98)], vec![]),
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        // The holder reports an impossible accuracy: not a result (a failed attempt).
        c.report(report(
            &a,
            completed(unit, &[("val_accuracy", 1e308), ("val_loss", 0.1)], vec![]),
        ))
        .await
        .unwrap();
        // Its second attempt ends with a NaN loss: diverged, whatever state it claims.
        let again = lease(&mut c, &a, 1).await;
        assert_eq!((again[0].unit_id, again[0].attempt), (unit, 2));
        c.report(report(
            &a,
            completed(
                unit,
                &[("val_accuracy", 0.5), ("val_loss", f64::NAN)],
                vec![],
            ),
        ))
        .await
        .unwrap();
        vec![a.id, b.id]
    });
    let r = results(&id, &url);
    let t0 = &r["trials"][0];
    assert_eq!(t0["state"], "diverged", "{t0}");
    assert_eq!(t0["attempts"], 2);
    assert!(
        t0["error"].as_str().unwrap().contains("val_loss is NaN"),
        "{t0}"
    );
    assert!(
        r["best_trial"].is_null(),
        "no impossible value became the best"
    );

    // Restart: new workers get new ids.
    coord.child.kill().unwrap();
    coord.child.wait().unwrap();
    let (_coord, url) = coordinator(dir.path(), &[]);
    let new_id = rt().block_on(async {
        let mut c = WorkerServiceClient::connect(url.clone()).await.unwrap();
        register(&mut c, "a", &W::default()).await.id
    });
    assert!(
        !first_ids.contains(&new_id),
        "{new_id} was given out before the restart: {first_ids:?}"
    );
}

/// Item 8: specs are capped, listing is paged, sweeps can be deleted with their files.
/// Item 9: FetchBlob serves regular files of the sweep folder only.
#[test]
fn big_specs_many_sweeps_deletion_and_planted_links() {
    let dir = tempfile::tempdir().unwrap();
    let (_coord, url) = coordinator(dir.path(), &["--max-spec-bytes", "65536"]);
    // A spec of ~200 kB: refused with the setting's name, the coordinator unharmed.
    let values: Vec<String> = (0..20_000)
        .map(|i| format!("{}", 1e-4 + i as f64 * 1e-9))
        .collect();
    let big = dir.path().join("big.toml");
    let text = std::fs::read_to_string(digits_spec(dir.path(), "big", 2, 1))
        .unwrap()
        .replace(
            "lr = { type = \"loguniform\", low = 1e-3, high = 1e-2 }",
            &format!(
                "lr = {{ type = \"choice\", values = [{}] }}",
                values.join(", ")
            ),
        );
    std::fs::write(&big, text).unwrap();
    let out = run(
        &["submit", big.to_str().unwrap(), "--coordinator", &url],
        Duration::from_secs(30),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("max_spec_bytes") && err.contains("at most 65536 bytes"),
        "{err}"
    );

    let ids: Vec<String> = (0..3)
        .map(|i| submit(&digits_spec(dir.path(), &format!("s{i}"), 1, 1), &url))
        .collect();
    // Pages of two: every sweep once, in submission order, no spec unless asked.
    let (first, second) = rt().block_on(async {
        let mut c = proto::sweep_service_client::SweepServiceClient::connect(url.clone())
            .await
            .unwrap();
        let p1 = c
            .list_sweeps(proto::ListSweepsRequest {
                page_size: 2,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let p2 = c
            .list_sweeps(proto::ListSweepsRequest {
                page_size: 2,
                page_token: p1.next_page_token.clone(),
                with_spec: true,
            })
            .await
            .unwrap()
            .into_inner();
        (p1, p2)
    });
    let listed: Vec<&str> = first
        .sweeps
        .iter()
        .chain(&second.sweeps)
        .map(|s| s.sweep_id.as_str())
        .collect();
    assert_eq!(listed, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(first.sweeps.iter().all(|s| s.spec_json.is_empty()));
    assert!(second.sweeps.iter().all(|s| !s.spec_json.is_empty()));
    assert!(second.next_page_token.is_empty());

    // A link planted in a sweep folder is not followed.
    let sweep_dir = dir.path().join("sweeps").join(&ids[0]);
    std::os::unix::fs::symlink("/etc/passwd", sweep_dir.join("passwd.json")).unwrap();
    // A trial's files are served too (a PBT round fetches its parent's state), through
    // no link and by no other path.
    let trials = sweep_dir.join("trials");
    std::fs::create_dir_all(trials.join("00003")).unwrap();
    std::fs::write(trials.join("00003").join("state.bin"), b"round 0").unwrap();
    std::os::unix::fs::symlink("/etc", trials.join("00004")).unwrap();
    let (planted, spec, trial_files) = rt().block_on(async {
        let mut c = WorkerServiceClient::connect(url.clone()).await.unwrap();
        let fetch = |name: &str| proto::FetchBlobRequest {
            worker_id: String::new(),
            sweep_id: ids[0].clone(),
            name: name.into(),
        };
        let mut trial_files = Vec::new();
        for name in [
            "trials/00003/state.bin",
            "trials/00004/passwd",
            "trials/3/state.bin",
            "trials/00003/../spec.json",
            "trials/00003/sub/state.bin",
            "trials/../../passwd",
        ] {
            trial_files.push(c.fetch_blob(fetch(name)).await);
        }
        (
            c.fetch_blob(fetch("passwd.json")).await,
            c.fetch_blob(fetch("spec.json")).await,
            trial_files,
        )
    });
    let mut trial_files = trial_files.into_iter();
    assert_eq!(
        trial_files.next().unwrap().unwrap().into_inner().data,
        b"round 0"
    );
    let e = trial_files.next().unwrap().unwrap_err();
    assert!(
        e.code() == tonic::Code::NotFound && e.message().contains("not served"),
        "{e:?}"
    );
    for e in trial_files {
        let e = e.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    }
    let e = planted.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("not served"), "{}", e.message());
    assert!(
        String::from_utf8(spec.unwrap().into_inner().data)
            .unwrap()
            .contains("\"name\":\"s0\"")
    );

    // Delete a (running) sweep: gone from the list, the database and the disk.
    let out = run_ok(
        &["delete", &ids[0], "--coordinator", &url],
        Duration::from_secs(30),
    );
    assert!(out.contains(&format!("{} deleted", ids[0])), "{out}");
    assert!(!sweep_dir.exists());
    let status = run_ok(&["status", "--coordinator", &url], Duration::from_secs(30));
    assert!(
        !status.contains(&ids[0]) && status.contains(&ids[1]),
        "{status}"
    );
    let out = run(
        &["status", &ids[0], "--coordinator", &url],
        Duration::from_secs(30),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown sweep"));
}

/// Item 5: an absurd grid is refused at submit; with the limit raised it is accepted,
/// and cancelling it costs nothing: no unit is materialised, no NaN grid is written.
#[test]
fn absurd_grids_are_refused_and_cancel_costs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let scan = scan_fixture(dir.path(), 0, 100_000, 100_000, 16);
    let (_coord, url) = coordinator(dir.path(), &[]);
    let out = run(
        &["submit", scan.to_str().unwrap(), "--coordinator", &url],
        Duration::from_secs(60),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("10000000000 grid points") && err.contains("max_points_per_sweep"),
        "{err}"
    );

    // A sweep reference is never a path: `sweep:../..` is refused as malformed.
    let sneaky = dir.path().join("sneaky.toml");
    std::fs::write(
        &sneaky,
        std::fs::read_to_string(&scan)
            .unwrap()
            .replace("points = 100000", "points = 5")
            .replace(
                "checkpoint = \"linear\"",
                "checkpoint = \"sweep:../../linear/trial/0\"",
            ),
    )
    .unwrap();
    let out = run(
        &["submit", sneaky.to_str().unwrap(), "--coordinator", &url],
        Duration::from_secs(60),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("landscape.checkpoint")
            && err.contains("was not attached"),
        "{err}"
    );

    let big = tempfile::tempdir().unwrap();
    let (_coord2, url2) = coordinator(big.path(), &["--max-points-per-sweep", "10000000000"]);
    let id = submit(&scan, &url2);
    let out = run_ok(
        &["cancel", &id, "--coordinator", &url2],
        Duration::from_secs(60),
    );
    assert_eq!(out.trim(), format!("{id} cancelled"));
    let st = run_ok(
        &["status", &id, "--coordinator", &url2],
        Duration::from_secs(30),
    );
    assert!(
        st.contains("cancelled: 0/") && st.contains(" points in 0/625000000 tiles"),
        "{st}"
    );
    let sweep_dir = big.path().join("sweeps").join(&id);
    let bytes: u64 = std::fs::read_dir(&sweep_dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    // The axes (x.npy, y.npy: 8 bytes a value) and small files, never the 10^10 grid.
    let axes = 8 * 200_000 + 2 * 128;
    assert!(
        bytes < axes + (64 << 10),
        "{bytes} bytes written for an empty scan"
    );
    assert!(!sweep_dir.join("surface.npy").exists());
}

/// Clients: a clear message instead of a hang, no backtraces for user errors, unrelated
/// RIDGELINE_* variables ignored, and `watch` outlives a coordinator restart.
#[test]
fn clients_a_person_can_rely_on() {
    let dir = tempfile::tempdir().unwrap();
    // A port that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let started = Instant::now();
    let out = run_with(
        &["status", "--coordinator", &silent_url],
        Duration::from_secs(60),
        &[("RIDGELINE_TIMEOUT_S", "2")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.starts_with(&format!(
            "error: no coordinator answering at {silent_url} after 2 s"
        )),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(50));
    drop(silent);

    // A user's mistake: one line, no backtrace, even when backtraces are asked for.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\n[search]\nalgorithm = \"grdi\"\n").unwrap();
    let out = run_with(
        &[
            "run",
            bad.to_str().unwrap(),
            "--out",
            dir.path().join("o").to_str().unwrap(),
        ],
        Duration::from_secs(60),
        &[("RUST_BACKTRACE", "1"), ("RIDGELINE_BIN", "/opt/ridgeline")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("search.algorithm"),
        "{err}"
    );
    assert!(!err.contains("acktrace") && !err.contains("WARN"), "{err}");

    // watch survives a coordinator killed and restarted on the same address.
    let (mut coord, url) = coordinator(dir.path(), &[]);
    let id = submit(&digits_spec(dir.path(), "patient", 2, 2), &url);
    let watcher = std::process::Command::new(bin())
        .args(["watch", &id, "--coordinator", &url])
        .env("RIDGELINE_BIN", "/opt/ridgeline")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    coord.child.kill().unwrap();
    coord.child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let addr = url.trim_start_matches("http://");
    let dd = dir.path().to_str().unwrap();
    let _coord = spawn(
        "coordinator-again",
        &["coordinator", "--listen", addr, "--data-dir", dd],
        dir.path(),
    );
    let _w = worker(dir.path(), &url, "w", &[]);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(watcher.wait_with_output()));
    let out = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("watch ends once the sweep does")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("completed: 2/2 trials completed"),
        "{stdout}"
    );
}
