//! The Kubernetes API emulator over plain HTTP: the semantics clients such as kube-rs rely on
//! (watch resumption, selectors, conflicts, Status objects, pagination), the faults the
//! simulated node injects, and an unreachable cluster.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use expect_test::expect;
use gantry_testkit::kube::{Emulator, PatchType, Resource};
use serde_json::{Value, json};

/// One HTTP/1.1 request on a fresh connection; the body as JSON (or as a JSON string if it is
/// not JSON).
fn http(
    emulator: &Emulator,
    method: &str,
    path: &str,
    body: Option<(&str, &Value)>,
) -> (u16, Value) {
    let mut stream = connect(emulator, method, path, body);
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, value)
}

fn connect(
    emulator: &Emulator,
    method: &str,
    path: &str,
    body: Option<(&str, &Value)>,
) -> TcpStream {
    let addr = emulator.url().trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n"
    );
    let payload = body.map(|(_, b)| b.to_string()).unwrap_or_default();
    if let Some((content_type, _)) = body {
        request.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            payload.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(&payload);
    stream.write_all(request.as_bytes()).unwrap();
    stream
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// A watch: its events, read as they come.
struct Watch {
    reader: BufReader<TcpStream>,
    pending: String,
}

impl Watch {
    fn start(emulator: &Emulator, path: &str) -> Watch {
        let stream = connect(emulator, "GET", path, None);
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
        }
        Watch {
            reader,
            pending: String::new(),
        }
    }

    /// The next event, or `None` if none comes within `timeout` or the stream ends.
    fn next(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((line, rest)) = self.pending.split_once('\n') {
                let event = serde_json::from_str(line).unwrap();
                self.pending = rest.to_owned();
                return Some(event);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.reader
                .get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut size = String::new();
            match self.reader.read_line(&mut size) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            if size == 0 {
                return None;
            }
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).ok()?;
            self.pending
                .push_str(std::str::from_utf8(&chunk[..size]).unwrap());
        }
    }

    /// `(type, name)` of the events that come within `timeout`.
    fn collect(&mut self, timeout: Duration) -> Vec<(String, String)> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(event) => events.push((
                    event["type"].as_str().unwrap().to_owned(),
                    event["object"]["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )),
                None => break,
            }
        }
        events
    }
}

fn rv(object: &Value) -> String {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn pod(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox:1"}]},
    })
}

