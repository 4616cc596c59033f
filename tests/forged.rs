//! Hostile files and forged requests against a real coordinator process: links planted
//! in sweep and trial folders (for every RPC that reads or writes files), log chunks for
//! attempts a worker never held, a live worker's id claimed by another process, and
//! scan tiles reported without their points.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::grpc::*;
use common::*;
use ridgeline_common::proto::{
    self, sweep_service_client::SweepServiceClient, worker_service_client::WorkerServiceClient,
};

/// A grid of `n` shell trials that print a line and report `loss = i`.
fn shell_spec(dir: &Path, name: &str, n: u32, then: &str) -> PathBuf {
    let values: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    let text = format!(
        r#"name = "{name}"
[trial]
command = "echo hello {{i}}; {then} echo 'ridgeline: {{\"loss\": {{i}}}}'"
[search]
algorithm = "grid"
metric = "loss"
[search.space]
i = {{ type = "grid", values = [{}] }}
"#,
        values.join(", ")
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// Every file under `dir` whose content is a file of the host's /etc.
fn copies_of_etc(dir: &Path) -> Vec<PathBuf> {
    let passwd = std::fs::read("/etc/passwd").unwrap();
    files_in(dir)
        .into_iter()
        .filter(|p| {
            std::fs::read(p).is_ok_and(|b| b == passwd)
                || p.components().any(|c| c.as_os_str() == "etc")
        })
        .collect()
}

#[test]
fn no_rpc_reads_or_writes_through_a_planted_link() {
    let dir = KeptOnFailure::new();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let (_coord, url) = coordinator(&data, &[]);
    let mut w = worker(dir.path(), &url, "w", &["--slots", "2"]);
    let spec = shell_spec(dir.path(), "files", 10, "");
    let s = submit_wait(&spec, &url, Duration::from_secs(120));
    let sweep = data.join("sweeps").join(&s);
    let trials = sweep.join("trials");
    assert!(trials.join("00000/attempt-1.log").is_file());
    // A second sweep whose folder becomes a link to a copy elsewhere.
    let s2 = submit_wait(
        &shell_spec(dir.path(), "moved", 1, ""),
        &url,
        Duration::from_secs(120),
    );
    w.child.kill().unwrap();
    w.child.wait().unwrap();
    let moved = outside.join("moved");
    std::fs::rename(data.join("sweeps").join(&s2), &moved).unwrap();
    symlink(&moved, data.join("sweeps").join(&s2)).unwrap();

    // Links planted by anyone who can write in the data folder (a trial's program can).
    std::fs::remove_dir_all(trials.join("00009")).unwrap();
    symlink("/etc", trials.join("00009")).unwrap();
    symlink("/etc", sweep.join("etc")).unwrap();
    symlink("/etc/passwd", sweep.join("passwd")).unwrap();
    let log0 = trials.join("00000/attempt-1.log");
    std::fs::remove_file(&log0).unwrap();
    symlink("/etc/passwd", &log0).unwrap();

    // ListArtifacts and ReadArtifact, through download: nothing of /etc.
    let out1 = dir.path().join("out1");
    let o = run(
        &[
            "download",
            &s,
            "--coordinator",
            &url,
            "-o",
            out1.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        copies_of_etc(&out1).is_empty(),
        "{:?}",
        copies_of_etc(&out1)
    );
    assert!(
        out1.join("trials/00001/attempt-1.log").is_file(),
        "the sweep's own files come"
    );
    let out2 = dir.path().join("out2");
    let _ = run(
        &[
            "download",
            &s,
            "--trial",
            "9",
            "--coordinator",
            &url,
            "-o",
            out2.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert!(files_in(&out2).is_empty(), "{:?}", files_in(&out2));
    let out3 = dir.path().join("out3");
    let _ = run(
        &[
            "download",
            &s2,
            "--coordinator",
            &url,
            "-o",
            out3.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert!(
        files_in(&out3).is_empty(),
        "a linked sweep folder is served: {:?}",
        files_in(&out3)
    );

    // GetTrialLog through `logs`: the replaced log is refused, not printed.
    let o = run(
        &["logs", &s, "0", "--coordinator", &url],
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!text.contains("root:"), "{text}");
    assert!(!o.status.success());
    let o = run(
        &["logs", &s, "1", "--coordinator", &url],
        Duration::from_secs(30),
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("hello 1"));

    rt().block_on(async {
        let mut c = SweepServiceClient::connect(url.clone()).await.unwrap();
        for path in [
            "passwd",
            "etc/passwd",
            "trials/00009/passwd",
            "trials/00000/attempt-1.log",
        ] {
            let r = c
                .read_artifact(proto::ReadArtifactRequest {
                    sweep_id: s.clone(),
                    path: path.into(),
                    ..Default::default()
                })
                .await;
            let got = match r {
                Err(_) => None,
                Ok(stream) => {
                    let mut st = stream.into_inner();
                    let mut data = Vec::new();
                    let mut failed = false;
                    while let Some(chunk) = tokio_stream::StreamExt::next(&mut st).await {
                        match chunk {
                            Ok(ch) => data.extend(ch.data),
                            Err(_) => failed = true,
                        }
                    }
                    (!failed).then_some(data)
                }
            };
            assert!(got.is_none(), "{path} was served: {got:?}");
        }
        // An offset no log can have is the caller's mistake.
        let e = c
            .get_trial_log(proto::GetTrialLogRequest {
                sweep_id: s.clone(),
                trial: 1,
                offset: 1 << 63,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        // FetchBlob from a sweep folder that is a link.
        let mut wc = WorkerServiceClient::connect(url.clone()).await.unwrap();
        let e = wc
            .fetch_blob(proto::FetchBlobRequest {
                sweep_id: s2.clone(),
                name: "spec.json".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    });

    // Writing: a worker's log chunks and artifacts never go through a link, and only
    // for an attempt it holds, within the cap.
    let s3 = submit(&shell_spec(dir.path(), "written", 1, ""), &url);
    let t3 = data.join("sweeps").join(&s3).join("trials/00000");
    std::fs::create_dir_all(&t3).unwrap();
    let victim = outside.join("victim.txt");
    std::fs::write(&victim, b"untouched").unwrap();
    symlink(&victim, t3.join("attempt-1.log")).unwrap();
    symlink(&victim, t3.join("model.json")).unwrap();
    rt().block_on(async {
        let mut c = WorkerServiceClient::connect(url.clone()).await.unwrap();
        let me = register(&mut c, "forger", &W::default()).await;
        let units = lease(&mut c, &me, 1).await;
        let u = units[0].unit_id;
        assert_eq!(units[0].attempt, 1);
        let chunk = |attempt: u32, offset: u64, data: &[u8]| proto::LogChunk {
            unit_id: u,
            attempt,
            offset,
            data: data.to_vec(),
        };
        let big = (64 << 20) - 16;
        c.report(report(
            &me,
            vec![],
            vec![
                chunk(1, 0, b"pwned"),
                chunk(999, big, &[b'x'; 64]),
                chunk(1000, big, &[b'y'; 64]),
            ],
        ))
        .await
        .unwrap();
        c.report(report(
            &me,
            vec![completed(
                u,
                &[("loss", 0.5)],
                vec![proto::Artifact {
                    name: "model.json".into(),
                    data: b"{}".to_vec(),
                }],
            )],
            vec![],
        ))
        .await
        .unwrap();
    });
    assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
    assert!(!t3.join("attempt-999.log").exists() && !t3.join("attempt-1000.log").exists());
    let big: Vec<PathBuf> = files_under(&data)
        .into_iter()
        .filter(|p| p.metadata().is_ok_and(|m| m.len() > 16 << 20))
        .collect();
    assert!(big.is_empty(), "{big:?}");
    // The artifact replaced the link with a file of its own.
    assert_eq!(std::fs::read(t3.join("model.json")).unwrap(), b"{}");
    assert!(!t3.join("model.json").is_symlink());
    assert_eq!(results(&s3, &url)["trials"][0]["state"], "completed");
}

#[test]
fn a_live_workers_id_goes_back_only_to_its_secret() {
    let dir = KeptOnFailure::new();
    let (mut coord, url) = coordinator(dir.path(), &[]);
    let addr = url.trim_start_matches("http://").to_owned();
    let s = submit(&shell_spec(dir.path(), "ids", 2, ""), &url);
    let (a, unit) = rt().block_on(async {
        let mut c = WorkerServiceClient::connect(url.clone()).await.unwrap();
        let a = register(&mut c, "a", &W::default()).await;
        let units = lease(&mut c, &a, 1).await;
        // Another process names a's id, with no secret or a wrong one.
        for secret in ["", "0123456789abcdef0123456789abcdef"] {
            let thief = W {
                id: a.id.clone(),
                secret: secret.into(),
            };
            let got = register(&mut c, "thief", &thief).await;
            assert_ne!(
                got.id, a.id,
                "a live worker's id was handed to another process"
            );
            assert_ne!(got.secret, a.secret);
            let e = c
                .report(report(
                    &thief,
                    vec![completed(units[0].unit_id, &[("loss", 9.0)], vec![])],
                    vec![],
                ))
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
            let e = c
                .heartbeat(proto::HeartbeatRequest {
                    worker_id: a.id.clone(),
                    worker_secret: secret.into(),
                    running_units: vec![],
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied);
            let e = c
                .lease_units(proto::LeaseRequest {
                    worker_id: a.id.clone(),
                    worker_secret: secret.into(),
                    max_units: 4,
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied);
        }
        // The holder itself comes back (a connection blip): same id, same units.
        let back = register(&mut c, "a", &a).await;
        assert_eq!(
            (back.id.as_str(), back.secret.as_str()),
            (a.id.as_str(), a.secret.as_str())
        );
        (a, units[0].unit_id)
    });
    let st = results(&s, &url);
    assert_eq!(st["trials"][0]["state"], "running", "{st}");

    // After a restart the id still goes back only with its secret.
    coord.child.kill().unwrap();
    coord.child.wait().unwrap();
    let dd = dir.path().to_str().unwrap();
    let _coord = spawn(
        "coordinator-2",
        &["coordinator", "--listen", &addr, "--data-dir", dd],
        dir.path(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    rt().block_on(async {
        let mut c = loop {
            match WorkerServiceClient::connect(url.clone()).await {
                Ok(c) => break c,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("{e}"),
            }
        };
        let thief = W {
            id: a.id.clone(),
            secret: "f".repeat(32),
        };
        assert_ne!(register(&mut c, "thief", &thief).await.id, a.id);
        let back = register(&mut c, "a", &a).await;
        assert_eq!(back.id, a.id);
        c.report(report(
            &back,
            vec![completed(unit, &[("loss", 0.25)], vec![])],
            vec![],
        ))
        .await
        .unwrap();
    });
    let r = results(&s, &url);
    let t0 = r["trials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["state"] == "completed")
        .unwrap()
        .clone();
    assert_eq!(t0["metrics"]["loss"], 0.25, "{r}");
}

#[test]
fn scan_tiles_without_their_points_are_refused() {
    let dir = KeptOnFailure::new();
    let scan = scan_fixture(dir.path(), 0, 4, 4, 4);
    let (_coord, url) = coordinator(dir.path(), &[]);
    let s = submit(&scan, &url);
    rt().block_on(async {
        let mut c = WorkerServiceClient::connect(url.clone()).await.unwrap();
        let me = register(&mut c, "forger", &W::default()).await;
        let units = lease(&mut c, &me, 4).await;
        assert_eq!(units.len(), 4);
        let good: Vec<u8> = [0.5f64; 4]
            .iter()
            .chain(&[f64::NAN; 4])
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let neg: Vec<u8> = [-5.0f64, 0.5, 0.5, 0.5]
            .iter()
            .chain(&[f64::NAN; 4])
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let tile = |data: Vec<u8>| {
            vec![proto::Artifact {
                name: "tile.f64".into(),
                data,
            }]
        };
        let forged = vec![
            // Completed with no data at all, a best of -5.
            completed(units[0].unit_id, &[("loss", -5.0)], vec![]),
            // Half its points.
            completed(
                units[1].unit_id,
                &[("loss", 0.5)],
                tile(good[..32].to_vec()),
            ),
            // A loss no objective can take.
            completed(units[2].unit_id, &[("loss", -5.0)], tile(neg)),
            // Right points, a best that is not theirs.
            completed(units[3].unit_id, &[("loss", -5.0)], tile(good.clone())),
        ];
        c.report(report(&me, forged, vec![])).await.unwrap();
    });
    let r = results(&s, &url);
    for t in r["trials"].as_array().unwrap() {
        assert_ne!(t["state"], "completed", "a forged tile was taken: {t}");
    }
    let st = run_ok(
        &["status", &s, "--coordinator", &url],
        Duration::from_secs(30),
    );
    assert!(!st.contains("=-5"), "a forged best: {st}");
    // Real workers finish the scan; no forged value is in it.
    let _w = worker(dir.path(), &url, "w", &[]);
    let st = run_ok(
        &["watch", &s, "--coordinator", &url],
        Duration::from_secs(120),
    );
    assert!(st.contains("completed: 16/16 points in 4/4 tiles"), "{st}");
    let (_, loss) = read_npy(&dir.path().join("sweeps").join(&s).join("surface.npy"));
    assert_eq!(loss.len(), 16);
    assert!(loss.iter().all(|v| v.is_finite() && *v >= 0.0), "{loss:?}");
}
