//! Over `file://`: libgit2's local transport.

use std::os::unix::fs::PermissionsExt as _;

use gantry_git::{CommitInfo, Credentials, Error, Mirror};
use gantry_testkit::FixtureRepo;

use crate::{expected, files, new_mirror, two_commit_repo};

const NONE: Credentials = Credentials {
    username: None,
    token: None,
    ssh_key: None,
    known_hosts: None,
};

#[test]
fn fetch_main_and_check_out_the_exact_commit() {
    let repo = FixtureRepo::new();
    repo.write(".gantry.yml", "stages: [test]\n")
        .write("src/lib.rs", "pub fn f() {}\n")
        .write("scripts/build.sh", "#!/bin/sh\necho hi\n");
    repo.git(["update-index", "--chmod=+x", "scripts/build.sh"]);
    let sha = repo.commit("Add the build\n\nLonger explanation.");
    let (dir, mirror) = new_mirror();

    mirror
        .fetch(&repo.file_url(), &NONE, Some("refs/heads/main"), Some(&sha))
        .unwrap();
    let dest = dir.path().join("runs/1/workspace");
    let info = mirror.checkout(&sha, &dest).unwrap();

    assert_eq!(
        info,
        CommitInfo {
            sha: sha.clone(),
            short_sha: sha[..7].to_owned(),
            message: "Add the build".to_owned(),
            author: "Ada Tester".to_owned(),
        }
    );
    assert_eq!(
        files(&dest),
        expected(&[
            (".gantry.yml", "stages: [test]\n"),
            ("scripts/build.sh", "#!/bin/sh\necho hi\n"),
            ("src/lib.rs", "pub fn f() {}\n"),
        ])
    );
    assert!(!dest.join(".git").exists(), "the workspace is a plain tree");
    let mode = std::fs::metadata(dest.join("scripts/build.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "executable bit kept: {mode:o}");
    assert!(
        !mirror.path().join("index").exists(),
        "checkout must not write the mirror's index"
    );
}

#[test]
fn later_fetches_are_incremental_and_reuse_the_mirror() {
    let (repo, first, second) = two_commit_repo(FixtureRepo::new());
    let (dir, mirror) = new_mirror();
    mirror
        .fetch(
            &repo.file_url(),
            &NONE,
            Some("refs/heads/main"),
            Some(&second),
        )
        .unwrap();
    let packs_before = pack_object_counts(&mirror);

    repo.write("README.md", "hello\n");
    let third = repo.commit("Third commit");
    // A mirror opened again, as the next run does.
    let mirror = Mirror::open_or_init(mirror.path()).unwrap();
    mirror
        .fetch(
            &repo.file_url(),
            &NONE,
            Some("refs/heads/main"),
            Some(&third),
        )
        .unwrap();

    let packs_after = pack_object_counts(&mirror);
    let new_objects: usize = packs_after
        .iter()
        .filter(|(name, _)| !packs_before.contains_key(*name))
        .map(|(_, count)| count)
        .sum();
    // The new commit, its root tree and README.md; nothing fetched before.
    assert_eq!(
        new_objects, 3,
        "before: {packs_before:?}, after: {packs_after:?}"
    );

    let dest = dir.path().join("ws3");
    mirror.checkout(&third, &dest).unwrap();
    assert_eq!(files(&dest)["README.md"], "hello\n");
    // Older commits stay available.
    assert_eq!(mirror.commit_info(&first).unwrap().message, "First commit");
}

/// Objects in each pack of the mirror, by pack file name.
fn pack_object_counts(mirror: &Mirror) -> std::collections::BTreeMap<String, usize> {
    let pack_dir = mirror.path().join("objects/pack");
    std::fs::read_dir(&pack_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "idx"))
        .map(|idx| {
            let output = gantry_testkit::git::git_command()
                .arg("show-index")
                .stdin(std::fs::File::open(&idx).unwrap())
                .output()
                .unwrap();
            assert!(output.status.success());
            let name = idx.file_name().unwrap().to_string_lossy().into_owned();
            (
                name,
                String::from_utf8(output.stdout).unwrap().lines().count(),
            )
        })
        .collect()
}

#[test]
fn fetches_a_commit_that_is_no_longer_the_tip() {
    let (repo, first, _second) = two_commit_repo(FixtureRepo::new());
    let (dir, mirror) = new_mirror();

    mirror
        .fetch(
            &repo.file_url(),
            &NONE,
            Some("refs/heads/main"),
            Some(&first),
        )
        .unwrap();

    let dest = dir.path().join("ws");
    mirror.checkout(&first, &dest).unwrap();
    assert_eq!(files(&dest)["src/main.rs"], "fn main() {}\n");
}

#[test]
fn a_commit_that_a_force_push_removed_is_not_found() {
    let (repo, _first, second) = two_commit_repo(FixtureRepo::new());
    repo.reset_hard("HEAD~1");
    let (_dir, mirror) = new_mirror();
    let url = repo.file_url();

    let err = mirror
        .fetch(&url, &NONE, Some("refs/heads/main"), Some(&second))
        .unwrap_err();

    // Unreachable from every ref, so no transport hands it out.
    assert_eq!(
        err.to_string(),
        format!("not found: commit {second} at {url}")
    );
}

#[test]
fn read_file_at_a_commit() {
    let (repo, first, second) = two_commit_repo(FixtureRepo::new());
    repo.remove(".gantry.yml");
    let third = repo.commit("Drop the pipeline");
    let (_dir, mirror) = new_mirror();
    mirror
        .fetch(&repo.file_url(), &NONE, Some("main"), Some(&third))
        .unwrap();

    let read = |sha: &str, path: &str| mirror.read_file(sha, path).unwrap();
    assert_eq!(
        read(&first, ".gantry.yml").as_deref(),
        Some("stages: [test]\n")
    );
    assert_eq!(
        read(&second, "src/main.rs").as_deref(),
        Some("fn main() { println!(\"v2\"); }\n")
    );
    assert_eq!(read(&third, ".gantry.yml"), None);
    assert_eq!(read(&first, "no/such/file"), None);
    // Abbreviated shas work for reading.
    assert_eq!(
        read(&first[..10], ".gantry.yml").as_deref(),
        Some("stages: [test]\n")
    );

    let err = mirror.read_file(&first, "src").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "read src at {}: src is a directory, not a file",
            &first[..7]
        )
    );
}

