//! Image builds: the context comes from the workspace volume, `.dockerignore` is honoured,
//! build args, targets and labels reach the image, and a failing step is named.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use gantry_docker::{BuildSpec, BuiltImage, Docker, Error, Output, Result, Termination, Workspace};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::support::{TestRun, docker, raw_client, run_stage};

/// A build spec with the defaults of a stage that names only its image.
pub fn build_spec(run: &TestRun, workspace: &Workspace, image: &str) -> BuildSpec {
    BuildSpec {
        run: run.labels.clone(),
        stage: "image".into(),
        workspace: workspace.clone(),
        context: ".".into(),
        dockerfile: None,
        target: None,
        args: Vec::new(),
        labels: Vec::new(),
        image: image.into(),
        tags: vec!["latest".into()],
    }
}

/// What a build or push returned and the log it wrote.
pub struct Logged<T> {
    pub result: Result<T>,
    pub log: String,
}

/// Collects everything sent to the returned sender until it and all its clones are dropped.
pub fn collect_output() -> (mpsc::Sender<Output>, tokio::task::JoinHandle<String>) {
    let (sender, mut receiver) = mpsc::channel::<Output>(64);
    let collector = tokio::spawn(async move {
        let mut log = Vec::new();
        while let Some(output) = receiver.recv().await {
            log.extend(output.bytes);
        }
        String::from_utf8_lossy(&log).into_owned()
    });
    (sender, collector)
}

/// Removing an image while the engine builds on its parent can fail that build: the classic
/// builder's cache probe lists the parent's children and then reads each one, and a child removed
/// in between fails the step with `unable to find image "sha256:…"` (seen once in CI, when one
/// test's cleanup ran beside another test's `COPY`). The tests of this binary build on the same
/// base images, so builds hold this lock shared and removals hold it alone. Gantry itself removes
/// no images.
pub static IMAGES: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

pub async fn build(docker: &Docker, spec: &BuildSpec) -> Logged<BuiltImage> {
    let (sender, collector) = collect_output();
    let result = {
        let _building = IMAGES.read().await;
        docker
            .build_image(spec, sender, CancellationToken::new())
            .await
    };
    let log = collector.await.unwrap();
    Logged { result, log }
}

/// Builds and expects success, failing with the build's log otherwise; removes the image's
/// references when the test ends.
pub async fn build_ok(docker: &Docker, spec: &BuildSpec) -> (BuiltImage, RemoveImages) {
    let built = build(docker, spec).await;
    match built.result {
        Ok(image) => {
            let cleanup = RemoveImages(image.references.clone());
            (image, cleanup)
        }
        Err(err) => panic!("the build failed: {err}\n{}", built.log),
    }
}

/// Removes image references when dropped, whatever the test's outcome.
pub struct RemoveImages(pub Vec<String>);

