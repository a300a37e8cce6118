//! A stage's output, exit, limits, timeout and cancellation.

use std::time::{Duration, Instant};

use gantry_docker::{Stream, Termination};
use tokio_util::sync::CancellationToken;

use crate::support::{TestRun, containers_of, docker, run_stage};

#[tokio::test]
async fn output_is_streamed_before_exit() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "stream");
    let workspace = run.workspace(&[]).await;
    let spec = run.stage(&workspace, "build", "echo first; sleep 2; echo second");

    let finished = run_stage(&docker, &spec, CancellationToken::new()).await;

    assert_eq!(finished.termination(), &Termination::Exited(0));
    assert_eq!(finished.stdout(), "first\nsecond\n");
    let first = &finished.chunks[0];
    assert_eq!(first.output.bytes, b"first\n");
    let early_by = finished.returned - first.at;
    assert!(
        early_by >= Duration::from_millis(1500),
        "the first chunk came only {early_by:?} before the stage returned"
    );
}

#[tokio::test]
async fn stdout_and_stderr_are_kept_apart() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "streams");
    let workspace = run.workspace(&[]).await;
    let spec = run.stage(
        &workspace,
        "build",
        "echo out1; echo err1 >&2; echo out2; echo err2 >&2",
    );

    let finished = run_stage(&docker, &spec, CancellationToken::new()).await;

    assert_eq!(finished.termination(), &Termination::Exited(0));
    assert_eq!(finished.text(Stream::Stdout), "out1\nout2\n");
    assert_eq!(finished.text(Stream::Stderr), "err1\nerr2\n");
}

#[tokio::test]
async fn last_line_without_newline_is_delivered() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "nonewline");
    let workspace = run.workspace(&[]).await;
    let spec = run.stage(&workspace, "build", "echo one; printf 'two, no newline'");

    let finished = run_stage(&docker, &spec, CancellationToken::new()).await;

    assert_eq!(finished.stdout(), "one\ntwo, no newline");
}

#[tokio::test]
async fn quick_stages_lose_no_output() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "quick");
    let workspace = run.workspace(&[]).await;
    for attempt in 1..=5 {
        let mut spec = run.stage(&workspace, "quick", "echo ok");
        spec.attempt = attempt;
        let finished = run_stage(&docker, &spec, CancellationToken::new()).await;
        assert_eq!(finished.stdout(), "ok\n", "attempt {attempt}");
    }
}

#[tokio::test]
async fn exit_codes() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "exit");
    let workspace = run.workspace(&[]).await;
    let cases = [
        ("true", 0, ""),
        ("exit 3", 3, ""),
        // `sh -e`: the first failing command ends the script.
        ("echo before; false; echo after", 1, "before\n"),
        // The script is PID 1, which SIGKILL from inside cannot end; a child shell it can.
        ("sh -c 'kill -9 $$'; echo not reached", 137, ""),
    ];
    for (index, (script, code, stdout)) in cases.into_iter().enumerate() {
        let spec = run.stage(&workspace, &format!("case{index}"), script);
        let finished = run_stage(&docker, &spec, CancellationToken::new()).await;
        assert_eq!(
            finished.termination(),
            &Termination::Exited(code),
            "{script}"
        );
        assert_eq!(finished.stdout(), stdout, "{script}");
    }
    assert_eq!(containers_of(run.id()).await, Vec::<String>::new());
}

#[tokio::test]
async fn env_is_visible() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "env");
    let workspace = run.workspace(&[]).await;
    let mut spec = run.stage(&workspace, "build", r#"echo "$GREETING, $WHO"; pwd"#);
    spec.env = vec![
        ("GREETING".into(), "hello".into()),
        ("WHO".into(), "world with spaces".into()),
    ];

    let finished = run_stage(&docker, &spec, CancellationToken::new()).await;

    assert_eq!(finished.stdout(), "hello, world with spaces\n/workspace\n");
}