#[test]
fn tags_lightweight_and_annotated() {
    let (repo, first, second) = two_commit_repo(FixtureRepo::new());
    repo.git(["tag", "v1", &first]);
    let tag_object = repo.tag_annotated("v2", "Release 2");
    assert_ne!(tag_object, second, "an annotated tag has its own object");
    let (dir, mirror) = new_mirror();

    mirror
        .fetch(&repo.file_url(), &NONE, Some("refs/tags/v1"), Some(&first))
        .unwrap();
    assert_eq!(
        mirror.checkout(&first, &dir.path().join("v1")).unwrap().sha,
        first
    );

    // A push of an annotated tag reports the tag object's sha.
    mirror
        .fetch(
            &repo.file_url(),
            &NONE,
            Some("refs/tags/v2"),
            Some(&tag_object),
        )
        .unwrap();
    let info = mirror
        .checkout(&tag_object, &dir.path().join("v2"))
        .unwrap();
    assert_eq!(info.sha, second);
    assert_eq!(info.message, "Second commit");
}

#[test]
fn fetch_a_tag_without_a_sha() {
    let (repo, first, _) = two_commit_repo(FixtureRepo::new());
    repo.git(["tag", "v1", &first]);
    let (_dir, mirror) = new_mirror();

    mirror
        .fetch(&repo.file_url(), &NONE, Some("refs/tags/v1"), None)
        .unwrap();

    assert_eq!(mirror.commit_info(&first).unwrap().sha, first);
}

#[test]
fn resolve_returns_the_branch_tip() {
    let (repo, _first, second) = two_commit_repo(FixtureRepo::new());
    repo.checkout("main");
    repo.branch("feature");
    repo.checkout("feature");
    let feature = repo.commit("On feature");
    let (_dir, mirror) = new_mirror();

    assert_eq!(
        mirror.resolve(&repo.file_url(), &NONE, "main").unwrap(),
        second
    );
    assert_eq!(
        mirror
            .resolve(&repo.file_url(), &NONE, "refs/heads/feature")
            .unwrap(),
        feature
    );

    let err = mirror.resolve(&repo.file_url(), &NONE, "nope").unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("not found: refs/heads/nope at {}", repo.file_url())
    );
}

