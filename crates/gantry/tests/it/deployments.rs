//! `gantry rollback`, `gantry deployments` and `gantry rollout history` against `gantry serve`
//! with the Kubernetes API emulator as its cluster `prod`; and the whole chain: a build pushed to
//! a real registry, deployed by its digest.

use std::path::Path;
use std::time::Duration;

use expect_test::expect;
use gantry_testkit::FixtureRepo;
use gantry_testkit::kube::{Emulator, Resource};
use gantry_testkit::registry::Registry;
use serde_json::{Value, json};

use crate::serve::{Served, finished};
use crate::support::{Run, docker_available};

const NS: &str = "shop";
const NAME: &str = "backend";

/// An emulator where `shop/backend` went through `images`, one revision each.
fn shop_backend(images: &[&str]) -> Emulator {
    let emulator = Emulator::start();
    for image in images {
        emulator.apply_deployment(NS, NAME, image, 2);
        emulator.wait_for_rollout(NS, NAME, Duration::from_secs(10));
    }
    emulator
}

fn cluster_toml(name: &str, kubeconfig: &Path) -> String {
    format!(
        "\n[[cluster]]\nname = \"{name}\"\nkubeconfig = \"{}\"\n",
        kubeconfig.display()
    )
}

fn image(emulator: &Emulator) -> String {
    let deployment = emulator
        .get(Resource::Deployment, NS, NAME)
        .expect("the deployment");
    deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .expect("an image")
        .to_owned()
}

/// The table row whose first column is `first`, without its last column (a relative time), with
/// runs of spaces collapsed.
fn row(run: &Run, first: &str) -> String {
    let line = run
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first}: {}", run.debug()));
    let mut words: Vec<&str> = line.split_whitespace().collect();
    words.truncate(words.len().saturating_sub(2));
    words.join(" ")
}

fn ok(run: Run) -> String {
    assert_eq!(run.code, Some(0), "{}", run.debug());
    run.stdout
}

