//! The Kubernetes API emulator against the reference client, the real `kubectl`: if kubectl can
//! list, roll out, pause, patch and undo through the emulator and sees what it would see on a
//! real cluster, the emulator is faithful enough for gantry-kube's tests.

use std::time::Duration;

use expect_test::{Expect, expect};
use gantry_testkit::kube::{Emulator, Kubectl, Resource};
use serde_json::{Value, json};

/// A quick cluster: pods are ready after 100 ms.
fn emulator() -> Emulator {
    Emulator::builder()
        .pod_ready_after(Duration::from_millis(100))
        .start()
}

/// kubectl's aligned columns as `a | b | c`, with ages (`3s`, `2m5s`) as `<age>` and generated
/// name suffixes as `<id>`, so outputs can be compared exactly.
fn columns(output: &str) -> String {
    output
        .lines()
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|cell| !cell.is_empty())
                .map(normalize_cell)
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn normalize_cell(cell: &str) -> String {
    let is_age = |s: &str| {
        let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        !s.is_empty()
            && s.chars().next().is_some_and(|c| c.is_ascii_digit())
            && s.ends_with(['s', 'm', 'h'])
            && s.chars().all(|c| c.is_ascii_digit() || "smh".contains(c))
            && !digits.is_empty()
    };
    if is_age(cell) {
        return "<age>".to_owned();
    }
    // web-7d4b9c6f5-x2b4k: the random pod suffix.
    let parts: Vec<&str> = cell.split('-').collect();
    if parts.len() >= 3
        && parts.last().is_some_and(|s| s.len() == 5)
        && parts[parts.len() - 2].len() >= 8
    {
        return format!("{}-<id>", parts[..parts.len() - 1].join("-"));
    }
    cell.to_owned()
}

fn check(actual: &str, expected: Expect) {
    expected.assert_eq(&columns(actual));
}

