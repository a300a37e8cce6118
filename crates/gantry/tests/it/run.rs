//! `gantry run` end to end with real containers.

use std::time::{Duration, Instant};

use crate::support::{Project, docker_available, docker_objects};

#[test]
fn parallel_branch_and_dag() {
    if !docker_available() {
        return;
    }
    // `slow` and `fast` start together; `join` waits for both; `after` waits for `fast` only.
    let p = Project::new(
        r#"
stages:
  - name: slow
    image: local/busybox
    commands: ["sleep 2", "echo slow > /workspace/slow.txt"]
  - name: fast
    needs: []
    image: local/busybox
    commands: ["echo fast > /workspace/fast.txt"]
  - name: join
    needs: [slow, fast]
    image: local/busybox
    commands: ["cat /workspace/slow.txt /workspace/fast.txt"]
"#,
    );
    let started = Instant::now();
    let r = p.run(&["run"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert_eq!(
        r.lines_of("join")[1..4],
        [
            "+ cat /workspace/slow.txt /workspace/fast.txt",
            "slow",
            "fast"
        ],
        "{}",
        r.debug()
    );
    // `fast` finished while `slow` was still sleeping.
    let order: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.contains("==> success"))
        .collect();
    assert!(order[0].starts_with("fast"), "{}", r.debug());
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_failing_stage_skips_its_dependents_and_fails_the_run() {
    if !docker_available() {
        return;
    }
    let p = Project::new(
        r#"
stages:
  - { name: build, image: local/busybox, commands: ["echo building", "exit 3", "echo never"] }
  - { name: test, image: local/busybox, commands: ["echo testing"] }
  - { name: deploy, image: local/busybox, commands: ["echo deploying"] }
  - { name: docs, needs: [], image: local/busybox, commands: ["echo docs"] }
"#,
    );
    let r = p.run(&["run"]);
    assert_eq!(r.code, Some(1), "{}", r.debug());
    assert!(r.row("build").ends_with("3 exit code 3"), "{}", r.debug());
    assert_eq!(
        r.row("test"),
        "test skipped - - needs 'build', which failed"
    );
    assert_eq!(
        r.row("deploy"),
        "deploy skipped - - needs 'test', which was skipped"
    );
    assert!(r.row("docs").starts_with("docs success"), "{}", r.debug());
    assert!(
        !r.stdout.contains("echo never\nnever"),
        "sh -e stops at the first failure"
    );
    assert!(
        r.lines_of("build").contains(&"+ echo building".to_string()),
        "commands are echoed"
    );
    assert!(
        r.stdout.contains("\nrun failure in ")
            && r.stdout.trim_end().ends_with(": stage 'build' failed"),
        "{}",
        r.debug()
    );
}

#[test]
fn allow_failure_and_when() {
    if !docker_available() {
        return;
    }
    let p = Project::new(
        r#"
stages:
  - { name: lint, image: local/busybox, commands: ["exit 1"], allow_failure: true }
  - { name: deploy, image: local/busybox, commands: ["echo deploy"], when: { branch: [main] } }
  - { name: tagonly, image: local/busybox, commands: ["echo tag"], when: { event: [tag] } }
  - { name: last, image: local/busybox, commands: ["echo last"] }
"#,
    );
    let r = p.run(&["run", "--branch", "feature-x"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert!(r.row("lint").starts_with("lint failure"), "{}", r.debug());
    assert!(
        r.row("deploy").starts_with("deploy skipped - -"),
        "{}",
        r.debug()
    );
    assert!(
        r.row("deploy").contains("feature-x"),
        "the reason names the branch: {}",
        r.row("deploy")
    );
    assert!(
        r.row("tagonly").starts_with("tagonly skipped"),
        "{}",
        r.debug()
    );
    assert!(r.row("last").starts_with("last success"), "{}", r.debug());

    let r = p.run(&["run", "--branch", "main"]);
    assert!(
        r.row("deploy").starts_with("deploy success"),
        "{}",
        r.debug()
    );
}

#[test]
fn retry_shows_each_attempt() {
    if !docker_available() {
        return;
    }
    // The workspace is shared across attempts: the second attempt sees the first's marker.
    let p = Project::new(
        r#"
stages:
  - name: flaky
    image: local/busybox
    retry: 2
    commands:
      - "if [ -f marker ]; then echo second try; else touch marker; echo first try; exit 1; fi"
"#,
    );
    let r = p.run(&["run"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    let lines = r.lines_of("flaky");
    assert!(lines.contains(&"first try".to_string()), "{}", r.debug());
    assert!(
        lines.contains(&"[gantry] exit code 1".to_string()),
        "{}",
        r.debug()
    );
    assert!(
        lines.contains(&"==> started (attempt 2)".to_string()),
        "{}",
        r.debug()
    );
    assert!(lines.contains(&"second try".to_string()), "{}", r.debug());
}

#[test]
fn timeout_kills_the_stage() {
    if !docker_available() {
        return;
    }
    let p = Project::new(
        "stages:\n  - { name: slow, image: local/busybox, commands: [\"sleep 60\"], timeout: 2s }\n",
    );
    expect_slow_timed_out_after_2s(&p);
}

/// `gantry run` in `p` fails promptly because its stage `slow` timed out after 2 s.
fn expect_slow_timed_out_after_2s(p: &Project) {
    let started = Instant::now();
    let r = p.run(&["run"]);
    assert_eq!(r.code, Some(1), "{}", r.debug());
    assert!(
        r.row("slow").ends_with("timed out after 2s"),
        "{}",
        r.debug()
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

/// A stage without a `timeout` of its own gets `[server] stage_timeout` from `./gantry.toml`.
#[test]
fn the_configured_stage_timeout_applies_to_stages_without_one() {
    if !docker_available() {
        return;
    }
    let p = Project::new(
        "stages:\n  - { name: slow, image: local/busybox, commands: [\"sleep 60\"] }\n",
    );
    p.write("gantry.toml", "[server]\nstage_timeout = \"2s\"\n");
    expect_slow_timed_out_after_2s(&p);
}

#[test]
fn oom_kill_is_named() {
    if !docker_available() {
        return;
    }
    let p = Project::new(
        "stages:\n  - { name: hog, image: local/busybox, commands: [\"tail /dev/zero\"], memory: 16m }\n",
    );
    let r = p.run(&["run"]);
    assert_eq!(r.code, Some(1), "{}", r.debug());
    assert!(
        r.row("hog").ends_with("OOMKilled (memory limit 16 MiB)"),
        "{}",
        r.debug()
    );
}

#[test]
fn a_service_is_reachable_by_name() {
    if !docker_available() {
        return;
    }
    let p = Project::new(
        r#"
stages:
  - name: test
    image: local/busybox
    services:
      - name: web
        image: local/busybox
        commands: ["mkdir -p /www", "echo hello-from-service > /www/index.html", "httpd -f -p 8080 -h /www"]
    commands:
      - "for i in $(seq 1 50); do wget -q -O - http://web:8080/ && exit 0; sleep 0.2; done; exit 1"
"#,
    );
    let r = p.run(&["run"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert!(
        r.lines_of("test")
            .contains(&"hello-from-service".to_string()),
        "{}",
        r.debug()
    );
}

#[test]
fn env_interpolation_and_masked_secrets() {
    if !docker_available() {
        return;
    }
    let p = Project::new(
        r#"
name: a label only
env: { APP_ENV: test, LABEL: "app-${GANTRY_BRANCH}" }
stages:
  - name: show
    image: local/busybox
    env: { DATABASE_URL: "postgres://db/${APP_ENV}" }
    secrets: [API_TOKEN]
    commands:
      - echo "env=$APP_ENV label=$LABEL db=$DATABASE_URL ci=$CI event=$GANTRY_EVENT extra=$EXTRA"
      - echo "token=$API_TOKEN"
      - echo "repo=$GANTRY_REPO"
      - "printf 'split: %s' \"${API_TOKEN%%-*}\"; sleep 0.5; printf '%s\\n' \"-${API_TOKEN#*-}\""
      - test "$API_TOKEN" = "s3cr3t-token-value"
"#,
    );
    let r = p.run(&[
        "run",
        "--branch",
        "dev",
        "--env",
        "EXTRA=42",
        "--secret",
        "API_TOKEN=s3cr3t-token-value",
    ]);
    assert_eq!(
        r.code,
        Some(0),
        "the secret reaches the container unchanged: {}",
        r.debug()
    );
    let lines = r.lines_of("show");
    assert!(
        lines.contains(
            &"env=test label=app-dev db=postgres://db/test ci=true event=push extra=42".to_string()
        ),
        "{}",
        r.debug()
    );
    assert!(lines.contains(&"token=***".to_string()), "{}", r.debug());
    // The repository is the directory, whatever the pipeline's `name`.
    let repo = p.path().file_name().expect("a name").to_string_lossy();
    assert!(lines.contains(&format!("repo={repo}")), "{}", r.debug());
    // Printed in two writes half a second apart: two chunks, one line, still masked.
    assert!(lines.contains(&"split: ***".to_string()), "{}", r.debug());
    assert!(
        !r.stdout.contains("s3cr3t-token-value") && !r.stderr.contains("s3cr3t-token-value"),
        "{}",
        r.debug()
    );

    // From the environment, by name only.
    let out = p
        .gantry(&["run", "--secret", "API_TOKEN"])
        .env("API_TOKEN", "s3cr3t-token-value")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cr3t-token-value"));
}

#[test]
fn a_missing_image_with_pull_never() {
    if !docker_available() {
        return;
    }
    let p = Project::new(
        "stages:\n  - { name: a, image: local/does-not-exist:1, pull: never, commands: [true] }\n",
    );
    let r = p.run(&["run"]);
    assert_eq!(r.code, Some(1), "{}", r.debug());
    assert!(
        r.row("a")
            .contains("not present locally and pull policy is 'never'"),
        "{}",
        r.debug()
    );
}

#[test]
fn the_working_tree_is_the_workspace() {
    if !docker_available() {
        return;
    }
    let p = Project::new(
        "stages:\n  - { name: a, image: local/busybox, commands: [\"pwd\", \"cat src/hello.txt\"] }\n",
    );
    p.write("src/hello.txt", "hello from the tree\n");
    let r = p.run(&["run"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert_eq!(
        r.lines_of("a")[1..5],
        [
            "+ pwd",
            "/workspace",
            "+ cat src/hello.txt",
            "hello from the tree"
        ]
    );
}

/// What git ignores stays out of the workspace (a Rust `target/` or `node_modules/` would
/// otherwise be copied on every run), except files git tracks; `--no-gitignore` copies all.
#[test]
fn what_git_ignores_stays_out_of_the_workspace() {
    if !docker_available() {
        return;
    }
    let p = Project::new(
        "stages:\n  - { name: a, image: local/busybox, commands: [\"find . -type f ! -path './.git/*' | sort\"] }\n",
    );
    p.write(".gitignore", "target/\n*.log\n")
        .write("src/main.rs", "fn main() {}\n")
        .write("target/debug/app", "a build output\n")
        .write("run.log", "a log\n")
        .write("keep.log", "tracked although *.log matches\n");
    let git = |args: &[&str]| {
        let status = std::process::Command::new("git")
            .args(args)
            .current_dir(p.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", p.path())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("git");
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", ".gantry.yml", ".gitignore", "src/main.rs"]);
    git(&["add", "-f", "keep.log"]);

    let files = |r: &crate::support::Run| -> Vec<String> {
        r.lines_of("a")
            .iter()
            .filter_map(|l| l.strip_prefix("./").map(str::to_owned))
            .collect()
    };
    let r = p.run(&["run"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert_eq!(
        files(&r),
        [".gantry.yml", ".gitignore", "keep.log", "src/main.rs"],
        "{}",
        r.debug()
    );
    assert!(
        r.stderr.contains(
            "note: not copied into the workspace, as git ignores them: run.log, target/ (--no-gitignore copies everything)"
        ),
        "{}",
        r.debug()
    );

    let r = p.run(&["run", "--no-gitignore"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert_eq!(
        files(&r),
        [
            ".gantry.yml",
            ".gitignore",
            "keep.log",
            "run.log",
            "src/main.rs",
            "target/debug/app"
        ],
        "{}",
        r.debug()
    );
    assert!(!r.stderr.contains("not copied"), "{}", r.debug());
}

#[test]
fn only_selected_stages_run() {
    if !docker_available() {
        return;
    }
    let p = Project::new(
        "stages:\n  - { name: a, image: local/busybox, commands: [\"echo a\"] }\n  - { name: b, image: local/busybox, commands: [\"echo b\"] }\n  - { name: c, image: local/busybox, commands: [\"echo c\"] }\n",
    );
    let r = p.run(&["run", "--stage", "b"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert_eq!(r.row("a"), "a skipped - - not selected with --stage");
    assert!(r.row("b").starts_with("b success"));
    let r = p.run(&["run", "--stage", "b", "--with-needs"]);
    assert!(r.row("a").starts_with("a success"), "{}", r.debug());
    assert!(r.row("c").starts_with("c skipped"), "{}", r.debug());
    let r = p.run(&["run", "--stage", "zzz"]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("no stage named 'zzz'"), "{}", r.debug());
}

#[test]
fn cancellation_leaves_nothing_behind() {
    if !docker_available() {
        return;
    }
    let p = Project::new(
        r#"
stages:
  - name: long
    image: local/busybox
    services: [ { name: svc, image: local/busybox, commands: ["sleep 600"] } ]
    commands: ["echo started", "sleep 600"]
  - { name: after, image: local/busybox, commands: ["echo after"] }
"#,
    );
    let child = p
        .gantry(&["run"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    // Wait for the stage to be running, then interrupt as Ctrl-C would.
    let label = format!("label=gantry.pid={pid}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while docker_objects("container", &label).len() < 2 {
        assert!(Instant::now() < deadline, "the stage never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let interrupted = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    let took = interrupted.elapsed();
    let r = crate::support::Run::from(out);
    assert_eq!(r.code, Some(130), "{}", r.debug());
    assert!(took < Duration::from_secs(5), "cancelling took {took:?}");
    assert!(r.row("long").starts_with("long cancelled"), "{}", r.debug());
    assert!(r.row("after").starts_with("after skipped"), "{}", r.debug());
    assert!(r.stdout.contains("run cancelled"), "{}", r.debug());
    for kind in ["container", "network", "volume"] {
        assert_eq!(
            docker_objects(kind, &label),
            Vec::<String>::new(),
            "{kind}s left behind"
        );
    }
}

#[test]
fn an_unreachable_engine_is_one_clear_line() {
    let p = Project::new("stages:\n  - { name: a, image: local/busybox, commands: [true] }\n");
    let r = crate::support::Run::from(
        p.gantry(&["run"])
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .output()
            .expect("run"),
    );
    assert_eq!(r.code, Some(2), "{}", r.debug());
    assert!(
        r.stderr
            .starts_with("error: cannot reach Docker at unix:///nonexistent/docker.sock: "),
        "{}",
        r.debug()
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.debug());
}

#[test]
fn an_invalid_pipeline_is_not_run() {
    let p = Project::new("stages:\n  - { name: a, commands: [true] }\n");
    let r = p.run(&["run"]);
    assert_eq!(r.code, Some(2), "{}", r.debug());
    assert!(r.stderr.contains(".gantry.yml:2:"), "{}", r.debug());
}

/// A `build` stage under `gantry run`: built from the working tree, not pushed (`push: false`),
/// told in the summary, labelled with the origin remote (without its credentials) as source.
#[test]
fn a_build_stage_builds_from_the_working_tree() {
    if !docker_available() {
        return;
    }
    let p = Project::new(
        "stages:\n  - name: image\n    build: { image: gantry-it/run-build, tags: [\"${GANTRY_SHORT_SHA}\"], push: false }\n",
    );
    std::fs::write(
        p.path().join("Dockerfile"),
        "FROM local/busybox\nCOPY hello.txt /hello.txt\n",
    )
    .expect("Dockerfile");
    std::fs::write(p.path().join("hello.txt"), "from the working tree\n").expect("file");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(p.path())
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "first"]);
    git(&[
        "remote",
        "add",
        "origin",
        "https://ci:ghp_s3cret@github.com/acme/backend.git",
    ]);
    let short = git(&["rev-parse", "--short=8", "HEAD"]);
    let image = format!("gantry-it/run-build:{short}");
    let _cleanup = crate::deployments::RemoveImages(vec![image.clone()]);

    let r = p.run(&["run"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert!(
        r.stdout.contains(&format!("\nimage: built {image}")),
        "{}",
        r.debug()
    );
    let inspect = std::process::Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{index .Config.Labels \"org.opencontainers.image.source\"}} {{index .Config.Labels \"org.opencontainers.image.revision\"}}",
            &image,
        ])
        .output()
        .expect("docker inspect");
    let labels = String::from_utf8_lossy(&inspect.stdout);
    let revision = git(&["rev-parse", "HEAD"]);
    assert_eq!(
        labels.trim(),
        format!("https://***@github.com/acme/backend.git {revision}")
    );
    assert!(!r.stdout.contains("ghp_s3cret") && !r.stderr.contains("ghp_s3cret"));
}
