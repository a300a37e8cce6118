//! Times a first `Mirror::fetch` + `Mirror::checkout` of a small repository against
//! `git clone --depth 1` of the same, over `file://` and over smart HTTP.
//!
//! `cargo run --release -p gantry-git --example fetch_vs_clone [ROUNDS]`

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use gantry_git::{Credentials, Mirror};
use gantry_testkit::git::git_command;
use gantry_testkit::{FixtureRepo, GitHttpServer};

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(7, |n| n.parse().expect("ROUNDS is a number"));
    let root = tempfile::tempdir().unwrap();
    let repo = FixtureRepo::new_in(root.path(), "small.git");
    // 20 commits over 200 files of about 1 KiB.
    for commit in 0..20 {
        for file in 0..200 {
            if commit == 0 || file % 10 == commit % 10 {
                let line = format!("commit {commit} file {file}\n");
                repo.write(&format!("src/m{}/f{file}.txt", file % 10), line.repeat(40));
            }
        }
        repo.commit(&format!("Commit {commit}"));
    }
    let tip = repo.rev_parse("HEAD");
    let server = GitHttpServer::start(root.path(), None);

    println!("small repo: 200 files, 20 commits; median of {rounds} rounds");
    for (transport, url) in [
        ("file://", repo.file_url()),
        ("http", server.url("small.git")),
    ] {
        let gantry = median(rounds, || {
            let dir = tempfile::tempdir().unwrap();
            let start = Instant::now();
            let mirror = Mirror::open_or_init(&dir.path().join("mirror")).unwrap();
            let creds = Credentials::default();
            mirror
                .fetch(&url, &creds, Some("refs/heads/main"), Some(&tip))
                .unwrap();
            mirror.checkout(&tip, &dir.path().join("ws")).unwrap();
            start.elapsed()
        });
        let git = median(rounds, || {
            let dir = tempfile::tempdir().unwrap();
            let start = Instant::now();
            let status = git_command()
                .args(["clone", "--quiet", "--depth", "1", &url])
                .arg(dir.path().join("ws"))
                .status()
                .unwrap();
            assert!(status.success());
            start.elapsed()
        });
        println!(
            "{transport:8} gantry fetch+checkout {:>7.1} ms   git clone --depth 1 {:>7.1} ms   ratio {:.2}",
            ms(gantry),
            ms(git),
            gantry.as_secs_f64() / git.as_secs_f64()
        );
    }
}

fn median(rounds: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..rounds).map(|_| f()).collect();
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