#[tokio::test]
async fn timeout_kills_the_stage() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "timeout");
    let workspace = run.workspace(&[]).await;
    let mut spec = run.stage(&workspace, "slow", "echo started; sleep 30; echo finished");
    spec.timeout = Some(Duration::from_secs(1));

    let finished = run_stage(&docker, &spec, CancellationToken::new()).await;

    assert_eq!(
        finished.termination(),
        &Termination::TimedOut(Duration::from_secs(1))
    );
    assert_eq!(finished.stdout(), "started\n");
    assert!(
        finished.took() < Duration::from_secs(5),
        "took {:?}",
        finished.took()
    );
    assert_eq!(containers_of(run.id()).await, Vec::<String>::new());
}

#[tokio::test]
async fn memory_limit_ends_in_oom_kill() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "oom");
    let workspace = run.workspace(&[]).await;
    let mut spec = run.stage(&workspace, "hungry", "tail /dev/zero");
    spec.memory_bytes = Some(16 * 1024 * 1024);

    let finished = run_stage(&docker, &spec, CancellationToken::new()).await;

    assert_eq!(
        finished.termination(),
        &Termination::OomKilled {
            exit_code: 137,
            memory_limit: Some(16 * 1024 * 1024)
        }
    );
}

#[tokio::test]
async fn cpu_limit_is_accepted() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "cpus");
    let workspace = run.workspace(&[]).await;
    let mut spec = run.stage(&workspace, "build", "echo ok");
    spec.nano_cpus = Some(500_000_000);
    spec.memory_bytes = Some(64 * 1024 * 1024);

    let finished = run_stage(&docker, &spec, CancellationToken::new()).await;

    assert_eq!(finished.termination(), &Termination::Exited(0));
}

#[tokio::test]
async fn cancellation_kills_and_removes_quickly() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "cancel");
    let workspace = run.workspace(&[]).await;
    let spec = run.stage(&workspace, "long", "echo started; sleep 60");
    let cancel = CancellationToken::new();
    let (output, mut received) = tokio::sync::mpsc::channel(16);
    let stage = tokio::spawn({
        let docker = docker.clone();
        let cancel = cancel.clone();
        async move { docker.run_stage(&spec, output, cancel).await }
    });

    // Cancel once the script is surely running.
    let first = received.recv().await.unwrap();
    assert_eq!(first.bytes, b"started\n");
    let cancelled_at = Instant::now();
    cancel.cancel();
    let termination = stage.await.unwrap().unwrap();
    let took = cancelled_at.elapsed();

    assert_eq!(termination, Termination::Cancelled);
    assert!(
        received.recv().await.is_none(),
        "the output ends with the stage"
    );
    assert!(took < Duration::from_secs(5), "cancellation took {took:?}");
    assert_eq!(containers_of(run.id()).await, Vec::<String>::new());
}

#[tokio::test]
async fn cancelled_before_start_creates_nothing() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "cancel-early");
    let workspace = run.workspace(&[]).await;
    let spec = run.stage(&workspace, "never", "echo should not run");
    let cancel = CancellationToken::new();
    cancel.cancel();

    let finished = run_stage(&docker, &spec, cancel).await;

    assert_eq!(finished.termination(), &Termination::Cancelled);
    assert_eq!(finished.stdout(), "");
    assert_eq!(containers_of(run.id()).await, Vec::<String>::new());
}

/// A script reading standard input finds it empty, whether or not it was held back for the
/// workspace (the first stage of a run is).
#[tokio::test]
async fn standard_input_is_empty() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "stdin");
    let workspace = run.workspace(&[("README", "x")]).await;
    for stage in ["first", "later"] {
        let mut spec = run.stage(&workspace, stage, "cat; echo \"read $(wc -c) bytes\"");
        spec.timeout = Some(Duration::from_secs(10));
        let finished = run_stage(&docker, &spec, CancellationToken::new()).await;
        assert_eq!(finished.termination(), &Termination::Exited(0), "{stage}");
        assert_eq!(finished.stdout(), "read 0 bytes\n", "{stage}");
    }
}
