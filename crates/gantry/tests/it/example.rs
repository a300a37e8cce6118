//! The example application (`pipelines/examples/flask-backend`) end to end,
//! as the README tells it: a signed push webhook reaches `gantry serve`, the
//! tests run, the image is built and pushed to a real registry, the
//! Deployment rolls over on the Kubernetes API emulator; then a version that
//! crash-loops is pushed and rolled back on its own.

use std::path::Path;
use std::time::Duration;

use gantry_testkit::FixtureRepo;
use gantry_testkit::kube::{Emulator, Resource};
use gantry_testkit::registry::Registry;
use serde_json::Value;

use crate::serve::{Served, finished};
use crate::support::docker_available;

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../pipelines/examples/flask-backend"
);

fn example_file(name: &str) -> String {
    std::fs::read_to_string(Path::new(EXAMPLE).join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn deployed_image(emulator: &Emulator) -> String {
    let d = emulator
        .get(Resource::Deployment, "demo", "flask-backend")
        .expect("the Deployment");
    d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Removes, even when the test fails, the tags the builds left on the engine: they name this
/// test's throwaway registry (`127.0.0.1:<port>/...`), so each run would add new ones.
struct Untag(String);

impl Drop for Untag {
    fn drop(&mut self) {
        let listed = std::process::Command::new("docker")
            .args([
                "image",
                "ls",
                "--format",
                "{{.Repository}}:{{.Tag}}",
                "--filter",
            ])
            .arg(format!("reference={}/*/*", self.0))
            .output();
        let Ok(listed) = listed else { return };
        let tags: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        if !tags.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["image", "rm", "--no-prune"])
                .args(&tags)
                .output();
        }
    }
}

fn stage<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or(&Value::Null)
}