/// Waits until nothing has changed for 300 ms: the simulated node has written its first pod
/// statuses, so watches see only what the test does.
fn settle(emulator: &Emulator) {
    let mut last = String::new();
    let mut since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    while since.elapsed() < Duration::from_millis(300) {
        assert!(Instant::now() < deadline, "the cluster does not settle");
        let (_, list) = http(emulator, "GET", "/api/v1/pods?limit=1", None);
        let current = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned();
        if current != last {
            last = current;
            since = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const PODS: &str = "/api/v1/namespaces/default/pods";

#[test]
fn discovery_describes_the_resources() {
    let emulator = Emulator::start();
    let (status, version) = http(&emulator, "GET", "/version", None);
    assert_eq!(
        (status, version["major"].as_str(), version["minor"].as_str()),
        (200, Some("1"), Some("32"))
    );
    let (_, groups) = http(&emulator, "GET", "/apis", None);
    assert_eq!(
        groups["groups"][0]["preferredVersion"]["groupVersion"],
        "apps/v1"
    );
    let (_, apps) = http(&emulator, "GET", "/apis/apps/v1", None);
    let summary = |list: &Value| {
        list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {}",
                    r["name"].as_str().unwrap(),
                    r["kind"].as_str().unwrap(),
                    r["shortNames"]
                        .as_array()
                        .map(|s| format!("{s:?}"))
                        .unwrap_or_default(),
                    r["verbs"].as_array().unwrap().len()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    expect![[r#"
        deployments Deployment [String("deploy")] 8
        deployments/scale Scale  3
        deployments/status Deployment  3
        replicasets ReplicaSet [String("rs")] 8
        replicasets/scale Scale  3
        replicasets/status ReplicaSet  3"#]]
    .assert_eq(&summary(&apps));
    let (_, core) = http(&emulator, "GET", "/api/v1", None);
    expect![[r#"
        namespaces Namespace [String("ns")] 7
        namespaces/status Namespace  3
        pods Pod [String("po")] 8
        pods/status Pod  3
        pods/log Pod  1
        events Event [String("ev")] 8"#]]
    .assert_eq(&summary(&core));
    let (status, _) = http(&emulator, "GET", "/openapi/v2", None);
    assert_eq!(status, 404);
}

#[test]
fn errors_are_status_objects() {
    let emulator = Emulator::start();
    let (status, body) = http(&emulator, "GET", &format!("{DEPLOYMENTS}/nope"), None);
    assert_eq!(status, 404);
    expect![[r#"{"apiVersion":"v1","code":404,"details":{"group":"apps","kind":"deployments","name":"nope"},"kind":"Status","message":"deployments.apps \"nope\" not found","metadata":{},"reason":"NotFound","status":"Failure"}"#]]
    .assert_eq(&body.to_string());

    let (status, body) = http(
        &emulator,
        "POST",
        "/api/v1/namespaces/missing/pods",
        Some(("application/json", &pod("p", json!({})))),
    );
    assert_eq!(
        (status, body["reason"].as_str(), body["message"].as_str()),
        (
            404,
            Some("NotFound"),
            Some("namespaces \"missing\" not found")
        )
    );

    http(
        &emulator,
        "POST",
        PODS,
        Some(("application/json", &pod("p", json!({})))),
    );
    let (status, body) = http(
        &emulator,
        "POST",
        PODS,
        Some(("application/json", &pod("p", json!({})))),
    );
    assert_eq!(
        (status, body["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );

    let invalid = json!({"metadata": {"name": "bad"}, "spec": {"selector": {"matchLabels": {"app": "a"}},
        "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c"}]}}}});
    let (status, body) = http(
        &emulator,
        "POST",
        DEPLOYMENTS,
        Some(("application/json", &invalid)),
    );
    assert_eq!(status, 422);
    expect![[r#"Deployment.apps "bad" is invalid: [spec.template.metadata.labels: Invalid value: {"app":"b"}: `selector` does not match template `labels`, spec.template.spec.containers[0].image: Required value]"#]]
    .assert_eq(body["message"].as_str().unwrap());
    assert_eq!(
        body["details"]["causes"][1]["field"],
        "spec.template.spec.containers[0].image"
    );

    let (status, body) = http(
        &emulator,
        "GET",
        &format!("{PODS}?labelSelector=a%20in%20b"),
        None,
    );
    assert_eq!((status, body["reason"].as_str()), (400, Some("BadRequest")));
    let (status, body) = http(
        &emulator,
        "GET",
        &format!("{DEPLOYMENTS}?fieldSelector=spec.replicas%3D1"),
        None,
    );
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("field label not supported: spec.replicas"))
    );
    let (status, body) = http(
        &emulator,
        "PATCH",
        &format!("{PODS}/p"),
        Some(("application/json", &json!({}))),
    );
    assert_eq!(
        (status, body["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );
    let (status, _) = http(&emulator, "GET", "/apis/batch/v1/jobs", None);
    assert_eq!(status, 404);
}

#[test]
fn updates_with_a_stale_resource_version_conflict() {
    let emulator = Emulator::start();
    let web = emulator.apply_deployment("default", "web", "web:1", 1);
    // Once rolled out, nothing but this test writes to the deployment.
    emulator.wait_for_rollout("default", "web", Duration::from_secs(10));
    settle(&emulator);
    let path = format!("{DEPLOYMENTS}/web");
    let (_, current) = http(&emulator, "GET", &path, None);
    let mut first = current.clone();
    first["spec"]["replicas"] = json!(2);
    let mut second = current.clone();
    second["spec"]["replicas"] = json!(3);

    let (status, updated) = http(&emulator, "PUT", &path, Some(("application/json", &first)));
    assert_eq!(status, 200);
    assert_eq!(updated["metadata"]["generation"], 2);
    assert!(rv(&updated).parse::<u64>().unwrap() > rv(&web).parse::<u64>().unwrap());
    let (status, conflict) = http(&emulator, "PUT", &path, Some(("application/json", &second)));
    assert_eq!(status, 409);
    expect![[r#"{"apiVersion":"v1","code":409,"details":{"group":"apps","kind":"deployments","name":"web"},"kind":"Status","message":"Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply your changes to the latest version and try again","metadata":{},"reason":"Conflict","status":"Failure"}"#]]
    .assert_eq(&conflict.to_string());

    // A patch that names a resource version makes it a precondition.
    let stale = json!({"metadata": {"resourceVersion": rv(&current)}, "spec": {"replicas": 5}});
    let (status, _) = http(
        &emulator,
        "PATCH",
        &path,
        Some(("application/merge-patch+json", &stale)),
    );
    assert_eq!(status, 409);
    // Without one, the last writer wins.
    let (status, patched) = http(
        &emulator,
        "PATCH",
        &path,
        Some((
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 5}}),
        )),
    );
    assert_eq!(
        (status, patched["spec"]["replicas"].as_i64()),
        (200, Some(5))
    );
    // A write that changes nothing is no write (on a namespace: no controller writes to it).
    let label = json!({"metadata": {"labels": {"team": "shop"}}});
    let ns = "/api/v1/namespaces/default";
    let (_, labelled) = http(
        &emulator,
        "PATCH",
        ns,
        Some(("application/merge-patch+json", &label)),
    );
    let (_, again) = http(
        &emulator,
        "PATCH",
        ns,
        Some(("application/merge-patch+json", &label)),
    );
    assert_eq!(labelled["metadata"]["labels"]["team"], "shop");
    assert_eq!(rv(&labelled), rv(&again));
    // The status subresource ignores the spec. (The controller writes the status too: on a
    // conflict, read again and retry, as clients do.)
    let written = (0..20)
        .find_map(|_| {
            let (_, mut status_write) = http(&emulator, "GET", &path, None);
            status_write["spec"]["replicas"] = json!(9);
            status_write["status"]["replicas"] = json!(42);
            let (status, written) = http(
                &emulator,
                "PUT",
                &format!("{path}/status"),
                Some(("application/json", &status_write)),
            );
            (status == 200).then_some(written)
        })
        .unwrap();
    assert_eq!(
        (
            written["spec"]["replicas"].as_i64(),
            written["status"]["replicas"].as_i64()
        ),
        (Some(5), Some(42))
    );

    // Concurrent changes made through the helper are seen by clients.
    let changed = emulator.patch_deployment(
        "default",
        "web",
        &json!({"metadata": {"annotations": {"x": "y"}}}),
    );
    let mut late = written.clone();
    late["spec"]["replicas"] = json!(1);
    let (status, _) = http(&emulator, "PUT", &path, Some(("application/json", &late)));
    assert_eq!(status, 409);
    assert_ne!(rv(&changed), rv(&written));
}

#[test]
fn watches_resume_from_a_resource_version_and_honour_selectors() {
    let emulator = Emulator::builder()
        .pod_ready_after(Duration::from_secs(3600))
        .start();
    let (_, a) = http(
        &emulator,
        "POST",
        PODS,
        Some(("application/json", &pod("a", json!({"app": "web"})))),
    );
    http(
        &emulator,
        "POST",
        PODS,
        Some(("application/json", &pod("b", json!({"app": "db"})))),
    );
    let after_b = emulator.get(Resource::Pod, "default", "b").unwrap();
    http(
        &emulator,
        "POST",
        PODS,
        Some(("application/json", &pod("c", json!({"app": "web"})))),
    );
    settle(&emulator);

    // From a resource version: only what happened after it.
    let mut watch = Watch::start(
        &emulator,
        &format!("{PODS}?watch=true&resourceVersion={}", rv(&a)),
    );
    let events = watch.collect(Duration::from_millis(300));
    assert!(events.contains(&("ADDED".into(), "b".into())), "{events:?}");
    assert!(events.contains(&("ADDED".into(), "c".into())), "{events:?}");
    assert!(
        !events.contains(&("ADDED".into(), "a".into())),
        "{events:?}"
    );

    // Without one: the current state first, as ADDED.
    let mut watch = Watch::start(
        &emulator,
        &format!("{PODS}?watch=1&labelSelector=app%3Dweb"),
    );
    let initial = watch.collect(Duration::from_millis(300));
    assert_eq!(
        initial,
        [("ADDED".into(), "a".into()), ("ADDED".into(), "c".into())]
    );

    // A label selector: objects entering and leaving the selection are ADDED and DELETED.
    let mut selected = Watch::start(
        &emulator,
        &format!(
            "{PODS}?watch=true&labelSelector=app%20in%20(web)&resourceVersion={}",
            rv(&after_b)
        ),
    );
    emulator.patch(
        Resource::Pod,
        "default",
        "b",
        PatchType::Merge,
        &json!({"metadata": {"labels": {"app": "web"}}}),
    );
    emulator.patch(
        Resource::Pod,
        "default",
        "a",
        PatchType::Merge,
        &json!({"metadata": {"labels": {"app": "api"}}}),
    );
    emulator.patch(
        Resource::Pod,
        "default",
        "c",
        PatchType::Merge,
        &json!({"metadata": {"annotations": {"x": "1"}}}),
    );
    http(
        &emulator,
        "DELETE",
        &format!("{PODS}/c?gracePeriodSeconds=0"),
        None,
    );
    let events = selected.collect(Duration::from_millis(500));
    for expected in [
        ("ADDED", "c"),
        ("ADDED", "b"),
        ("DELETED", "a"),
        ("MODIFIED", "c"),
        ("DELETED", "c"),
    ] {
        assert!(
            events.contains(&(expected.0.into(), expected.1.into())),
            "no {expected:?} in {events:?}"
        );
    }
    let position = |e: (&str, &str)| {
        events
            .iter()
            .position(|x| x.0 == e.0 && x.1 == e.1)
            .unwrap()
    };
    assert!(position(("MODIFIED", "c")) < position(("DELETED", "c")));

    // A field selector, on one name.
    let mut named = Watch::start(
        &emulator,
        &format!("{PODS}?watch=true&fieldSelector=metadata.name%3Db"),
    );
    assert_eq!(
        named.collect(Duration::from_millis(200)),
        [("ADDED".into(), "b".into())]
    );
}

#[test]
fn watches_too_far_behind_get_410_and_time_out() {
    let emulator = Emulator::builder()
        .watch_history(5)
        .pod_ready_after(Duration::from_secs(3600))
        .start();
    let (_, first) = http(
        &emulator,
        "POST",
        PODS,
        Some(("application/json", &pod("p0", json!({})))),
    );
    for i in 1..10 {
        http(
            &emulator,
            "POST",
            PODS,
            Some(("application/json", &pod(&format!("p{i}"), json!({})))),
        );
    }
    settle(&emulator);
    let mut watch = Watch::start(
        &emulator,
        &format!("{PODS}?watch=true&resourceVersion={}", rv(&first)),
    );
    let error = watch.next(Duration::from_secs(2)).unwrap();
    assert_eq!(error["type"], "ERROR");
    assert_eq!(error["object"]["kind"], "Status");
    assert_eq!(error["object"]["code"], 410);
    assert_eq!(error["object"]["reason"], "Expired");
    assert!(
        error["object"]["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("too old resource version: {}", rv(&first)))
    );
    assert!(
        watch.next(Duration::from_millis(200)).is_none(),
        "the stream ends"
    );

    // A list gives a fresh resource version to watch from.
    let (_, list) = http(&emulator, "GET", PODS, None);
    let mut watch = Watch::start(
        &emulator,
        &format!(
            "{PODS}?watch=true&timeoutSeconds=1&allowWatchBookmarks=true&resourceVersion={}",
            list["metadata"]["resourceVersion"].as_str().unwrap()
        ),
    );
    let started = Instant::now();
    assert!(watch.next(Duration::from_secs(5)).is_none());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );

    // Streaming lists (sendInitialEvents) end the initial state with a bookmark.
    let mut watch = Watch::start(
        &emulator,
        &format!(
            "{PODS}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan"
        ),
    );
    for _ in 0..10 {
        assert_eq!(watch.next(Duration::from_secs(1)).unwrap()["type"], "ADDED");
    }
    let bookmark = watch.next(Duration::from_secs(1)).unwrap();
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(
        bookmark["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(
        bookmark["object"]["metadata"]["resourceVersion"],
        list["metadata"]["resourceVersion"]
    );
}

#[test]
fn lists_are_paged_and_items_carry_no_kind() {
    let emulator = Emulator::builder()
        .pod_ready_after(Duration::from_secs(3600))
        .start();
    for i in 0..5 {
        http(
            &emulator,
            "POST",
            PODS,
            Some((
                "application/json",
                &pod(&format!("p{i}"), json!({"i": i.to_string()})),
            )),
        );
    }
    let mut names = Vec::new();
    let mut path = format!("{PODS}?limit=2");
    let mut pages = 0;
    loop {
        let (status, page) = http(&emulator, "GET", &path, None);
        assert_eq!(status, 200);
        assert_eq!(page["kind"], "PodList");
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            assert!(item.get("kind").is_none());
            names.push(item["metadata"]["name"].as_str().unwrap().to_owned());
        }
        match page["metadata"]["continue"].as_str() {
            Some(token) => path = format!("{PODS}?limit=2&continue={token}"),
            None => break,
        }
    }
    assert_eq!(
        (pages, names),
        (
            3,
            vec![
                "p0".to_owned(),
                "p1".into(),
                "p2".into(),
                "p3".into(),
                "p4".into()
            ]
        )
    );
    let (_, all) = http(
        &emulator,
        "GET",
        "/api/v1/pods?labelSelector=i%20notin%20(1,2),i",
        None,
    );
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    let (_, one) = http(&emulator, "GET", &format!("{PODS}/p0"), None);
    assert_eq!(
        (one["kind"].as_str(), one["apiVersion"].as_str()),
        (Some("Pod"), Some("v1"))
    );
}

#[test]
fn the_node_injects_faults_by_image_name() {
    let emulator = Emulator::builder()
        .pod_ready_after(Duration::from_millis(100))
        .restart_every(Duration::from_millis(200))
        .start();
    for (name, image) in [
        ("ok", "web:1"),
        ("crash", "web:crash"),
        ("oom", "oom-app:1"),
        ("missing", "missing/web:1"),
        ("pending", "unschedulable:1"),
        ("config", "web:configerror"),
        ("slow", "web:slow"),
    ] {
        emulator.apply_deployment("default", name, image, 1);
    }
    let pod_of = |e: &Emulator, app: &str| {
        e.list(Resource::Pod, Some("default"))
            .into_iter()
            .find(|p| p["metadata"]["labels"]["app"] == app)
    };
    let state = |app: &str, wanted: &dyn Fn(&Value) -> bool| {
        emulator
            .wait_for(Duration::from_secs(10), |e| {
                pod_of(e, app).filter(|p| wanted(p))
            })
            .unwrap_or_else(|| panic!("{app}: {:#}", pod_of(&emulator, app).unwrap_or_default()))
    };
    let container = |p: &Value| p["status"]["containerStatuses"][0].clone();

    let missing = state("missing", &|p| {
        container(p)["state"]["waiting"]["reason"] == "ImagePullBackOff"
    });
    assert_eq!(missing["status"]["phase"], "Pending");

    let ok = state("ok", &|p| container(p)["ready"] == true);
    assert_eq!(ok["status"]["phase"], "Running");

    let crash = state("crash", &|p| {
        container(p)["restartCount"].as_i64() >= Some(3)
    });
    assert_eq!(
        container(&crash)["state"]["waiting"]["reason"],
        "CrashLoopBackOff"
    );
    assert_eq!(
        container(&crash)["lastState"]["terminated"]["reason"],
        "Error"
    );
    assert_eq!(container(&crash)["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(container(&crash)["ready"], false);
    assert_eq!(crash["status"]["phase"], "Running");

    let oom = state("oom", &|p| container(p)["restartCount"].as_i64() >= Some(1));
    assert_eq!(
        container(&oom)["lastState"]["terminated"]["reason"],
        "OOMKilled"
    );
    assert_eq!(container(&oom)["lastState"]["terminated"]["exitCode"], 137);

    let pending = state("pending", &|p| {
        p["status"]["conditions"][0]["reason"] == "Unschedulable"
    });
    assert_eq!(pending["status"]["phase"], "Pending");
    assert_eq!(pending["status"]["conditions"][0]["type"], "PodScheduled");
    assert_eq!(pending["status"]["conditions"][0]["status"], "False");
    assert!(pending["spec"].get("nodeName").is_none());

    let config = state("config", &|p| {
        container(p)["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    });
    assert_eq!(
        container(&config)["state"]["waiting"]["message"],
        "configmap \"config-config\" not found"
    );

    let slow = state("slow", &|p| container(p)["started"] == true);
    assert_eq!(container(&slow)["ready"], false);
    assert_eq!(slow["status"]["phase"], "Running");

    // Faulty pods never become ready, so their deployments never become available.
    std::thread::sleep(Duration::from_millis(500));
    for app in ["crash", "oom", "missing", "pending", "config", "slow"] {
        let d = emulator.get(Resource::Deployment, "default", app).unwrap();
        assert!(
            d["status"].get("availableReplicas").is_none(),
            "{app}: {:#}",
            d["status"]
        );
        assert_eq!(d["status"]["unavailableReplicas"], 1, "{app}");
    }

    // Events a diagnosis reads, and logs.
    let events = emulator.list(Resource::Event, Some("default"));
    let reasons = |object: &Value| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["involvedObject"]["uid"] == object["metadata"]["uid"])
            .map(|e| {
                format!(
                    "{} {}",
                    e["type"].as_str().unwrap(),
                    e["reason"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert!(
        reasons(&crash).contains(&"Warning BackOff".to_owned()),
        "{:?}",
        reasons(&crash)
    );
    // The pull failed (ErrImagePull) before it backed off.
    assert!(
        events
            .iter()
            .any(|e| e["involvedObject"]["uid"] == missing["metadata"]["uid"]
                && e["message"] == "Error: ErrImagePull"),
        "{:?}",
        reasons(&missing)
    );
    assert!(
        reasons(&missing).contains(&"Warning Failed".to_owned()),
        "{:?}",
        reasons(&missing)
    );
    assert!(
        reasons(&pending).contains(&"Warning FailedScheduling".to_owned()),
        "{:?}",
        reasons(&pending)
    );
    let backoff = events
        .iter()
        .find(|e| {
            e["involvedObject"]["uid"] == crash["metadata"]["uid"] && e["reason"] == "BackOff"
        })
        .unwrap();
    assert!(
        backoff["count"].as_i64().unwrap() >= 2,
        "repeats are counted: {backoff:#}"
    );
    assert_eq!(
        backoff["involvedObject"]["fieldPath"],
        "spec.containers{crash}"
    );

    let crash_name = crash["metadata"]["name"].as_str().unwrap();
    let (status, log) = http(
        &emulator,
        "GET",
        &format!("{PODS}/{crash_name}/log?previous=true"),
        None,
    );
    assert_eq!(status, 200);
    assert!(
        log.as_str().unwrap().contains("connection refused"),
        "{log}"
    );
    let missing_name = missing["metadata"]["name"].as_str().unwrap();
    let (status, error) = http(
        &emulator,
        "GET",
        &format!("{PODS}/{missing_name}/log"),
        None,
    );
    assert_eq!(status, 400);
    assert_eq!(
        error["message"],
        format!(
            "container \"missing\" in pod \"{missing_name}\" is waiting to start: trying and failing to pull image"
        )
    );
}

#[test]
fn rolling_updates_honour_max_surge_and_max_unavailable() {
    let emulator = Emulator::builder()
        .pod_ready_after(Duration::from_millis(150))
        .start();
    emulator.apply_deployment("default", "web", "web:1", 4);
    emulator.wait_for_rollout("default", "web", Duration::from_secs(10));
    emulator.patch_deployment(
        "default",
        "web",
        &json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": "50%"}},
            "template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}}}),
    );
    // Sample the pods while the rollout runs: never more than 4 + 1, never fewer than
    // 4 - 2 ready.
    let started = Instant::now();
    let mut most = 0;
    let mut fewest_ready = usize::MAX;
    loop {
        let pods = emulator.list(Resource::Pod, Some("default"));
        let live: Vec<&Value> = pods
            .iter()
            .filter(|p| p["metadata"].get("deletionTimestamp").is_none())
            .collect();
        most = most.max(live.len());
        let ready = live
            .iter()
            .filter(|p| p["status"]["containerStatuses"][0]["ready"] == true)
            .count();
        fewest_ready = fewest_ready.min(ready);
        let d = emulator
            .get(Resource::Deployment, "default", "web")
            .unwrap();
        if d["status"]["observedGeneration"] == d["metadata"]["generation"]
            && d["status"]["updatedReplicas"] == 4
            && d["status"]["availableReplicas"] == 4
            && d["status"]["replicas"] == 4
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{d:#}");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(most <= 5, "{most} pods at once");
    assert!(fewest_ready >= 2, "{fewest_ready} ready at the worst");
    let scaling: Vec<String> = emulator
        .list(Resource::Event, Some("default"))
        .into_iter()
        .filter(|e| e["reason"] == "ScalingReplicaSet")
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        scaling
            .iter()
            .any(|m| m.starts_with("Scaled down replica set web-") && m.ends_with("from 4 to 2")),
        "{scaling:#?}"
    );

    // revisionHistoryLimit: old ReplicaSets beyond it are deleted.
    emulator.patch_deployment(
        "default",
        "web",
        &json!({"spec": {"revisionHistoryLimit": 1}}),
    );
    for image in ["web:3", "web:4"] {
        emulator.patch_deployment("default", "web", &json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}}));
        emulator.wait_for_rollout("default", "web", Duration::from_secs(10));
    }
    let kept = emulator.wait_for(Duration::from_secs(5), |e| {
        let sets = e.list(Resource::ReplicaSet, Some("default"));
        (sets.len() == 2).then_some(sets)
    });
    assert!(
        kept.is_some(),
        "{:#?}",
        emulator.list(Resource::ReplicaSet, Some("default"))
    );
}

#[test]
fn an_unreachable_cluster_refuses_connections() {
    let emulator = Emulator::start();
    let addr = emulator.url().trim_start_matches("http://").to_owned();
    let mut watch = Watch::start(&emulator, &format!("{PODS}?watch=true"));
    emulator.set_unreachable(true);
    assert!(
        watch.next(Duration::from_secs(2)).is_none(),
        "open watches are cut"
    );
    let refused = emulator.wait_for(Duration::from_secs(2), |_| TcpStream::connect(&addr).err());
    assert_eq!(
        refused.map(|e| e.kind()),
        Some(std::io::ErrorKind::ConnectionRefused)
    );

    // Changes made meanwhile are there when it comes back.
    emulator.apply_deployment("default", "web", "web:1", 1);
    emulator.set_unreachable(false);
    let back = emulator.wait_for(Duration::from_secs(2), |_| TcpStream::connect(&addr).ok());
    assert!(back.is_some());
    let (status, web) = http(&emulator, "GET", &format!("{DEPLOYMENTS}/web"), None);
    assert_eq!(
        (status, web["metadata"]["name"].as_str()),
        (200, Some("web"))
    );
}

#[test]
fn the_request_log_and_the_kubeconfig() {
    let emulator = Emulator::start();
    emulator.apply_deployment("default", "web", "web:1", 1);
    http(
        &emulator,
        "PATCH",
        &format!("{DEPLOYMENTS}/web?fieldManager=test"),
        Some((
            "application/json-patch+json",
            &json!([{"op": "replace", "path": "/spec/replicas", "value": 2}]),
        )),
    );
    let patch = emulator
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .unwrap();
    assert_eq!(patch.path, format!("{DEPLOYMENTS}/web"));
    assert_eq!(patch.param("fieldManager").as_deref(), Some("test"));
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/json-patch+json")
    );
    assert_eq!(patch.json().unwrap()[0]["op"], "replace");
    assert_eq!(patch.status, 200);
    emulator.clear_requests();
    assert!(emulator.requests().is_empty());

    let kubeconfig = std::fs::read_to_string(emulator.kubeconfig_path()).unwrap();
    assert!(
        kubeconfig.contains(&format!("server: {}", emulator.url())),
        "{kubeconfig}"
    );
    assert!(
        kubeconfig.contains("current-context: emulator"),
        "{kubeconfig}"
    );
}

#[tokio::test]
async fn async_tests_wait_on_their_own_runtime() {
    let emulator = Emulator::builder()
        .pod_ready_after(Duration::from_millis(100))
        .start();
    emulator.apply_deployment("default", "web", "web:1", 2);
    let available = emulator
        .wait_for_async(Duration::from_secs(10), |e| {
            e.get(Resource::Deployment, "default", "web")
                .filter(|d| d["status"]["availableReplicas"] == 2)
        })
        .await;
    assert!(available.is_some());
}