impl Drop for RemoveImages {
    fn drop(&mut self) {
        let references = std::mem::take(&mut self.0);
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let client = raw_client().await;
                let _removing = IMAGES.write().await;
                for reference in references {
                    remove_image(&client, &reference).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Runs `script` in a container of `image` (with the run's workspace) and returns its stdout.
async fn run_in(run: &TestRun, workspace: &Workspace, image: &str, script: &str) -> String {
    let mut spec = run.stage(workspace, "check", script);
    spec.image = image.into();
    let finished = run_stage(&run.docker, &spec, CancellationToken::new()).await;
    assert_eq!(
        finished.termination(),
        &Termination::Exited(0),
        "{}",
        finished.text(gantry_docker::Stream::Stderr)
    );
    finished.stdout()
}

fn image_name(run: &TestRun) -> String {
    format!("gantry-it/{}", run.id().to_ascii_lowercase())
}

#[tokio::test]
async fn build_args_target_and_several_tags() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "build-args");
    let workspace = run
        .workspace(&[(
            "Dockerfile",
            "FROM local/busybox AS base\n\
             ARG GREETING=unset\n\
             RUN echo \"greeting: $GREETING\" > /greeting\n\
             FROM base AS runtime\n\
             RUN echo runtime > /stage\n\
             FROM base AS debug\n\
             RUN echo debug > /stage\n",
        )])
        .await;
    let mut spec = build_spec(&run, &workspace, &image_name(&run));
    spec.target = Some("runtime".into());
    spec.args = vec![("GREETING".into(), "hello from args".into())];
    spec.tags = vec!["1.0".into(), "abc1234".into(), "latest".into()];

    let (image, _cleanup) = build_ok(&docker, &spec).await;

    assert!(image.id.starts_with("sha256:"), "{}", image.id);
    let name = image_name(&run);
    assert_eq!(
        image.references,
        [
            format!("{name}:1.0"),
            format!("{name}:abc1234"),
            format!("{name}:latest")
        ]
    );
    let client = raw_client().await;
    for reference in &image.references {
        let inspected = client.inspect_image(reference).await.unwrap();
        assert_eq!(
            inspected.id.as_deref(),
            Some(image.id.as_str()),
            "{reference}"
        );
    }
    let out = run_in(
        &run,
        &workspace,
        &image.references[0],
        "cat /greeting /stage",
    )
    .await;
    assert_eq!(out, "greeting: hello from args\nruntime\n");
}

#[tokio::test]
async fn dockerignore_leaves_files_out_and_exceptions_in() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "build-ignore");
    let workspace = run
        .workspace(&[
            ("Dockerfile", "FROM local/busybox\nCOPY . /ctx/\n"),
            (
                ".dockerignore",
                "# secrets stay home\nsecret.txt\nlogs\n!logs/keep.log\n**/*.tmp\n",
            ),
            ("app.txt", "app\n"),
            ("secret.txt", "do not ship\n"),
            ("logs/debug.log", "noise\n"),
            ("logs/keep.log", "kept\n"),
            ("src/cache.tmp", "scratch\n"),
            ("src/main.sh", "echo main\n"),
        ])
        .await;
    let spec = build_spec(&run, &workspace, &image_name(&run));

    let built = build(&docker, &spec).await;
    let log = built.log;
    let image = built.result.unwrap_or_else(|err| panic!("{err}\n{log}"));
    let _cleanup = RemoveImages(image.references.clone());

    assert!(
        log.contains("Sending build context to Docker daemon: ")
            && log.contains("(3 left out by .dockerignore)"),
        "{log}"
    );
    let out = run_in(
        &run,
        &workspace,
        &image.references[0],
        "cd /ctx && find . -type f | sort",
    )
    .await;
    assert_eq!(
        out,
        "./.dockerignore\n./Dockerfile\n./app.txt\n./logs/keep.log\n./src/main.sh\n"
    );
}

#[tokio::test]
async fn labels_reach_the_image() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "build-labels");
    let workspace = run
        .workspace(&[(
            "Dockerfile",
            "FROM local/busybox\nLABEL from.dockerfile=yes\n",
        )])
        .await;
    let mut spec = build_spec(&run, &workspace, &image_name(&run));
    spec.labels = vec![
        (
            "org.opencontainers.image.revision".into(),
            "0123abcd".into(),
        ),
        (
            "org.opencontainers.image.source".into(),
            "https://example.com/pet/backend".into(),
        ),
        (
            "org.opencontainers.image.created".into(),
            "2026-05-10T12:00:00Z".into(),
        ),
    ];

    let (image, _cleanup) = build_ok(&docker, &spec).await;

    let inspected = raw_client()
        .await
        .inspect_image(&image.references[0])
        .await
        .unwrap();
    let labels = inspected.config.and_then(|c| c.labels).unwrap_or_default();
    let mut expected = spec.labels.clone();
    expected.push(("from.dockerfile".into(), "yes".into()));
    for (key, value) in expected {
        assert_eq!(labels.get(&key), Some(&value), "label {key} in {labels:?}");
    }
}

#[tokio::test]
async fn a_failing_step_is_named() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "build-fail");
    // The run id keeps the builder's cache out of it, so every step runs.
    let dockerfile = format!(
        "FROM local/busybox\n\
         RUN echo first step ran for {id}\n\
         RUN echo about to fail && exit 3\n\
         RUN echo never\n",
        id = run.id()
    );
    let workspace = run.workspace(&[("Dockerfile", dockerfile.as_str())]).await;
    let spec = build_spec(&run, &workspace, &image_name(&run));
    let _cleanup = RemoveImages(vec![format!("{}:latest", image_name(&run))]);

    let built = build(&docker, &spec).await;

    let err = built.result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "step 3/4 'RUN echo about to fail && exit 3' failed: \
         The command '/bin/sh -c echo about to fail && exit 3' returned a non-zero code: 3"
    );
    assert!(matches!(err, Error::Build { step: Some(_), .. }));
    // The steps' own output is in the log, line by line, before the failure.
    let first = format!("\nfirst step ran for {}\n", run.id());
    assert!(built.log.contains(&first), "{}", built.log);
    assert!(built.log.contains("\nabout to fail\n"), "{}", built.log);
    assert!(!built.log.contains("never\n"), "{}", built.log);
}

