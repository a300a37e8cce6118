//! A Kubernetes API emulator for tests, because no API server can run here.
//!
//! [`Emulator`] is an HTTP server on 127.0.0.1 that speaks the Kubernetes JSON API for
//! `apps/v1` Deployments and ReplicaSets and `core/v1` Pods, Events and Namespaces: discovery,
//! GET, LIST (label and field selectors, `limit`/`continue`), watches (resource versions,
//! bookmarks, `410 Expired`), POST, PUT (resource-version conflicts), the three PATCH formats,
//! DELETE (graceful pods, garbage collection), the `status`, `scale` and `log` subresources, and
//! server-side `Table` printing for `kubectl get`. Behind it run a deployment controller, a
//! ReplicaSet controller, a garbage collector and a simulated node (see `kubelet.rs` for the
//! failures a container image name can ask for).
//!
//! It is written from the Kubernetes API reference and the controllers' source, and checked
//! against the real `kubectl` (`tests/it/kube.rs`).
//!
//! # Where it differs from a real cluster
//!
//! - **Wire formats.** JSON only: protobuf, CBOR and YAML request bodies get `415` (kubectl's
//!   generators such as `kubectl create namespace` send protobuf; `kubectl apply -f` and
//!   `create -f` send JSON). Plain HTTP, no authentication.
//! - **Resources.** Namespaces, Pods, Events (`core/v1`), Deployments and ReplicaSets
//!   (`apps/v1`) only; no Nodes, Services or `events.k8s.io`. Legacy discovery only (clients fall
//!   back from aggregated discovery). OpenAPI v3 lists the operations without schemas, enough for
//!   `kubectl apply`; there is no OpenAPI v2.
//! - **Writes.** Unknown fields are kept, neither dropped nor rejected (`fieldValidation` is
//!   ignored); validation covers names, selectors against template labels, containers, replicas,
//!   the strategy and the immutable selector. Server-side apply is "create, or strategic merge":
//!   no `managedFields`, no field ownership or apply conflicts, and fields left out of an
//!   applied configuration stay.
//! - **Reads.** A `continue` page lists the current state, not a snapshot at the first page's
//!   resource version; `resourceVersionMatch=Exact` on an older version answers `410`.
//! - **Watches.** The history is bounded (2000 changes by default, see
//!   [`EmulatorBuilder::watch_history`]); bookmarks come every 5 s, not every minute.
//! - **Controllers.** The `pod-template-hash` is FNV-32a over the template's canonical JSON, so
//!   ReplicaSet names are stable but not those a real cluster would pick. Deleting a namespace
//!   removes its contents at once (no `Terminating` phase); orphaning deletes do without the
//!   `orphan` finalizer.
//! - **The node.** One node, `emulator-node`. Restarts and image pull retries repeat every
//!   `restart_every` instead of backing off exponentially; `ImagePullBackOff` does not alternate
//!   with `ErrImagePull`; a container status's `image` is the spec's, not the
//!   registry-qualified name; logs are a few synthetic lines. Events never expire.
//!
//! ```no_run
//! use gantry_testkit::kube::{Emulator, Resource};
//! let cluster = Emulator::start();
//! cluster.apply_deployment("default", "web", "web:1", 3);
//! let web = cluster.wait_for_rollout("default", "web", std::time::Duration::from_secs(10));
//! assert_eq!(web["status"]["availableReplicas"], 3);
//! std::process::Command::new("kubectl")
//!     .arg("--kubeconfig")
//!     .arg(cluster.kubeconfig_path())
//!     .args(["rollout", "status", "deploy/web"]);
//! ```

mod api;
mod controller;
mod events;
mod kubectl;
mod kubelet;
mod meta;
mod patch;
mod registry;
mod resource;
mod selector;
mod store;
mod table;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use chrono::Utc;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::{Notify, oneshot, watch};

pub use kubectl::Kubectl;
pub use registry::PatchType;
pub use resource::Resource;

use events::Recorder;
use kubelet::{Node, NodeTimings};
use store::Store;

/// One request the emulator answered.
#[derive(Clone, Debug)]
pub struct ApiRequest {
    pub method: String,
    /// The path without the query, e.g. `/apis/apps/v1/namespaces/default/deployments/web`.
    pub path: String,
    /// The raw query string, e.g. `watch=true&resourceVersion=1042`.
    pub query: String,
    pub content_type: Option<String>,
    pub body: String,
    /// The HTTP status; a watch is 200 from its start.
    pub status: u16,
    pub at: SystemTime,
    /// When it arrived, counted from the emulator's start.
    pub since_start: Duration,
}

