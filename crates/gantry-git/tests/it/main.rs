//! Integration tests of gantry-git against real repositories: over `file://`, and over smart HTTP
//! through `git http-backend`, and over SSH through sshd.

// Test helpers outside `#[test]` functions are not covered by `allow-unwrap-in-tests`.
#![allow(clippy::unwrap_used)]

mod file;
mod http;
mod ssh;

use std::collections::BTreeMap;
use std::path::Path;

use gantry_git::Mirror;
use gantry_testkit::FixtureRepo;
use tempfile::TempDir;

/// A mirror in a fresh temporary directory.
fn new_mirror() -> (TempDir, Mirror) {
    let dir = tempfile::tempdir().unwrap();
    let mirror = Mirror::open_or_init(&dir.path().join("mirrors/project.git")).unwrap();
    (dir, mirror)
}

/// Every file under `dir` (but `.git`) with its contents, keyed by relative path.
fn files(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|name| name == ".git") {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let relative = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(relative, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// `[(path, contents)]` as a map, for comparing with [`files`].
fn expected(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(path, contents)| (path.to_string(), contents.to_string()))
        .collect()
}

/// A repository with two commits on `main`; returns it and both shas, oldest first.
fn two_commit_repo(repo: FixtureRepo) -> (FixtureRepo, String, String) {
    repo.write(".gantry.yml", "stages: [test]\n")
        .write("src/main.rs", "fn main() {}\n");
    let first = repo.commit("First commit\n\nWith a body.");
    repo.write("src/main.rs", "fn main() { println!(\"v2\"); }\n");
    let second = repo.commit("Second commit");
    (repo, first, second)
}