#[tokio::test]
async fn a_broken_dockerfile_and_missing_paths() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "build-broken");
    let workspace = run
        .workspace(&[("app/Dockerfile", "FROM local/busybox\nFROBNICATE now\n")])
        .await;
    let mut spec = build_spec(&run, &workspace, &image_name(&run));
    spec.context = "app".into();
    let err = build(&docker, &spec).await.result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "image build failed: dockerfile parse error line 2: unknown instruction: FROBNICATE"
    );

    spec.context = "backend".into();
    let err = build(&docker, &spec).await.result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "build context 'backend' does not exist in the workspace"
    );

    spec.context = ".".into();
    let err = build(&docker, &spec).await.result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Dockerfile 'Dockerfile' does not exist in the workspace"
    );
}

#[tokio::test]
async fn the_context_comes_from_the_workspace_volume() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "build-volume");
    let workspace = run
        .workspace(&[
            (
                "backend/Dockerfile",
                "FROM local/busybox\nCOPY . /ctx/\nCOPY generated.txt /generated.txt\n",
            ),
            ("backend/app.txt", "from the checkout\n"),
            (
                "docker/backend.Dockerfile",
                "FROM local/busybox\nCOPY . /ctx/\n",
            ),
        ])
        .await;
    // An earlier stage produces a file the image needs.
    let stage = run.stage(
        &workspace,
        "generate",
        "echo made by an earlier stage > backend/generated.txt",
    );
    let finished = run_stage(&docker, &stage, CancellationToken::new()).await;
    assert_eq!(finished.termination(), &Termination::Exited(0));

    let mut spec = build_spec(&run, &workspace, &image_name(&run));
    spec.context = "backend".into();
    spec.dockerfile = Some("backend/Dockerfile".into());
    let (image, _cleanup) = build_ok(&docker, &spec).await;
    let out = run_in(&run, &workspace, &image.references[0], "cat /generated.txt").await;
    assert_eq!(out, "made by an earlier stage\n");

    // A Dockerfile outside the context is sent, but stays out of the image's files.
    spec.dockerfile = Some("docker/backend.Dockerfile".into());
    spec.tags = vec!["outside".into()];
    let (image, _cleanup) = build_ok(&docker, &spec).await;
    let out = run_in(
        &run,
        &workspace,
        &image.references[0],
        "cd /ctx && find . | sort",
    )
    .await;
    assert_eq!(out, ".\n./Dockerfile\n./app.txt\n./generated.txt\n");
}

#[tokio::test]
async fn cancelling_stops_the_build_promptly() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "build-cancel");
    let marker = format!("gantry-cancel-{}", run.id());
    let workspace = run
        .workspace(&[(
            "Dockerfile",
            format!("FROM local/busybox\nRUN echo started && sleep 60 # {marker}\n").as_str(),
        )])
        .await;
    let spec = build_spec(&run, &workspace, &image_name(&run));
    let (sender, mut receiver) = mpsc::channel::<Output>(64);
    let cancel = CancellationToken::new();
    let building = {
        let docker = docker.clone();
        let spec = spec.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let _building = IMAGES.read().await;
            docker.build_image(&spec, sender, cancel).await
        })
    };
    let mut log = String::new();
    while let Some(output) = receiver.recv().await {
        log.push_str(&String::from_utf8_lossy(&output.bytes));
        if log.contains("started\n") {
            break;
        }
    }
    assert!(log.contains("started\n"), "{log}");
    let cancelled_at = Instant::now();
    cancel.cancel();
    let result = building.await.unwrap();
    let took = cancelled_at.elapsed();
    match result {
        Err(Error::Cancelled { what }) => {
            assert_eq!(what, format!("the build of '{}'", image_name(&run)));
        }
        other => panic!("expected a cancellation, got {other:?}"),
    }
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // The engine stops the step's container and removes it.
    let client = raw_client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let options = bollard::query_parameters::ListContainersOptionsBuilder::new()
            .all(true)
            .build();
        let containers = client.list_containers(Some(options)).await.unwrap();
        let left: Vec<_> = containers
            .iter()
            .filter(|c| {
                c.command
                    .as_deref()
                    .is_some_and(|cmd| cmd.contains(&marker))
            })
            .map(|c| format!("{:?} {:?}", c.id, c.state))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the build's container is still there: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An image that is a child of `local/busybox` and differs from its siblings by a label, built