impl ApiRequest {
    /// The value of a query parameter, percent-decoded.
    pub fn param(&self, key: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then(|| percent_decode(v))
        })
    }

    pub fn is_watch(&self) -> bool {
        matches!(self.param("watch").as_deref(), Some("true" | "1"))
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How fast the emulated cluster moves. Every delay is configurable so tests run fast.
#[derive(Clone, Copy, Debug)]
struct Timings {
    tick: Duration,
    node: NodeTimings,
    bookmark_every: Duration,
    watch_history: usize,
}

impl Default for Timings {
    fn default() -> Timings {
        Timings {
            tick: Duration::from_millis(50),
            node: NodeTimings {
                pod_ready_after: Duration::from_millis(300),
                restart_every: Duration::from_millis(200),
                pod_terminate_after: Duration::from_millis(100),
            },
            bookmark_every: Duration::from_secs(5),
            watch_history: 2000,
        }
    }
}

/// Configures an [`Emulator`] before it starts.
#[derive(Clone, Debug, Default)]
pub struct EmulatorBuilder {
    timings: Timings,
}

impl EmulatorBuilder {
    /// How long a pod takes from creation to Running and Ready (or to its fault). Default 300 ms.
    pub fn pod_ready_after(mut self, delay: Duration) -> Self {
        self.timings.node.pod_ready_after = delay;
        self
    }

    /// How often a crashing container restarts (and other faults repeat their events).
    /// Default 200 ms.
    pub fn restart_every(mut self, every: Duration) -> Self {
        self.timings.node.restart_every = every;
        self
    }

    /// How long a deleted pod stays Terminating. Default 100 ms.
    pub fn pod_terminate_after(mut self, delay: Duration) -> Self {
        self.timings.node.pod_terminate_after = delay;
        self
    }

    /// How often the controllers run when nothing asks them to. Default 50 ms.
    pub fn tick(mut self, tick: Duration) -> Self {
        self.timings.tick = tick;
        self
    }

    /// How often watches that allow bookmarks get one. Default 5 s.
    pub fn bookmark_every(mut self, every: Duration) -> Self {
        self.timings.bookmark_every = every;
        self
    }

    /// How many changes the store keeps for watches to resume from; older resource versions
    /// get `410 Expired`. Default 2000.
    pub fn watch_history(mut self, changes: usize) -> Self {
        self.timings.watch_history = changes;
        self
    }

    #[track_caller]
    pub fn start(self) -> Emulator {
        Emulator::start_with(self.timings)
    }
}

/// The state behind the lock: the store, and the controllers' memory.
pub(crate) struct Cluster {
    store: Store,
    recorder: Recorder,
    node: Node,
}

pub(crate) struct Shared {
    cluster: Mutex<Cluster>,
    rv_rx: watch::Receiver<u64>,
    /// Wakes the controllers after a write through the API.
    wake: Notify,
    requests: Mutex<Vec<ApiRequest>>,
    reachable: watch::Sender<bool>,
    started: Instant,
    timings: Timings,
    addr: SocketAddr,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Cluster> {
        self.cluster.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, request: ApiRequest) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request);
    }
}

/// A Kubernetes API server with a deployment controller, on a random port of 127.0.0.1, on its
/// own thread and runtime. It stops when dropped.
pub struct Emulator {
    shared: Arc<Shared>,
    kubeconfig: PathBuf,
    _dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Emulator {
    /// An emulator with the default timings.
    #[track_caller]
    pub fn start() -> Emulator {
        Emulator::builder().start()
    }

    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }

    #[track_caller]
    fn start_with(timings: Timings) -> Emulator {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let addr = listener.local_addr().expect("listener address");
        let (rv_tx, rv_rx) = watch::channel(0);
        let mut store = Store::new(timings.watch_history, rv_tx);
        let now = Utc::now();
        for namespace in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            registry::create(
                &mut store,
                Resource::Namespace,
                "",
                json!({"metadata": {"name": namespace}}),
                false,
                now,
            )
            .expect("create the built-in namespaces");
        }
        let shared = Arc::new(Shared {
            cluster: Mutex::new(Cluster {
                store,
                recorder: Recorder::default(),
                node: Node::default(),
            }),
            rv_rx,
            wake: Notify::new(),
            requests: Mutex::new(Vec::new()),
            reachable: watch::Sender::new(true),
            started: Instant::now(),
            timings,
            addr,
        });