#[test]
fn rollback_deployments_and_history_from_the_cli() {
    let emulator = shop_backend(&["backend:1", "backend:2", "backend:3"]);
    let dir = tempfile::tempdir().expect("dir");
    let served = Served::start_with(
        dir.path(),
        "file:///nonexistent",
        &cluster_toml("prod", emulator.kubeconfig_path()),
    );
    let with = |args: &[&'static str]| -> Vec<&'static str> {
        [args, &["-n", NS, "--cluster", "prod"][..]].concat()
    };

    expect![[r#"
        deployment shop/backend on prod
        REVISION  CHANGE-CAUSE  IMAGE
        1         <none>        backend:1
        2         <none>        backend:2
        3         <none>        backend:3 (current)
    "#]]
    .assert_eq(&ok(served.cli(&with(&["rollout", "history", NAME]))));

    expect![[r#"
        rolled back shop/backend on prod to revision 2 (now revision 4)
    "#]]
    .assert_eq(&ok(served.cli(&with(&["rollback", NAME]))));
    assert_eq!(image(&emulator), "backend:2");
    expect![[r#"
        rolled back shop/backend on prod to revision 1 (now revision 5)
    "#]]
    .assert_eq(&ok(served.cli(&with(&[
        "rollback",
        NAME,
        "--to-revision",
        "1",
    ]))));
    assert_eq!(image(&emulator), "backend:1");
    expect![[r#"
        deployment shop/backend on prod
        REVISION  CHANGE-CAUSE  IMAGE
        3         <none>        backend:3
        4         <none>        backend:2
        5         <none>        backend:1 (current)
    "#]]
    .assert_eq(&ok(served.cli(&with(&["rollout", "history", NAME]))));

    let listed = served.cli(&["deployments"]);
    assert_eq!(listed.code, Some(0), "{}", listed.debug());
    assert!(
        listed.stdout.starts_with(
            "ID  KIND      CLUSTER  NAMESPACE/DEPLOYMENT  IMAGE BEFORE -> AFTER   REVISION  RESULT    CAUSE            WHEN\n"
        ),
        "{}",
        listed.debug()
    );
    assert_eq!(
        row(&listed, "2"),
        "2 rollback prod shop/backend backend:2 -> backend:1 4 -> 1 complete manual rollback"
    );
    assert_eq!(
        row(&listed, "1"),
        "1 rollback prod shop/backend backend:3 -> backend:2 3 -> 2 complete manual rollback"
    );
    let newest = served.json(&["deployments", "--cluster", "prod", "--limit", "1"]);
    assert_eq!(newest["deployments"].as_array().map(Vec::len), Some(1));
    assert_eq!(newest["deployments"][0]["revision_after"], 1);
    assert_eq!(
        served.json(&["deployments", "--cluster", "staging"]),
        json!({"deployments": []})
    );
    let history = served.json(&with(&["rollout", "history", NAME]));
    assert_eq!(history["revisions"][2]["images"], json!(["backend:1"]));
    let rolled = served.json(&with(&["rollback", NAME]));
    assert_eq!(
        (&rolled["result"], &rolled["current_revision"]),
        (&json!("complete"), &json!(6))
    );

    // Refusals: 2 for what cannot be done, 3 for what does not exist.
    let refused = |args: &[&str], code: i32, message: &str| {
        let run = served.cli(args);
        assert_eq!(run.code, Some(code), "{}", run.debug());
        assert_eq!(run.stderr.trim_end(), message, "{}", run.debug());
        assert!(run.stdout.is_empty(), "{}", run.debug());
    };
    refused(
        &with(&["rollback", NAME, "--to-revision", "9"]),
        2,
        "error: deployment shop/backend has no revision 9 (revisions: 3, 5, 6)",
    );
    refused(
        &with(&["rollback", "frontend"]),
        3,
        "error: deployment shop/frontend not found",
    );
    refused(
        &["rollout", "history", NAME, "-n", NS, "--cluster", "nowhere"],
        3,
        "error: cluster 'nowhere' is not configured (clusters: default, prod)",
    );
    emulator.patch_deployment(NS, NAME, &json!({"spec": {"paused": true}}));
    refused(
        &with(&["rollback", NAME]),
        2,
        "error: deployment shop/backend is paused; resume it first (kubectl rollout resume deployment/backend -n shop)",
    );
    let run = served.cli(&with(&["rollback", NAME, "--to-revision", "0"]));
    assert_eq!(run.code, Some(2), "{}", run.debug());
}

#[test]
fn a_build_is_deployed_by_its_digest() {
    if !docker_available() {
        return;
    }
    let Some(registry) = Registry::start_or_skip(&[("ci", "registry-password")]) else {
        return;
    };
    let emulator = shop_backend(&["backend:1"]);
    let repository = registry.image("shop/backend");
    let repo = FixtureRepo::new();
    repo.write("Dockerfile", "FROM local/busybox\nCOPY hello.txt /hello.txt\n")
        .write("hello.txt", format!("built for {}\n", emulator.url()))
        .write(
            ".gantry.yml",
            format!(
                "stages:\n  - name: image\n    build: {{ image: \"{repository}\", registry: test }}\n  - name: ship\n    needs: [image]\n    deploy: {{ cluster: prod, namespace: {NS}, deployment: {NAME}, image: \"${{stages.image.digest}}\", timeout: 60s }}\n"
            ),
        );
    repo.commit("build and ship");
    let dir = tempfile::tempdir().expect("dir");
    let extra = format!(
        "\n[[registry]]\nname = \"test\"\nkind = \"generic\"\naddress = \"{}\"\nusername = \"ci\"\npassword = \"registry-password\"\n{}",
        registry.address(),
        cluster_toml("prod", emulator.kubeconfig_path()),
    );
    let served = Served::start_with(dir.path(), &repo.file_url(), &extra);

    let run = served.json(&["trigger", "demo/app", "--branch", "main"]);
    let id = run["id"].to_string();
    let run = served.wait(&id, finished);
    let _cleanup = RemoveImages(
        run["stages"][0]["outputs"]
            .as_object()
            .map(|o| {
                o.values()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    );
    assert_eq!(run["status"], "success", "{run:#}");

    let outputs = &run["stages"][0]["outputs"];
    let digest = outputs["digest"].as_str().expect("a digest").to_owned();
    let tagged = outputs["image"].as_str().expect("an image");
    assert!(
        digest.starts_with(&format!("{repository}@sha256:")),
        "{digest}"
    );
    // The registry serves that digest under the tag that was pushed.
    let (_, tag) = tagged.rsplit_once(':').expect("a tag");
    let manifest = registry
        .manifest("shop/backend", tag)
        .expect("the pushed manifest");
    assert!(
        digest.ends_with(&manifest.digest),
        "{digest} / {manifest:?}"
    );
    // And the cluster runs exactly it.
    assert_eq!(image(&emulator), digest);
    emulator.wait_for_rollout(NS, NAME, Duration::from_secs(10));
    assert_eq!(
        run["stages"][1]["deploy"],
        json!({
            "cluster": "prod", "namespace": NS, "deployment": NAME,
            "image_before": "backend:1", "image_after": digest,
            "revision_before": 1, "revision_after": 2, "result": "complete",
        })
    );

    let shown = ok(served.cli(&["show", &id]));
    let output_row = shown
        .lines()
        .find(|l| l.starts_with("image") && l.contains("digest"))
        .unwrap_or_else(|| panic!("no digest row:\n{shown}"));
    assert_eq!(
        output_row.split_whitespace().collect::<Vec<_>>(),
        ["image", "digest", digest.as_str()]
    );
    assert!(shown.contains(&format!("backend:1 -> {digest}")), "{shown}");
    let listed = served.cli(&["deployments"]);
    let short = &digest[..digest.find("@sha256:").expect("a digest") + "@sha256:".len() + 12];
    assert_eq!(
        row(&listed, "1"),
        format!("1 deploy prod shop/backend backend:1 -> {short} 1 -> 2 complete -")
    );
}

/// Removes the images a test built from the Docker host when dropped.
pub(crate) struct RemoveImages(pub(crate) Vec<String>);

impl Drop for RemoveImages {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = std::process::Command::new("docker")
                .args(["image", "rm", "--force", image])
                .output();
        }
    }
}

/// `gantry run` with a deploy stage that names no cluster: the default kubeconfig
/// (`$KUBECONFIG`) is the cluster, as for kubectl; without one, the error says where it looked.
#[test]
fn a_deploy_stage_without_a_cluster_uses_the_default_kubeconfig() {
    // `gantry run` connects to Docker before anything else.
    if !docker_available() {
        return;
    }
    let emulator = shop_backend(&["backend:1"]);
    let project = crate::support::Project::new(&format!(
        "stages:\n  - name: ship\n    deploy: {{ namespace: {NS}, deployment: {NAME}, image: \"backend:2\", timeout: 60s }}\n"
    ));
    let home = tempfile::tempdir().expect("home");
    let run = |kubeconfig: Option<&Path>| {
        let mut command = project.gantry(&["run"]);
        command.env("HOME", home.path()).env_remove("KUBECONFIG");
        if let Some(path) = kubeconfig {
            command.env("KUBECONFIG", path);
        }
        Run::from(command.output().expect("gantry run"))
    };

    let shipped = run(Some(emulator.kubeconfig_path()));
    assert_eq!(shipped.code, Some(0), "{}", shipped.debug());
    emulator.wait_for_rollout(NS, NAME, Duration::from_secs(10));
    assert_eq!(image(&emulator), "backend:2");

    let nowhere = run(None);
    assert_eq!(nowhere.code, Some(1), "{}", nowhere.debug());
    assert!(
        nowhere.stdout.contains(
            "cannot configure cluster 'default' from the default kubeconfig ($KUBECONFIG or ~/.kube/config), or in a pod without one, the in-cluster service account: "
        ),
        "{}",
        nowhere.debug()
    );
}
