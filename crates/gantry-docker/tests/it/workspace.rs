//! The workspace volume: the working tree at /workspace, shared by the run's stages.

use gantry_docker::{Archive, Termination};
use tokio_util::sync::CancellationToken;

use crate::support::{TestRun, docker, resources_of, run_stage};

#[tokio::test]
async fn working_tree_is_at_workspace_and_shared_between_stages() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "workspace");

    let tree = std::env::temp_dir().join(format!("gantry-it-tree-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(tree.join(".git")).unwrap();
    std::fs::create_dir_all(tree.join("src")).unwrap();
    std::fs::write(tree.join("README"), "hello workspace\n").unwrap();
    std::fs::write(tree.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(tree.join("src/main.sh"), "#!/bin/sh\necho script ran\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            tree.join("src/main.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("README", tree.join("LINK")).unwrap();
    std::fs::create_dir_all(tree.join("target")).unwrap();
    std::fs::write(tree.join("target/skipped"), "left out\n").unwrap();
    // As the server and `gantry run` make it: in a file, streamed to the engine.
    let temp = tempfile::tempdir().unwrap();
    let archive =
        Archive::of_directory(&tree, temp.path(), &|path, _| path.starts_with("target")).unwrap();
    std::fs::remove_dir_all(&tree).unwrap();
    assert_eq!(std::fs::read_dir(temp.path()).unwrap().count(), 1);

    let workspace = docker.create_workspace(&run.labels, archive).await.unwrap();
    let volumes: Vec<_> = resources_of(run.id())
        .await
        .into_iter()
        .filter(|r| r.starts_with("volume"))
        .collect();
    assert_eq!(volumes, vec![format!("volume {}", workspace.volume)]);

    let first = run.stage(
        &workspace,
        "first",
        "cat README; cat .git/HEAD; ./src/main.sh; readlink LINK; ls target 2>/dev/null || echo no-target; echo from-first > made-by-first",
    );
    let finished = run_stage(&docker, &first, CancellationToken::new()).await;
    assert_eq!(finished.termination(), &Termination::Exited(0));
    assert_eq!(
        finished.stdout(),
        "hello workspace\nref: refs/heads/main\nscript ran\nREADME\nno-target\n"
    );
    assert_eq!(
        std::fs::read_dir(temp.path()).unwrap().count(),
        0,
        "the archive's file is gone once unpacked"
    );

    let second = run.stage(&workspace, "second", "cat /workspace/made-by-first");
    let finished = run_stage(&docker, &second, CancellationToken::new()).await;
    assert_eq!(finished.stdout(), "from-first\n");
}

#[tokio::test]
async fn empty_working_tree() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "workspace-empty");
    let workspace = docker
        .create_workspace(&run.labels, Vec::new())
        .await
        .unwrap();
    let spec = run.stage(&workspace, "list", "ls -A /workspace | wc -l");
    let finished = run_stage(&docker, &spec, CancellationToken::new()).await;
    assert_eq!(finished.stdout().trim(), "0");
}

#[tokio::test]
async fn parallel_first_stages_both_see_the_working_tree() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "workspace-parallel");
    let workspace = run.workspace(&[("README", "shared\n")]).await;
    let mut python = run.stage(
        &workspace,
        "python",
        "python3 -c 'print(open(\"README\").read(), end=\"\")'",
    );
    python.image = "local/python:3.11".into();
    let busybox = run.stage(&workspace, "busybox", "cat README");

    let (a, b) = tokio::join!(
        run_stage(&docker, &python, CancellationToken::new()),
        run_stage(&docker, &busybox, CancellationToken::new()),
    );

    assert_eq!(a.stdout(), "shared\n");
    assert_eq!(b.stdout(), "shared\n");
}