        let dir = tempfile::tempdir().expect("create a directory for the kubeconfig");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(&format!("http://{addr}")))
            .expect("write the kubeconfig");

        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("kube-emulator-{}", addr.port()))
            .spawn({
                let shared = Arc::clone(&shared);
                move || run(listener, shared, shutdown_rx)
            })
            .expect("spawn the emulator thread");
        Emulator {
            shared,
            kubeconfig,
            _dir: dir,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// A kubeconfig whose cluster, user and context are named `emulator`, namespace `default`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<ApiRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn clear_requests(&self) {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Simulates an unreachable cluster: while `true`, the port refuses connections and open
    /// ones (watches included) are cut. The controllers keep running. Returns once the port
    /// answers (or refuses) accordingly.
    #[track_caller]
    pub fn set_unreachable(&self, unreachable: bool) {
        self.shared.reachable.send_replace(!unreachable);
        // The emulator's thread closes or reopens the port: wait until it has.
        let applied = self.wait_for(Duration::from_secs(5), |emulator| {
            let open = std::net::TcpStream::connect(emulator.shared.addr).is_ok();
            (open != unreachable).then_some(())
        });
        assert!(
            applied.is_some(),
            "the emulator's port did not {} within 5 s",
            if unreachable { "close" } else { "reopen" }
        );
    }

    /// The stored object, as a GET would return it.
    pub fn get(&self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        let ns = if resource.namespaced() { namespace } else { "" };
        self.shared.lock().store.get(resource, ns, name).cloned()
    }

    /// Every object of `resource`, in `namespace` if given, ordered by namespace and name.
    pub fn list(&self, resource: Resource, namespace: Option<&str>) -> Vec<Value> {
        self.shared.lock().store.list_owned(resource, namespace)
    }

    /// Creates an object as a POST would; panics with the API's message if it is refused.
    #[track_caller]
    pub fn create(&self, resource: Resource, namespace: &str, object: Value) -> Value {
        let created = {
            let mut cluster = self.shared.lock();
            registry::create(
                &mut cluster.store,
                resource,
                namespace,
                object,
                false,
                Utc::now(),
            )
        };
        self.shared.wake.notify_one();
        created.unwrap_or_else(|e| panic!("create {}: {}", resource.kind(), e.message))
    }

    /// Creates the namespace unless it exists.
    pub fn create_namespace(&self, name: &str) {
        if self.get(Resource::Namespace, "", name).is_none() {
            self.create(Resource::Namespace, "", json!({"metadata": {"name": name}}));
        }
    }

    /// Patches an object as a PATCH would — a change made behind the client's back; panics with
    /// the API's message if it is refused.
    #[track_caller]
    pub fn patch(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
        patch_type: PatchType,
        patch: &Value,
    ) -> Value {
        let patched = {
            let mut cluster = self.shared.lock();
            registry::patch(
                &mut cluster.store,
                resource,
                namespace,
                name,
                patch_type,
                patch,
                registry::Subresource::Main,
                false,
                Utc::now(),
            )
        };
        self.shared.wake.notify_one();
        patched.unwrap_or_else(|e| panic!("patch {} {name}: {}", resource.kind(), e.message))
    }

    /// A strategic merge patch of a Deployment (what `kubectl patch` sends by default).
    #[track_caller]
    pub fn patch_deployment(&self, namespace: &str, name: &str, patch: &Value) -> Value {
        self.patch(
            Resource::Deployment,
            namespace,
            name,
            PatchType::Strategic,
            patch,
        )
    }

    /// Deletes an object as a DELETE with default options would (pods terminate gracefully,
    /// dependents are garbage-collected); panics if it does not exist.
    #[track_caller]
    pub fn delete(&self, resource: Resource, namespace: &str, name: &str) {
        let deleted = {
            let mut cluster = self.shared.lock();
            registry::delete(
                &mut cluster.store,
                resource,
                namespace,
                name,
                &registry::DeleteOptions::default(),
                Utc::now(),
            )
        };
        self.shared.wake.notify_one();
        if let Err(e) = deleted {
            panic!("delete {} {name}: {}", resource.kind(), e.message);
        }
    }

    /// Creates (or updates) a Deployment named `name` with one container named `name` running
    /// `image`, selector `app: <name>`, and a memory limit of 128Mi, and lets the controller
    /// roll it out. Creates the namespace if needed. Returns the stored Deployment.
    #[track_caller]
    pub fn apply_deployment(
        &self,
        namespace: &str,
        name: &str,
        image: &str,
        replicas: u32,
    ) -> Value {
        self.create_namespace(namespace);
        if self.get(Resource::Deployment, namespace, name).is_some() {
            return self.patch_deployment(
                namespace,
                name,
                &json!({"spec": {"replicas": replicas, "template": {"spec": {
                    "containers": [{"name": name, "image": image}],
                }}}}),
            );
        }
        self.create(
            Resource::Deployment,
            namespace,
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{
                            "name": name,
                            "image": image,
                            "resources": {"limits": {"memory": "128Mi"}},
                        }]},
                    },
                },
            }),
        )
    }

    /// Polls `check` every 10 ms until it returns `Some`, or `timeout` passes.
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&Emulator) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = check(self) {
                return Some(found);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// [`Emulator::wait_for`] for async tests: sleeps on the caller's runtime, so code under test
    /// on the same thread keeps running.
    pub async fn wait_for_async<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&Emulator) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = check(self) {
                return Some(found);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the Deployment's rollout is complete, in `kubectl rollout status`'s sense;
    /// panics with its last state otherwise.
    #[track_caller]
    pub fn wait_for_rollout(&self, namespace: &str, name: &str, timeout: Duration) -> Value {
        let complete = |d: &Value| {
            let count = |p: &str| d.pointer(p).and_then(Value::as_i64).unwrap_or(0);
            let replicas = d
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            count("/metadata/generation") <= count("/status/observedGeneration")
                && count("/status/updatedReplicas") == replicas
                && count("/status/replicas") == replicas
                && count("/status/availableReplicas") == replicas
        };
        self.wait_for(timeout, |e| {
            e.get(Resource::Deployment, namespace, name)
                .filter(|d| complete(d))
        })
        .unwrap_or_else(|| {
            panic!(
                "deployment {namespace}/{name} did not roll out within {timeout:?}: {:#}",
                self.get(Resource::Deployment, namespace, name)
                    .unwrap_or(Value::Null)
            )
        })
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn kubeconfig_yaml(server: &str) -> String {
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: emulator\n  cluster:\n    server: {server}\n\
         users:\n\
         - name: emulator\n  user: {{}}\n\
         contexts:\n\
         - name: emulator\n  context:\n    cluster: emulator\n    user: emulator\n    namespace: default\n\
         current-context: emulator\n"
    )
}

fn run(listener: std::net::TcpListener, shared: Arc<Shared>, shutdown: oneshot::Receiver<()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the emulator runtime");
    runtime.block_on(async move {
        let controllers = tokio::spawn(run_controllers(Arc::clone(&shared)));
        tokio::select! {
            _ = serve(listener, shared) => {}
            _ = shutdown => {}
        }
        controllers.abort();
    });
    // Open watches and connections end with the runtime.
    runtime.shutdown_background();
}

async fn run_controllers(shared: Arc<Shared>) {
    let timings = shared.timings;
    loop {
        {
            let mut guard = shared.lock();
            let cluster = &mut *guard;
            // Let the controllers react to each other's writes before waiting again, as their
            // informers would.
            for _ in 0..8 {
                let before = cluster.store.rv();
                let now = Utc::now();
                cluster.node.tick(
                    &mut cluster.store,
                    &mut cluster.recorder,
                    &timings.node,
                    Instant::now(),
                    now,
                );
                controller::reconcile(&mut controller::Ctx {
                    store: &mut cluster.store,
                    recorder: &mut cluster.recorder,
                    now,
                });
                if cluster.store.rv() == before {
                    break;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(timings.tick.max(Duration::from_millis(1))) => {}
            _ = shared.wake.notified() => {}
        }
    }
}

async fn serve(listener: std::net::TcpListener, shared: Arc<Shared>) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let app = axum::Router::new()
        .fallback(api::handle)
        .with_state(Arc::clone(&shared));
    let mut listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => Some(listener),
        Err(e) => {
            eprintln!("kube emulator: cannot listen: {e}");
            return;
        }
    };
    let mut reachable = shared.reachable.subscribe();
    // A `set_unreachable(true)` sent before this task subscribed counts too.
    if !*reachable.borrow_and_update() {
        listener = None;
    }
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = async {
                match &listener {
                    Some(listener) => listener.accept().await,
                    None => std::future::pending().await,
                }
            } => {
                let Ok((stream, _)) = accepted else { continue };
                let service = TowerToHyperService::new(app.clone());
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(None)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            changed = reachable.changed() => {
                if changed.is_err() {
                    return;
                }
                if *reachable.borrow_and_update() {
                    // The port is ours: nothing else binds an explicit port it just freed.
                    for _ in 0..100 {
                        match tokio::net::TcpListener::bind(shared.addr).await {
                            Ok(bound) => {
                                listener = Some(bound);
                                break;
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                        }
                    }
                } else {
                    listener = None;
                    connections.abort_all();
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_emulator_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Emulator>();
    }

    #[test]
    fn request_params_are_decoded() {
        let request = ApiRequest {
            method: "GET".into(),
            path: "/".into(),
            query: "labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1".into(),
            content_type: None,
            body: String::new(),
            status: 200,
            at: SystemTime::now(),
            since_start: Duration::ZERO,
        };
        assert_eq!(
            request.param("labelSelector").as_deref(),
            Some("app=web,tier in (a)")
        );
        assert!(request.is_watch());
        assert_eq!(request.param("nope"), None);
    }
}