fn hash_of(rs: &Value) -> String {
    rs["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object["metadata"]["annotations"][key].as_str()
}

/// The ReplicaSets of `app`, newest revision last.
fn replica_sets(emulator: &Emulator, namespace: &str, app: &str) -> Vec<Value> {
    let mut sets: Vec<Value> = emulator
        .list(Resource::ReplicaSet, Some(namespace))
        .into_iter()
        .filter(|rs| rs["metadata"]["labels"]["app"] == app)
        .collect();
    sets.sort_by_key(|rs| {
        annotation(rs, "deployment.kubernetes.io/revision")
            .and_then(|r| r.parse::<u32>().ok())
            .unwrap_or(0)
    });
    sets
}

const ROLLOUT: Duration = Duration::from_secs(20);

#[test]
fn get_lists_deployments_in_a_namespace() {
    let emulator = emulator();
    let Some(kubectl) = Kubectl::new(&emulator) else {
        return;
    };
    emulator.apply_deployment("shop", "web", "web:1", 2);
    emulator.apply_deployment("shop", "api", "api:1", 1);
    emulator.apply_deployment("default", "elsewhere", "x:1", 1);
    emulator.wait_for_rollout("shop", "web", ROLLOUT);
    emulator.wait_for_rollout("shop", "api", ROLLOUT);

    check(
        &kubectl.ok(&["get", "deploy", "-n", "shop"]),
        expect![[r#"
            NAME | READY | UP-TO-DATE | AVAILABLE | AGE
            api | 1/1 | 1 | 1 | <age>
            web | 2/2 | 2 | 2 | <age>"#]],
    );
    check(
        &kubectl.ok(&["get", "deploy", "-n", "shop", "-o", "wide", "web"]),
        expect![[r#"
            NAME | READY | UP-TO-DATE | AVAILABLE | AGE | CONTAINERS | IMAGES | SELECTOR
            web | 2/2 | 2 | 2 | <age> | web | web:1 | app=web"#]],
    );
    check(
        &kubectl.ok(&["get", "deployments.apps", "-A"]),
        expect![[r#"
            NAMESPACE | NAME | READY | UP-TO-DATE | AVAILABLE | AGE
            default | elsewhere | 1/1 | 1 | 1 | <age>
            shop | api | 1/1 | 1 | 1 | <age>
            shop | web | 2/2 | 2 | 2 | <age>"#]],
    );

    let list: Value =
        serde_json::from_str(&kubectl.ok(&["get", "deploy", "-n", "shop", "-o", "json"])).unwrap();
    assert_eq!(list["kind"], "List");
    let web = &list["items"][1];
    assert_eq!(web["kind"], "Deployment");
    assert_eq!(web["apiVersion"], "apps/v1");
    assert_eq!(web["metadata"]["name"], "web");
    assert_eq!(web["metadata"]["generation"], 1);
    assert_eq!(
        web["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"],
        "128Mi"
    );
    assert_eq!(web["status"]["availableReplicas"], 2);
    assert_eq!(web["status"]["observedGeneration"], 1);
    let conditions: Vec<(&str, &str, &str)> = web["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap(),
                c["status"].as_str().unwrap(),
                c["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        conditions,
        [
            ("Available", "True", "MinimumReplicasAvailable"),
            ("Progressing", "True", "NewReplicaSetAvailable")
        ]
    );

    let error = kubectl.fails(&["get", "deploy", "nope", "-n", "shop"]);
    assert!(
        error.contains("Error from server (NotFound): deployments.apps \"nope\" not found"),
        "{error}"
    );
}

#[test]
fn get_replica_sets_and_pods_by_label() {
    let emulator = emulator();
    let Some(kubectl) = Kubectl::new(&emulator) else {
        return;
    };
    emulator.apply_deployment("default", "web", "web:1", 2);
    emulator.apply_deployment("default", "api", "api:1", 1);
    emulator.wait_for_rollout("default", "web", ROLLOUT);
    emulator.wait_for_rollout("default", "api", ROLLOUT);
    let hash = hash_of(&replica_sets(&emulator, "default", "web")[0]);

    let output = kubectl.ok(&["get", "rs,pods", "-l", "app=web"]);
    let expected = format!(
        "NAME | DESIRED | CURRENT | READY | AGE\n\
         replicaset.apps/web-{hash} | 2 | 2 | 2 | <age>\n\
         \n\
         NAME | READY | STATUS | RESTARTS | AGE\n\
         pod/web-{hash}-<id> | 1/1 | Running | 0 | <age>\n\
         pod/web-{hash}-<id> | 1/1 | Running | 0 | <age>"
    );
    assert_eq!(columns(&output), expected);

    // Set-based selectors select the same.
    for selector in ["app in (web)", "app notin (api),app", "app!=api,!missing"] {
        let names = kubectl.ok(&["get", "pods", "-l", selector, "-o", "name"]);
        assert_eq!(names.lines().count(), 2, "{selector}: {names}");
        assert!(
            names
                .lines()
                .all(|n| n.starts_with(&format!("pod/web-{hash}-"))),
            "{selector}: {names}"
        );
    }
    let pods: Value =
        serde_json::from_str(&kubectl.ok(&["get", "pods", "-l", "app=web", "-o", "json"])).unwrap();
    let pod = &pods["items"][0];
    assert_eq!(
        pod["metadata"]["labels"],
        json!({"app": "web", "pod-template-hash": hash})
    );
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
    assert_eq!(
        pod["metadata"]["ownerReferences"][0]["name"],
        format!("web-{hash}")
    );
    assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(pod["status"]["containerStatuses"][0]["ready"], true);
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["requests"]["memory"],
        "128Mi"
    );
}

#[test]
fn rollout_status_waits_for_a_rollout() {
    let emulator = emulator();
    let Some(kubectl) = Kubectl::new(&emulator) else {
        return;
    };
    emulator.apply_deployment("default", "web", "web:1", 3);
    kubectl.ok(&["set", "image", "deploy/web", "web=web:2"]);
    let output = kubectl.ok(&["rollout", "status", "deploy/web", "--timeout=30s"]);
    assert!(
        output.ends_with("deployment \"web\" successfully rolled out\n"),
        "{output}"
    );
    let web = emulator
        .get(Resource::Deployment, "default", "web")
        .unwrap();
    assert_eq!(web["status"]["updatedReplicas"], 3);
    assert_eq!(web["status"]["availableReplicas"], 3);
    assert_eq!(
        web["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:2"
    );

    // It watched the deployment rather than polling it.
    let watches = emulator
        .requests()
        .into_iter()
        .filter(|r| r.is_watch())
        .count();
    assert!(watches >= 1);
}

#[test]
fn rollout_status_fails_when_the_progress_deadline_passes() {
    let emulator = emulator();
    let Some(kubectl) = Kubectl::new(&emulator) else {
        return;
    };
    emulator.apply_deployment("default", "web", "web:1", 2);
    emulator.wait_for_rollout("default", "web", ROLLOUT);
    kubectl.ok(&[
        "patch",
        "deploy/web",
        "-p",
        r#"{"spec":{"progressDeadlineSeconds":2,"template":{"spec":{"containers":[{"name":"web","image":"web:slow"}]}}}}"#,
    ]);
    let output = kubectl.fails(&["rollout", "status", "deploy/web", "--timeout=30s"]);
    assert!(
        output.contains("error: deployment \"web\" exceeded its progress deadline"),
        "{output}"
    );

    let web = emulator
        .get(Resource::Deployment, "default", "web")
        .unwrap();
    let new_rs = replica_sets(&emulator, "default", "web").pop().unwrap();
    let progressing = web["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap();
    assert_eq!(progressing["status"], "False");
    assert_eq!(progressing["reason"], "ProgressDeadlineExceeded");
    assert_eq!(
        progressing["message"],
        format!(
            "ReplicaSet \"{}\" has timed out progressing.",
            new_rs["metadata"]["name"].as_str().unwrap()
        )
    );
    // maxUnavailable rounds down to 0: the old pods keep serving.
    assert_eq!(web["status"]["availableReplicas"], 2);
    assert_eq!(web["status"]["updatedReplicas"], 1);
}

#[test]
fn set_image_history_and_undo() {
    let emulator = emulator();
    let Some(kubectl) = Kubectl::new(&emulator) else {
        return;
    };
    emulator.apply_deployment("default", "web", "web:1", 3);
    emulator.wait_for_rollout("default", "web", ROLLOUT);
    kubectl.ok(&[
        "annotate",
        "deploy/web",
        "kubernetes.io/change-cause=first release",
    ]);
    let output = kubectl.ok(&["set", "image", "deploy/web", "web=web:2"]);
    assert_eq!(output, "deployment.apps/web image updated\n");
    kubectl.ok(&[
        "annotate",
        "--overwrite",
        "deploy/web",
        "kubernetes.io/change-cause=image web:2",
    ]);
    kubectl.ok(&["rollout", "status", "deploy/web", "--timeout=30s"]);

    check(
        &kubectl.ok(&["rollout", "history", "deploy/web"]),
        expect![[r#"
            deployment.apps/web
            REVISION | CHANGE-CAUSE
            1 | first release
            2 | image web:2
        "#]],
    );
    let revision_two = kubectl.ok(&["rollout", "history", "deploy/web", "--revision=2"]);
    assert!(
        revision_two.contains("Image:\tweb:2") || revision_two.contains("Image:      web:2"),
        "{revision_two}"
    );

    // Undo: back to revision 1's template, as revision 3, by scaling revision 1's ReplicaSet
    // back up.
    let [first, second] =
        <[Value; 2]>::try_from(replica_sets(&emulator, "default", "web")).unwrap();
    assert_eq!(
        kubectl.ok(&["rollout", "undo", "deploy/web"]),
        "deployment.apps/web rolled back\n"
    );
    kubectl.ok(&["rollout", "status", "deploy/web", "--timeout=30s"]);
    let web = emulator
        .get(Resource::Deployment, "default", "web")
        .unwrap();
    assert_eq!(
        web["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:1"
    );
    assert_eq!(
        annotation(&web, "deployment.kubernetes.io/revision"),
        Some("3")
    );
    assert_eq!(
        annotation(&web, "kubernetes.io/change-cause"),
        Some("first release")
    );
    assert_eq!(web["metadata"]["generation"], 3);
    let reused = emulator
        .get(
            Resource::ReplicaSet,
            "default",
            first["metadata"]["name"].as_str().unwrap(),
        )
        .unwrap();
    assert_eq!(reused["metadata"]["uid"], first["metadata"]["uid"]);
    assert_eq!(
        annotation(&reused, "deployment.kubernetes.io/revision"),
        Some("3")
    );
    assert_eq!(
        annotation(&reused, "deployment.kubernetes.io/revision-history"),
        Some("1")
    );
    assert_eq!(reused["spec"]["replicas"], 3);
    let retired = emulator
        .get(
            Resource::ReplicaSet,
            "default",
            second["metadata"]["name"].as_str().unwrap(),
        )
        .unwrap();
    assert_eq!(retired["spec"]["replicas"], 0);
    assert_eq!(
        emulator.list(Resource::ReplicaSet, Some("default")).len(),
        2,
        "no new ReplicaSet"
    );
    check(
        &kubectl.ok(&["rollout", "history", "deploy/web"]),
        expect![[r#"
            deployment.apps/web
            REVISION | CHANGE-CAUSE
            2 | image web:2
            3 | first release
        "#]],
    );

    // To a named revision.
    kubectl.ok(&["rollout", "undo", "deploy/web", "--to-revision=2"]);
    kubectl.ok(&["rollout", "status", "deploy/web", "--timeout=30s"]);
    let web = emulator
        .get(Resource::Deployment, "default", "web")
        .unwrap();
    assert_eq!(
        web["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:2"
    );
    assert_eq!(
        annotation(&web, "deployment.kubernetes.io/revision"),
        Some("4")
    );
    let reused = emulator
        .get(
            Resource::ReplicaSet,
            "default",
            second["metadata"]["name"].as_str().unwrap(),
        )
        .unwrap();
    assert_eq!(
        annotation(&reused, "deployment.kubernetes.io/revision"),
        Some("4")
    );
    assert_eq!(
        annotation(&reused, "deployment.kubernetes.io/revision-history"),
        Some("2")
    );
    assert_eq!(reused["status"]["availableReplicas"], 3);

    // Undoing to the current template is skipped; to an unknown revision, refused.
    let output = kubectl.ok(&["rollout", "undo", "deploy/web", "--to-revision=4"]);
    assert!(
        output.contains("skipped rollback (current template already matches revision 4)"),
        "{output}"
    );
    let output = kubectl.fails(&["rollout", "undo", "deploy/web", "--to-revision=9"]);
    assert!(
        output.contains("unable to find specified revision 9 in history"),
        "{output}"
    );
}

#[test]
fn pause_and_resume() {
    let emulator = emulator();
    let Some(kubectl) = Kubectl::new(&emulator) else {
        return;
    };
    emulator.apply_deployment("default", "web", "web:1", 2);
    emulator.wait_for_rollout("default", "web", ROLLOUT);
    assert_eq!(
        kubectl.ok(&["rollout", "pause", "deploy/web"]),
        "deployment.apps/web paused\n"
    );
    kubectl.ok(&["set", "image", "deploy/web", "web=web:2"]);
    let paused = emulator
        .wait_for(ROLLOUT, |e| {
            e.get(Resource::Deployment, "default", "web")
                .filter(|d| d["status"]["observedGeneration"] == 3)
        })
        .unwrap();
    let progressing = paused["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap()
        .clone();
    assert_eq!(
        (
            progressing["status"].as_str(),
            progressing["reason"].as_str()
        ),
        (Some("Unknown"), Some("DeploymentPaused"))
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        replica_sets(&emulator, "default", "web").len(),
        1,
        "a paused deployment makes no new ReplicaSet"
    );

    // (Plain `undo` finds no earlier revision: a paused deployment made no new ReplicaSet.)
    let output = kubectl.fails(&["rollout", "undo", "deploy/web", "--to-revision=1"]);
    assert!(
        output.contains("you cannot rollback a paused deployment; resume it first"),
        "{output}"
    );
    let output = kubectl.fails(&["rollout", "pause", "deploy/web"]);
    assert!(output.contains("already paused"), "{output}");

    assert_eq!(
        kubectl.ok(&["rollout", "resume", "deploy/web"]),
        "deployment.apps/web resumed\n"
    );
    kubectl.ok(&["rollout", "status", "deploy/web", "--timeout=30s"]);
    let web = emulator
        .get(Resource::Deployment, "default", "web")
        .unwrap();
    assert!(web["spec"].get("paused").is_none());
    assert_eq!(replica_sets(&emulator, "default", "web").len(), 2);
    assert_eq!(
        annotation(&web, "deployment.kubernetes.io/revision"),
        Some("2")
    );
}

#[test]
fn annotate_and_the_three_patch_types() {
    let emulator = emulator();
    let Some(kubectl) = Kubectl::new(&emulator) else {
        return;
    };
    emulator.apply_deployment("default", "web", "web:1", 1);
    emulator.wait_for_rollout("default", "web", ROLLOUT);

    assert_eq!(
        kubectl.ok(&["annotate", "deploy/web", "team=shop"]),
        "deployment.apps/web annotated\n"
    );
    let output = kubectl.fails(&["annotate", "deploy/web", "team=other"]);
    assert!(output.contains("already has a value (shop)"), "{output}");
    kubectl.ok(&[
        "patch",
        "deploy/web",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":3}}"#,
    ]);
    kubectl.ok(&[
        "patch",
        "deploy/web",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/template/spec/containers/0/env","value":[{"name":"A","value":"1"}]}]"#,
    ]);
    // Strategic: containers merge by name, env by name.
    kubectl.ok(&[
        "patch",
        "deploy/web",
        "--type=strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[
            {"name":"web","env":[{"name":"B","value":"2"}]},
            {"name":"sidecar","image":"proxy:1"}
        ]}}}}"#,
    ]);
    let web = emulator.wait_for_rollout("default", "web", ROLLOUT);
    assert_eq!(annotation(&web, "team"), Some("shop"));
    assert_eq!(web["spec"]["replicas"], 3);
    assert_eq!(
        web["spec"]["template"]["spec"]["containers"],
        json!([
            {"name": "web", "image": "web:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
             "resources": {"limits": {"memory": "128Mi"}}, "imagePullPolicy": "IfNotPresent",
             "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"},
            {"name": "sidecar", "image": "proxy:1", "resources": {}, "imagePullPolicy": "IfNotPresent",
             "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"},
        ])
    );
    // Three template changes, three revisions; the annotation and scale changes made none.
    assert_eq!(web["metadata"]["generation"], 4);
    assert_eq!(
        annotation(&web, "deployment.kubernetes.io/revision"),
        Some("3")
    );
    let output = kubectl.fails(&[
        "patch",
        "deploy/web",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/spec/replicas","value":7}]"#,
    ]);
    // kubectl's wording for a 422 without field causes.
    assert!(
        output.contains("The request is invalid: testing value /spec/replicas failed"),
        "{output}"
    );

    let output = kubectl.ok(&["scale", "deploy/web", "--replicas=1"]);
    assert_eq!(output, "deployment.apps/web scaled\n");
    let web = emulator.wait_for_rollout("default", "web", ROLLOUT);
    assert_eq!(web["status"]["replicas"], 1);
}

#[test]
fn get_events_shows_what_the_controllers_did() {
    let emulator = emulator();
    let Some(kubectl) = Kubectl::new(&emulator) else {
        return;
    };
    emulator.apply_deployment("default", "web", "web:1", 1);
    let web = emulator.wait_for_rollout("default", "web", ROLLOUT);
    emulator.apply_deployment("default", "web", "web:crash", 1);
    let crashing = emulator
        .wait_for(ROLLOUT, |e| {
            e.list(Resource::Pod, Some("default"))
                .into_iter()
                .find(|p| p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(2))
        })
        .unwrap();
    let pod = crashing["metadata"]["name"].as_str().unwrap();

    let events = kubectl.ok(&["get", "events"]);
    let hash = hash_of(&replica_sets(&emulator, "default", "web")[0]);
    for line in [
        format!(
            "Normal | ScalingReplicaSet | deployment/web | Scaled up replica set web-{hash} from 0 to 1"
        ),
        format!("Normal | SuccessfulCreate | replicaset/web-{hash} | Created pod: web-{hash}-<id>"),
        format!(
            "Normal | Scheduled | pod/web-{hash}-<id> | Successfully assigned default/web-{hash}-"
        ),
        "Normal | Pulling | pod/web-<id>".to_owned(),
        format!("Normal | Started | pod/web-{hash}-<id> | Started container web"),
    ] {
        let line = line.replace("pod/web-<id>", &format!("pod/web-{hash}-<id>"));
        assert!(
            columns(&events).lines().any(|l| l.contains(&line)),
            "no {line:?} in\n{}",
            columns(&events)
        );
    }
    let warnings = kubectl.ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("type=Warning,involvedObject.name={pod}"),
    ]);
    let warnings = columns(&warnings);
    assert!(
        warnings.contains(&format!("Warning | BackOff | pod/{} | Back-off restarting failed container web in pod {pod}_default(", normalize_cell(pod))),
        "{warnings}"
    );
    assert!(!warnings.contains("Normal"), "{warnings}");

    // What `kubectl describe` shows, found by the involved object's uid.
    let described = kubectl.ok(&["describe", "deploy/web"]);
    assert!(described.contains("ScalingReplicaSet"), "{described}");
    let uid = web["metadata"]["uid"].as_str().unwrap();
    let by_uid = kubectl.ok(&[
        "get",
        "events",
        "-o",
        "name",
        "--field-selector",
        &format!("involvedObject.uid={uid}"),
    ]);
    assert!(by_uid.lines().count() >= 2, "{by_uid}");
    assert!(
        by_uid.lines().all(|l| l.starts_with("event/web.")),
        "{by_uid}"
    );
}

#[test]
fn apply_delete_and_logs() {
    let emulator = emulator();
    let Some(kubectl) = Kubectl::new(&emulator) else {
        return;
    };
    let manifest = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        manifest.path(),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n  namespace: default\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: api}\n  template:\n    metadata:\n      labels: {app: api}\n    spec:\n      containers:\n      - name: api\n        image: api:1\n",
    )
    .unwrap();
    let path = manifest.path().to_str().unwrap();
    assert_eq!(
        kubectl.ok(&["apply", "-f", path]),
        "deployment.apps/api created\n"
    );
    assert_eq!(
        kubectl.ok(&["apply", "-f", path]),
        "deployment.apps/api unchanged\n"
    );
    assert_eq!(
        kubectl.ok(&["apply", "--server-side", "-f", path]),
        "deployment.apps/api serverside-applied\n"
    );
    kubectl.ok(&["rollout", "status", "deploy/api", "--timeout=30s"]);
    assert_eq!(
        kubectl.ok(&["logs", "deploy/api"]).lines().next(),
        Some("starting api:1")
    );

    assert_eq!(
        kubectl.ok(&["delete", "deploy/api"]),
        "deployment.apps \"api\" deleted\n"
    );
    // The garbage collector takes the ReplicaSet and its pods.
    let gone = emulator.wait_for(ROLLOUT, |e| {
        (e.list(Resource::ReplicaSet, Some("default")).is_empty()
            && e.list(Resource::Pod, Some("default")).is_empty())
        .then_some(())
    });
    assert!(
        gone.is_some(),
        "{:#?}",
        emulator.list(Resource::Pod, Some("default"))
    );
    assert_eq!(kubectl.ok(&["get", "deploy,rs,pods"]), "");

    // kubectl's generators send protobuf, which the emulator does not decode.
    let output = kubectl.fails(&["create", "namespace", "shop"]);
    assert!(
        output.contains("Error from server (UnsupportedMediaType)") && output.contains("apply -f"),
        "{output}"
    );
}