/// straight through the engine's API (no workspace, no container): what another CI job or a
/// developer on the same engine would leave or remove.
async fn sibling_image(client: &bollard::Docker, tag: &str, n: usize) -> String {
    let mut context = tar::Builder::new(Vec::new());
    let dockerfile = b"FROM local/busybox\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(dockerfile.len() as u64);
    header.set_mode(0o644);
    context
        .append_data(&mut header, "Dockerfile", &dockerfile[..])
        .unwrap();
    let context = context.into_inner().unwrap();
    let reference = format!("{tag}:{n}");
    let options = bollard::query_parameters::BuildImageOptionsBuilder::new()
        .t(&reference)
        .labels(&HashMap::from([("gantry.test.sibling", n.to_string())]))
        .build();
    let mut events = client.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(event) = events.next().await {
        event.unwrap_or_else(|err| panic!("building {reference}: {err}"));
    }
    reference
}

async fn remove_image(client: &bollard::Docker, reference: &str) {
    let options = bollard::query_parameters::RemoveImageOptionsBuilder::new()
        .force(true)
        .build();
    let _ = client.remove_image(reference, Some(options), None).await;
}

/// The engine's cache-lookup race (see `IMAGES`), provoked on purpose: while one build runs again
/// and again, a second task builds and removes sibling images of the same base. The test holds
/// `IMAGES` alone throughout, so the only removals are its own. The engine reads every child of the base image in each lookup, so a crowd of
/// children widens the window; with them, a build without the second try failed in most runs.
/// Gantry's builds try again, succeed, and say so in their log.
#[tokio::test]
async fn removing_sibling_images_mid_build_does_not_fail_the_build() {
    const BUILDS: usize = 40;
    const CROWD: usize = 150;
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "build-race");
    let workspace = run
        .workspace(&[
            ("Dockerfile", "FROM local/busybox\nCOPY . /ctx/\n"),
            ("app.txt", "the build under test\n"),
        ])
        .await;
    let spec = build_spec(&run, &workspace, &image_name(&run));
    let client = raw_client().await;
    let tag = format!("{}-sibling", image_name(&run));
    // Declared before the lock so that it is dropped after it: its removals take the lock too.
    let mut cleanup = RemoveImages(vec![format!("{}:latest", image_name(&run))]);
    // This test removes images without the lock on purpose, so it runs alone: no other test's
    // build may meet its removals, and no other test's cleanup may meet its crowd being built
    // (that failed CI once: a crowd build, which does not try again, lost the race).
    let _alone = IMAGES.write().await;
    for n in 0..CROWD {
        cleanup.0.push(sibling_image(&client, &tag, n).await);
    }

    let stop = CancellationToken::new();
    let remover = {
        let stop = stop.clone();
        let client = client.clone();
        tokio::spawn(async move {
            let mut removed = 0;
            while !stop.is_cancelled() {
                let reference = sibling_image(&client, &tag, CROWD + removed).await;
                remove_image(&client, &reference).await;
                removed += 1;
            }
            removed
        })
    };

    let mut again = 0;
    for _ in 0..BUILDS {
        // Not `build`: that takes the lock this test holds.
        let (sender, collector) = collect_output();
        let result = docker
            .build_image(&spec, sender, CancellationToken::new())
            .await;
        let log = collector.await.unwrap();
        result.unwrap_or_else(|err| panic!("{err}\n{log}"));
        again += log.matches("building again").count();
    }
    stop.cancel();
    let removed = remover.await.unwrap();
    assert!(removed > 0, "no sibling image was built and removed");
    eprintln!("{BUILDS} builds beside {removed} sibling removals; {again} tried again");
}
