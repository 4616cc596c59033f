//! No one gets in uninvited: the shared token on every RPC, TLS that refuses plaintext,
//! mutual TLS that refuses clients without a certificate, and a coordinator that will
//! not listen beyond loopback without a token.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

const T: Duration = Duration::from_secs(60);

struct Pki {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

/// A CA, a server certificate for "localhost" and a client certificate, all signed by it.
fn pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let leaf = |name: &str, san: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![san.to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (
            write(&format!("{name}.pem"), cert.pem()),
            write(&format!("{name}.key"), key.serialize_pem()),
        )
    };
    let server = leaf("server", "localhost");
    let client = leaf("client", "ridgeline-worker");
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        server,
        client,
    }
}

fn start(dir: &Path, env: &[(&str, &str)]) -> (Proc, String) {
    let dd = dir.to_str().unwrap();
    let p = spawn_with(
        "coordinator",
        &["coordinator", "--listen", "127.0.0.1:0", "--data-dir", dd],
        dir,
        env,
    );
    let addr = wait_for_file(&dir.join("coordinator.addr"), Duration::from_secs(30));
    (p, addr)
}

fn as_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_token_is_required_on_every_rpc() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let tf = token_file.to_str().unwrap();
    let (_c, addr) = start(dir.path(), &[("RIDGELINE_TOKEN_FILE", tf)]);
    let url = format!("http://{addr}");

    let none = run(&["status", "--coordinator", &url], T);
    assert!(
        !none.status.success() && stderr(&none).contains("requires a token"),
        "{}",
        stderr(&none)
    );
    let wrong = run_with(
        &["status", "--coordinator", &url],
        T,
        &[("RIDGELINE_TOKEN", "guess")],
    );
    assert!(
        !wrong.status.success() && stderr(&wrong).contains("wrong token"),
        "{}",
        stderr(&wrong)
    );
    let right = run_with(
        &["status", "--coordinator", &url],
        T,
        &[("RIDGELINE_TOKEN", "s3cret-token")],
    );
    assert!(right.status.success(), "{}", stderr(&right));

    // A worker without the token is refused for good, not left retrying.
    let w = run(&["worker", "--coordinator", &url], T);
    assert!(!w.status.success(), "a worker without the token ran");
    assert!(
        stderr(&w).contains("coordinator refused this worker")
            && stderr(&w).contains("requires a token"),
        "{}",
        stderr(&w)
    );
}

#[test]
fn no_token_no_listening_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let dd = dir.path().to_str().unwrap();
    let out = run(
        &["coordinator", "--listen", "0.0.0.0:0", "--data-dir", dd],
        T,
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("(not loopback) needs a token"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn tls_refuses_plaintext_and_mutual_tls_refuses_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let s = |p: &PathBuf| p.to_str().unwrap().to_owned();
    let (cert, key, ca) = (s(&p.server.0), s(&p.server.1), s(&p.ca));
    let (_c, addr) = start(
        dir.path(),
        &[
            ("RIDGELINE_TLS_CERT", &cert),
            ("RIDGELINE_TLS_KEY", &key),
            ("RIDGELINE_TLS_CLIENT_CA", &ca),
            ("RIDGELINE_TOKEN", "t0k"),
        ],
    );
    let tls_env = |with_client_cert: bool| {
        let mut v = vec![
            ("RIDGELINE_TLS_CA", ca.clone()),
            ("RIDGELINE_TLS_DOMAIN", "localhost".to_owned()),
            ("RIDGELINE_TOKEN", "t0k".to_owned()),
        ];
        if with_client_cert {
            v.push(("RIDGELINE_TLS_CERT", s(&p.client.0)));
            v.push(("RIDGELINE_TLS_KEY", s(&p.client.1)));
        }
        v
    };

    let https = format!("https://{addr}");

    let plain = run_with(
        &["status", "--coordinator", &format!("http://{addr}")],
        T,
        &[("RIDGELINE_TOKEN", "t0k")],
    );
    assert!(!plain.status.success(), "a plaintext client got in");
    let stranger = run_with(
        &["status", "--coordinator", &https],
        T,
        &as_refs(&tls_env(false)),
    );
    assert!(
        !stranger.status.success(),
        "a client without a certificate got in"
    );
    let friend_env = tls_env(true);
    let friend = run_with(
        &["status", "--coordinator", &https],
        T,
        &as_refs(&friend_env),
    );
    assert!(friend.status.success(), "{}", stderr(&friend));

    // A whole sweep over mutual TLS with the token: worker and client both.
    let _w = spawn_with(
        "worker",
        &["worker", "--coordinator", &https],
        dir.path(),
        &as_refs(&friend_env),
    );
    let spec = dir.path().join("tiny.toml");
    let data = root().join("examples/data/digits.csv.gz");
    std::fs::write(
        &spec,
        format!("name = \"tiny\"\n[data]\npath = {:?}\nlimit = 300\n[train]\nepochs = 2\n[search]\nalgorithm = \"random\"\nnum_samples = 3\n", data.to_str().unwrap()),
    )
    .unwrap();
    let out = run_with(
        &[
            "submit",
            spec.to_str().unwrap(),
            "--coordinator",
            &https,
            "--wait",
        ],
        Duration::from_secs(300),
        &as_refs(&friend_env),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("completed: 3/3 trials completed"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_worker_of_another_protocol_version_is_refused_with_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let (_c, addr) = start(dir.path(), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        let mut client =
            ridgeline_common::proto::worker_service_client::WorkerServiceClient::connect(format!(
                "http://{addr}"
            ))
            .await
            .unwrap();
        client
            .register(ridgeline_common::proto::RegisterRequest {
                protocol_version: 999,
                hostname: "old".into(),
                name: "old".into(),
                slots: 1,
                devices: vec![],
                ..Default::default()
            })
            .await
            .unwrap_err()
    });
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let want = format!(
        "worker speaks protocol version 999, this coordinator speaks {}",
        ridgeline_common::PROTOCOL_VERSION
    );
    assert!(status.message().starts_with(&want), "{}", status.message());
}
