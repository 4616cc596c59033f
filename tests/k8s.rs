//! deploy/k8s rendered by kustomize (every variant, and variants combined as the README
//! shows) validates strictly against the Kubernetes 1.30 and current schemas
//! (kubernetes-validate), and has the properties an admin relies on: probes on the
//! health endpoints the binary serves, requests and limits, a non-root read-only pod,
//! the token and TLS wired to files that are mounted, flags and settings the binary
//! accepts, GPUs for the GPU variant, an Indexed Job that can finish. kustomize and
//! kubernetes-validate are fetched by tests/k8s/tools.sh on first use; the test fails,
//! never skips, without them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{KeptOnFailure, bin, root};
use serde_json::Value;

fn tools() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target"))
            .join("k8s-tools");
        let out = Command::new("bash")
            .arg(root().join("tests/k8s/tools.sh"))
            .arg(&dir)
            .output()
            .expect("run tests/k8s/tools.sh");
        assert!(
            out.status.success(),
            "tests/k8s/tools.sh could not provide kustomize and kubernetes-validate:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// `kustomize build` of a folder: its YAML and its objects.
fn render(dir: &Path) -> (String, Vec<Value>) {
    let out = Command::new(tools().join("kustomize"))
        .arg("build")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kustomize build {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let objects = serde_norway::Deserializer::from_str(&yaml)
        .map(|d| {
            let v: serde_norway::Value = serde::Deserialize::deserialize(d).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .collect();
    (yaml, objects)
}

/// A kustomization of our own that combines deploy/k8s folders, as a user writes one.
fn overlay(tmp: &Path, name: &str, resources: &[&str], components: &[&str]) -> PathBuf {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    // kustomize takes relative paths only: up to / from the overlay, then down.
    let up = "../".repeat(dir.components().count() - 1);
    let list = |xs: &[&str]| {
        xs.iter()
            .map(|x| {
                let to = root().join("deploy/k8s").join(x);
                format!("  - {up}{}\n", to.strip_prefix("/").unwrap().display())
            })
            .collect::<String>()
    };
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!(
            "resources:\n{}components:\n{}",
            list(resources),
            list(components)
        ),
    )
    .unwrap();
    dir
}

/// Strict validation of rendered YAML against one Kubernetes version's schemas.
fn validate(yaml: &str, name: &str, tmp: &Path, version: &str) {
    let f = tmp.join(format!("{name}-{version}.yaml"));
    std::fs::write(&f, yaml).unwrap();
    let out = Command::new(tools().join("venv/bin/kubernetes-validate"))
        .args(["--strict", "-k", version])
        .arg(&f)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} against {version}:\n{text}");
    // Passing must mean validated: a kind without a schema only warns.
    assert!(!text.contains("WARN"), "{name} against {version}:\n{text}");
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn get<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    find(objs, kind, name).unwrap_or_else(|| panic!("no {kind}/{name}"))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// A container's args as the process gets them: Kubernetes fills in `$(VAR)` from the
/// container's environment.
fn args(c: &Value) -> Vec<String> {
    strs(&c["args"])
        .into_iter()
        .map(
            |a| match a.strip_prefix("$(").and_then(|v| v.strip_suffix(')')) {
                Some(var) => env(c, var)
                    .unwrap_or_else(|| panic!("{a}: no such variable"))
                    .to_owned(),
                None => a,
            },
        )
        .collect()
}

/// The value following `flag` in a container's args.
fn flag(c: &Value, name: &str) -> Option<String> {
    let args = args(c);
    args.iter()
        .position(|a| a == name)
        .map(|i| args[i + 1].clone())
}

fn env<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
}

/// The settings the binary reads from RIDGELINE_* variables (src/settings.rs's KEYS):
/// others are ignored by design, so a misspelt one would silently do nothing.
fn setting_names() -> Vec<String> {
    let src = include_str!("../src/settings.rs");
    let keys = src.split("const KEYS: &[&str] = &[").nth(1).unwrap();
    let keys = keys.split("];").next().unwrap();
    keys.split('"')
        .skip(1)
        .step_by(2)
        .map(|k| format!("RIDGELINE_{}", k.to_uppercase()))
        .collect()
}

/// The volume (from the pod's volumes) mounted at the folder holding `path`.
fn volume_for<'a>(pod: &'a Value, c: &Value, path: &str) -> &'a Value {
    let m = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
        .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
        .unwrap_or_else(|| panic!("{path} is on no mounted volume: {c}"));
    pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == m["name"])
        .unwrap_or_else(|| panic!("mount {} has no volume", m["name"]))
}