#[test]
fn a_deleted_branch_does_not_resolve_to_its_old_tip() {
    let (repo, _first, _second) = two_commit_repo(FixtureRepo::new());
    repo.branch("gone");
    let (_dir, mirror) = new_mirror();
    mirror.resolve(&repo.file_url(), &NONE, "gone").unwrap();

    repo.git(["branch", "-D", "gone"]);

    let err = mirror.resolve(&repo.file_url(), &NONE, "gone").unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}

#[test]
fn fetch_everything_without_ref_or_sha() {
    let (repo, _first, second) = two_commit_repo(FixtureRepo::new());
    repo.branch("other");
    let (_dir, mirror) = new_mirror();

    mirror.fetch(&repo.file_url(), &NONE, None, None).unwrap();

    assert_eq!(mirror.commit_info(&second).unwrap().sha, second);
}

#[test]
fn unknown_sha_is_not_found() {
    let (repo, _, _) = two_commit_repo(FixtureRepo::new());
    let (_dir, mirror) = new_mirror();
    let unknown = "0123456789abcdef0123456789abcdef01234567";

    let err = mirror
        .fetch(
            &repo.file_url(),
            &NONE,
            Some("refs/heads/main"),
            Some(unknown),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("not found: commit {unknown} at {}", repo.file_url())
    );

    let err = mirror.commit_info(unknown).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("not found: commit {unknown}"));
    assert!(matches!(
        mirror.read_file(unknown, ".gantry.yml"),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        mirror.checkout("not-a-sha", &_dir.path().join("ws")),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn a_missing_repository_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_mirror_dir, mirror) = new_mirror();
    let url = format!("file://{}/missing.git", dir.path().display());

    let err = mirror
        .fetch(&url, &NONE, Some("refs/heads/main"), None)
        .unwrap_err();

    let shown = err.to_string();
    assert!(shown.contains("missing.git"), "{shown}");
}

#[test]
fn checkout_refuses_a_non_empty_directory() {
    let (repo, first, _) = two_commit_repo(FixtureRepo::new());
    let (dir, mirror) = new_mirror();
    mirror
        .fetch(&repo.file_url(), &NONE, Some("main"), Some(&first))
        .unwrap();
    let dest = dir.path().join("ws");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(dest.join("leftover"), "x").unwrap();

    let err = mirror.checkout(&first, &dest).unwrap_err();

    assert_eq!(
        err.to_string(),
        format!(
            "check out {} into {}: the directory is not empty",
            &first[..7],
            dest.display()
        )
    );
}

#[test]
fn open_or_init_reopens_and_rejects_other_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.git");
    Mirror::open_or_init(&path).unwrap();
    Mirror::open_or_init(&path).unwrap();

    let other = dir.path().join("not-a-repo");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("file"), "x").unwrap();
    let err = Mirror::open_or_init(&other).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "open mirror {}: not a bare git repository",
            other.display()
        )),
        "{err}"
    );
}

#[test]
fn concurrent_fetches_into_one_mirror() {
    let (repo, first, second) = two_commit_repo(FixtureRepo::new());
    let (_dir, mirror) = new_mirror();
    let url = repo.file_url();

    std::thread::scope(|scope| {
        for sha in [&first, &second, &first, &second] {
            let (mirror, url) = (mirror.clone(), url.clone());
            scope.spawn(move || mirror.fetch(&url, &NONE, Some("main"), Some(sha)).unwrap());
        }
    });

    assert_eq!(mirror.commit_info(&first).unwrap().sha, first);
    assert_eq!(mirror.commit_info(&second).unwrap().sha, second);
}

#[test]
fn many_threads_creating_one_mirror_all_succeed() {
    let parent = tempfile::tempdir().unwrap();
    let path = parent.path().join("mirrors").join("demo__app.git");
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| gantry_git::Mirror::open_or_init(&path)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in results {
        assert!(r.is_ok(), "{:?}", r.err());
    }
    assert!(gantry_git::Mirror::open_or_init(&path).is_ok());
}