#[test]
fn the_example_app_ships_and_a_crashing_version_is_rolled_back() {
    if !docker_available() {
        return;
    }
    let Some(registry) = Registry::start_or_skip(&[("ci", "example-registry-password")]) else {
        return;
    };
    let _untag = Untag(registry.address());
    let emulator = Emulator::start();
    emulator.create_namespace("demo");
    let deployment: Value = yaml_serde::from_str(&example_file("k8s/deployment.yaml"))
        .expect("the example's Deployment parses");
    emulator.create(Resource::Deployment, "demo", deployment);
    emulator.wait_for_rollout("demo", "flask-backend", Duration::from_secs(20));

    // The example's files in a repository of its own; its pipeline points at this test's registry.
    let repo = FixtureRepo::new();
    for name in [
        "app.py",
        "test_app.py",
        "Dockerfile",
        "Dockerfile.crash",
        ".dockerignore",
    ] {
        repo.write(name, example_file(name));
    }
    let pipeline = example_file(".gantry.yml").replace("localhost:5000", &registry.address());
    repo.write(".gantry.yml", &pipeline);
    let good = repo.commit("the example app");

    let dir = tempfile::tempdir().expect("dir");
    let config = format!(
        "\n[[registry]]\nname = \"local\"\naddress = \"{}\"\nusername = \"ci\"\npassword = \"example-registry-password\"\n\n[[cluster]]\nname = \"staging\"\nkubeconfig = \"{}\"\n",
        registry.address(),
        emulator.kubeconfig_path().display()
    );
    let served = Served::start_with(dir.path(), &repo.file_url(), &config);

    // 1. A push to main ships it.
    assert_eq!(served.push("example-1", &good, &repo.file_url()), 202);
    let id = served.wait_delivery_run("example-1");
    let run = served.wait(&id, finished);
    assert_eq!(run["status"], "success", "{run:#}");
    let digest = stage(&run, "image")["outputs"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(digest.contains("/demo/flask-backend@sha256:"), "{run:#}");
    assert_eq!(
        deployed_image(&emulator),
        digest,
        "the cluster runs exactly the pushed digest"
    );
    let manifest = registry
        .manifest("demo/flask-backend", &good[..8])
        .expect("the registry has the commit's tag");
    assert!(
        digest.ends_with(&manifest.digest),
        "{digest} vs {}",
        manifest.digest
    );
    let log = served.cli(&["logs", &id, "--stage", "test"]);
    assert!(log.stdout.contains("passed"), "{}", log.debug());

    // 2. A version that crashes at start. (The emulator's kubelet crash-loops images whose name
    // says `crash`, so this version is pushed under that name.)
    let crashing = pipeline
        .replace("dockerfile: Dockerfile\n", "dockerfile: Dockerfile.crash\n")
        .replace("/demo/flask-backend\n", "/demo/flask-backend-crash\n");
    assert_ne!(
        crashing, pipeline,
        "the example's pipeline still has the lines this test changes"
    );
    repo.write(".gantry.yml", &crashing);
    let bad = repo.commit("a version that crashes at start");
    assert_eq!(served.push("example-2", &bad, &repo.file_url()), 202);
    let id = served.wait_delivery_run("example-2");
    let run = served.wait(&id, finished);
    assert_eq!(run["status"], "failure", "{run:#}");
    let reason = stage(&run, "deploy")["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.starts_with("rolled back to revision "), "{reason}");
    assert!(reason.contains("CrashLoopBackOff"), "{reason}");
    assert_eq!(
        deployed_image(&emulator),
        digest,
        "the good version runs again"
    );

    // The history shows the good deploy, the failed one and the revert.
    let history = served.json(&["deployments"]);
    let kinds: Vec<String> = history["deployments"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e["kind"].as_str().unwrap_or(""),
                        e["result"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        kinds,
        ["rollback complete", "deploy rolled_back", "deploy complete"],
        "{history:#}"
    );

    // And Prometheus sees it all.
    let metrics = served.metrics();
    for series in [
        "gantry_deploys_total{cluster=\"staging\",result=\"success\"} 1",
        "gantry_deploys_total{cluster=\"staging\",result=\"rolled_back\"} 1",
        "gantry_rollbacks_total{cluster=\"staging\",trigger=\"automatic\",result=\"success\"} 1",
        "gantry_rollback_duration_seconds_count{cluster=\"staging\",trigger=\"automatic\",result=\"success\"} 1",
        // Two runs pushed two tags each, with the credentials named `local`.
        "gantry_image_pushes_total{registry=\"local\",result=\"success\"} 4",
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from /metrics:\n{metrics}"
        );
    }
}

/// The example's manifests fit together as the README's chain needs: the Service selects the
/// Deployment's pods and names their port, the ServiceMonitor selects the Service and scrapes
/// that port by name and carries kube-prometheus-stack's `release` label, and the Deployment
/// and its container are the ones the pipeline's deploy stage names.
#[test]
fn the_example_manifests_agree_with_each_other_and_the_pipeline() {
    let yaml = |name: &str| -> Value {
        yaml_serde::from_str(&example_file(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let deployment = yaml("k8s/deployment.yaml");
    let service = yaml("k8s/service.yaml");
    let monitor = yaml("k8s/servicemonitor.yaml");
    let pipeline = gantry_pipeline::parse(".gantry.yml", &example_file(".gantry.yml"))
        .unwrap_or_else(|d| panic!("{d}"));

    assert_eq!(
        (
            deployment["kind"].as_str(),
            service["kind"].as_str(),
            monitor["kind"].as_str()
        ),
        (Some("Deployment"), Some("Service"), Some("ServiceMonitor"))
    );
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let selects = |selector: &Value, labels: &Value| {
        selector
            .as_object()
            .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| &labels[k] == v))
    };
    assert!(selects(
        &deployment["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    assert!(
        selects(&service["spec"]["selector"], pod_labels),
        "{service:#}"
    );
    assert!(
        selects(
            &monitor["spec"]["selector"]["matchLabels"],
            &service["metadata"]["labels"]
        ),
        "{monitor:#}"
    );
    assert_eq!(
        monitor["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let port = container["ports"][0]["name"]
        .as_str()
        .expect("a named container port");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], port);
    let service_port = service["spec"]["ports"][0]["name"]
        .as_str()
        .expect("a named port");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], service_port);
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    for manifest in [&deployment, &service, &monitor] {
        assert_eq!(manifest["metadata"]["namespace"], "demo");
    }

    let deploy = pipeline
        .stages
        .iter()
        .find_map(|s| match &s.kind {
            gantry_pipeline::StageKind::Deploy(d) => Some(d.clone()),
            _ => None,
        })
        .expect("a deploy stage");
    assert_eq!(
        (
            deploy.namespace.as_str(),
            deploy.deployment.as_str(),
            deploy.container.as_deref()
        ),
        (
            "demo",
            deployment["metadata"]["name"].as_str().unwrap_or_default(),
            container["name"].as_str()
        )
    );
}