/// What every workload's pod must have: a non-root, read-only, capability-free
/// container with requests and limits, settings the binary knows, flags it accepts,
/// every mount backed by a volume, and the token from the Secret.
fn check_pod(what: &str, w: &Value) -> (Value, Value) {
    let pod = w["spec"]["template"]["spec"].clone();
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
    assert!(
        pod["securityContext"]["runAsUser"].as_u64().unwrap() > 0,
        "{what}"
    );
    assert_eq!(pod["automountServiceAccountToken"], false, "{what}");
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "{what}");
    let c = containers[0].clone();
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"], "{what}");
    for kind in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(c["resources"][kind][r].is_string(), "{what}: {kind}.{r}");
        }
    }
    let known = setting_names();
    for e in c["env"].as_array().unwrap() {
        let n = e["name"].as_str().unwrap();
        if n.starts_with("RIDGELINE_") {
            assert!(known.iter().any(|k| k == n), "{what}: {n} is no setting");
        }
    }
    // A StatefulSet's claims are volumes too.
    let claims = w["spec"]["volumeClaimTemplates"].as_array().cloned();
    let volumes: Vec<&Value> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["name"])
        .chain(claims.iter().flatten().map(|c| &c["metadata"]["name"]))
        .collect();
    for m in c["volumeMounts"].as_array().unwrap() {
        assert!(
            volumes.contains(&&m["name"]),
            "{what}: mount {} has no volume",
            m["name"]
        );
    }
    // Writable paths the binary uses are volumes, not the read-only image.
    assert!(
        volume_for(&pod, &c, "/tmp/x")["emptyDir"].is_object(),
        "{what}"
    );
    let token = env(&c, "RIDGELINE_TOKEN_FILE").expect("a token file");
    assert_eq!(
        volume_for(&pod, &c, token)["secret"]["secretName"],
        "ridgeline-token",
        "{what}"
    );
    // The binary takes these flags: clap refuses an unknown one before --help.
    let mut args = args(&c);
    args.push("--help".into());
    let out = Command::new(bin()).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{what}: ridgeline {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (pod, c)
}

/// Probes on the metrics port the process really listens on, which Prometheus is told
/// to scrape.
fn check_probes(what: &str, w: &Value, c: &Value) {
    let port = flag(c, "--metrics-listen")
        .and_then(|a| a.rsplit(':').next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{what}: --metrics-listen"));
    let named = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .unwrap();
    assert_eq!(named["containerPort"], port, "{what}");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let p = &c[probe]["httpGet"];
        assert_eq!(p["path"], path, "{what}: {probe}");
        assert_eq!(p["port"], "metrics", "{what}: {probe}");
    }
    let ann = &w["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true", "{what}");
    assert_eq!(ann["prometheus.io/port"], port.to_string(), "{what}");
}

fn worker_of(objs: &[Value]) -> &Value {
    objs.iter()
        .find(|o| o["metadata"]["name"] == "ridgeline-worker")
        .expect("a worker workload")
}

#[test]
fn manifests_validate_and_have_what_an_admin_relies_on() {
    let tmp = KeptOnFailure::new();
    let k8s = root().join("deploy/k8s");
    let variants = [
        ("base", k8s.join("base")),
        ("gpu", k8s.join("gpu")),
        ("indexed-job", k8s.join("indexed-job")),
        ("tls", k8s.join("tls")),
        ("submit", k8s.join("submit")),
        (
            "indexed-job-gpu",
            overlay(tmp.path(), "ijg", &["indexed-job"], &["components/gpu"]),
        ),
        (
            "submit-tls",
            overlay(tmp.path(), "st", &["submit"], &["components/tls"]),
        ),
    ];
    let mut rendered = std::collections::HashMap::new();
    for (name, dir) in &variants {
        let (yaml, objs) = render(dir);
        for v in ["1.30.0", "1.37.0"] {
            validate(&yaml, name, tmp.path(), v);
        }
        for o in objs.iter().filter(|o| o["spec"]["template"].is_object()) {
            check_pod(
                &format!("{name}: {}/{}", o["kind"], o["metadata"]["name"]),
                o,
            );
        }
        rendered.insert(*name, objs);
    }

    // The coordinator: one replica, its data on a claim that outlives the pod, probes,
    // Services on the ports it listens on.
    let base = &rendered["base"];
    let sts = get(base, "StatefulSet", "ridgeline-coordinator");
    assert_eq!(sts["spec"]["replicas"], 1);
    let (_, c) = check_pod("coordinator", sts);
    check_probes("coordinator", sts, &c);
    let data = flag(&c, "--data-dir").unwrap();
    let claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"].clone();
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == data)
        .expect("the data folder is mounted");
    assert_eq!(mount["name"], claim);
    assert!(c["startupProbe"]["httpGet"]["path"] == "/healthz");
    let grpc = flag(&c, "--listen").unwrap();
    let grpc: u64 = grpc.rsplit(':').next().unwrap().parse().unwrap();
    let svc = get(base, "Service", "ridgeline");
    let labels = &sts["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "the Service selects the coordinator");
    }
    let port = |name: &str| {
        svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["port"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(port("grpc"), grpc);
    assert_eq!(
        sts["spec"]["serviceName"],
        get(base, "Service", "ridgeline-coordinator")["metadata"]["name"]
    );

    // CPU workers: a Deployment on the CPU, reaching the coordinator's Service, with
    // the datasets volume read-only.
    let w = get(base, "Deployment", "ridgeline-worker");
    let (pod, c) = check_pod("worker", w);
    check_probes("worker", w, &c);
    assert_eq!(env(&c, "RIDGELINE_DEVICE"), Some("cpu"));
    let url = env(&c, "RIDGELINE_COORDINATOR").unwrap();
    assert_eq!(url, format!("http://ridgeline:{grpc}"));
    let ds = volume_for(&pod, &c, "/datasets/digits.csv.gz");
    assert_eq!(
        ds["persistentVolumeClaim"]["claimName"],
        "ridgeline-datasets"
    );
    assert!(find(base, "PersistentVolumeClaim", "ridgeline-datasets").is_some());
    assert!(c["resources"]["limits"]["nvidia.com/gpu"].is_null());
    let trial_root = flag(&c, "--trial-root").unwrap();
    assert!(volume_for(&pod, &c, &trial_root)["emptyDir"].is_object());

    // GPU workers: a GPU each, `--device cuda:0`, the CUDA image; the coordinator keeps
    // the CPU image.
    for name in ["gpu", "indexed-job-gpu"] {
        let objs = &rendered[name];
        let w = worker_of(objs);
        let c = &w["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "1", "{name}");
        assert_eq!(flag(c, "--device").as_deref(), Some("cuda:0"), "{name}");
        assert!(
            c["image"].as_str().unwrap().starts_with("ridgeline-cuda"),
            "{name}"
        );
        let coord = get(objs, "StatefulSet", "ridgeline-coordinator");
        assert_eq!(
            coord["spec"]["template"]["spec"]["containers"][0]["image"],
            "ridgeline:latest"
        );
    }

    // The Indexed Job: no Deployment left, workers that leave when idle so the Job can
    // complete, and the same pod as the Deployment's.
    for name in ["indexed-job", "indexed-job-gpu"] {
        let objs = &rendered[name];
        assert!(
            find(objs, "Deployment", "ridgeline-worker").is_none(),
            "{name}"
        );
        let j = get(objs, "Job", "ridgeline-worker");
        assert_eq!(j["spec"]["completionMode"], "Indexed");
        let c = &j["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(flag(c, "--idle-timeout").as_deref(), Some("2m"), "{name}");
        check_probes(name, j, c);
    }
    assert_eq!(
        get(&rendered["indexed-job"], "Job", "ridgeline-worker")["spec"]["template"]["spec"]["securityContext"],
        w["spec"]["template"]["spec"]["securityContext"]
    );

    // TLS: the coordinator serves its certificate; workers and the submit job use
    // https with the CA, all from mounted files.
    let tls = &rendered["tls"];
    let sts = get(tls, "StatefulSet", "ridgeline-coordinator");
    let (pod, c) = check_pod("tls coordinator", sts);
    for var in ["RIDGELINE_TLS_CERT", "RIDGELINE_TLS_KEY"] {
        let f = env(&c, var).unwrap();
        assert_eq!(
            volume_for(&pod, &c, f)["secret"]["secretName"],
            "ridgeline-tls"
        );
    }
    for (name, objs) in [("tls", tls), ("submit-tls", &rendered["submit-tls"])] {
        let w = objs
            .iter()
            .find(|o| o["kind"] == "Deployment" || o["kind"] == "Job")
            .unwrap();
        let (pod, c) = check_pod(name, w);
        assert!(
            env(&c, "RIDGELINE_COORDINATOR")
                .unwrap()
                .starts_with("https://")
        );
        let ca = env(&c, "RIDGELINE_TLS_CA").unwrap();
        assert_eq!(
            volume_for(&pod, &c, ca)["secret"]["secretName"],
            "ridgeline-tls"
        );
        assert!(
            env(&c, "RIDGELINE_TLS_KEY").is_none(),
            "clients hold no key"
        );
    }

    // The submit Job: the spec from its ConfigMap is one ridgeline accepts, its data on
    // the datasets volume the Job mounts; a failed submit is not retried blindly.
    let sub = &rendered["submit"];
    let j = get(sub, "Job", "ridgeline-submit");
    assert_eq!(j["spec"]["backoffLimit"], 0);
    let (pod, c) = check_pod("submit", j);
    let args = args(&c);
    assert_eq!(args[0], "submit");
    assert!(args.contains(&"--wait".to_owned()));
    let vol = volume_for(&pod, &c, &args[1]);
    let cm_name = vol["configMap"]["name"].as_str().unwrap();
    let cm = get(sub, "ConfigMap", cm_name);
    let file = Path::new(&args[1]).file_name().unwrap().to_str().unwrap();
    let text = cm["data"][file]
        .as_str()
        .expect("the spec is in the ConfigMap");
    let spec = ridgeline_common::spec::SweepSpec::from_toml(text).unwrap();
    let data_path = spec.data.as_ref().unwrap().path.to_str().unwrap();
    assert_eq!(
        volume_for(&pod, &c, data_path)["persistentVolumeClaim"]["claimName"],
        "ridgeline-datasets"
    );

    // Prometheus Operator objects (no schema to validate them against): they select
    // the coordinator's Service and the worker pods, on ports named as scraped.
    let (_, mon) = render(&k8s.join("monitoring"));
    let sm = get(&mon, "ServiceMonitor", "ridgeline-coordinator");
    let svc = get(base, "Service", "ridgeline");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&svc["metadata"]["labels"][k], v);
    }
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    assert!(port("metrics") > 0);
    let pm = get(&mon, "PodMonitor", "ridgeline-worker");
    let w = get(base, "Deployment", "ridgeline-worker");
    for (k, v) in pm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&w["spec"]["template"]["metadata"]["labels"][k], v);
    }
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
}

#[test]
fn a_broken_manifest_is_caught() {
    // The checks above can fail: a misspelt field fails strict validation, and a
    // missing probe fails the property checks.
    let tmp = KeptOnFailure::new();
    let (yaml, objs) = render(&root().join("deploy/k8s/base"));
    let broken = yaml.replacen("readinessProbe:", "readinesProbe:", 1);
    let f = tmp.path().join("broken.yaml");
    std::fs::write(&f, broken).unwrap();
    let out = Command::new(tools().join("venv/bin/kubernetes-validate"))
        .args(["--strict", "-k", "1.30.0"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a misspelt field passed strict validation"
    );
    let mut w = get(&objs, "Deployment", "ridgeline-worker").clone();
    w["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = Value::Null;
    let c = w["spec"]["template"]["spec"]["containers"][0].clone();
    let r = std::panic::catch_unwind(|| check_probes("broken", &w, &c));
    assert!(r.is_err(), "a worker without a readiness probe passed");
}
