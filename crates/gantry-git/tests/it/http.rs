//! Over smart HTTP, through `git http-backend`.

use gantry_git::{Credentials, Error};
use gantry_testkit::{FixtureRepo, GitHttpServer};

use crate::{files, new_mirror, two_commit_repo};

const TOKEN: &str = "ghp_s3cretTok3n";

fn token(token: &str) -> Credentials {
    Credentials {
        username: Some("ci".into()),
        token: Some(token.into()),
        ssh_key: None,
        known_hosts: None,
    }
}

#[test]
fn public_repo_is_fetched_shallowly() {
    let root = tempfile::tempdir().unwrap();
    let (_repo, _first, second) = two_commit_repo(FixtureRepo::new_in(root.path(), "public.git"));
    let server = GitHttpServer::start(root.path(), None);
    let (dir, mirror) = new_mirror();

    mirror
        .fetch(
            &server.url("public.git"),
            &Credentials::default(),
            Some("refs/heads/main"),
            Some(&second),
        )
        .unwrap();

    let dest = dir.path().join("ws");
    mirror.checkout(&second, &dest).unwrap();
    assert_eq!(
        files(&dest)["src/main.rs"],
        "fn main() { println!(\"v2\"); }\n"
    );
    let shallow = std::fs::read_to_string(mirror.path().join("shallow")).unwrap();
    assert_eq!(shallow.trim(), second, "only the tip was fetched");
}

#[test]
fn commit_behind_the_tip_falls_back_to_a_full_fetch() {
    let root = tempfile::tempdir().unwrap();
    let (_repo, first, second) = two_commit_repo(FixtureRepo::new_in(root.path(), "public.git"));
    let server = GitHttpServer::start(root.path(), None);
    let (_dir, mirror) = new_mirror();
    let url = server.url("public.git");
    let none = Credentials::default();

    // The tip first, as an earlier run would have: the mirror is shallow.
    mirror
        .fetch(&url, &none, Some("main"), Some(&second))
        .unwrap();
    // git http-backend refuses wants of unadvertised commits by default.
    mirror
        .fetch(&url, &none, Some("main"), Some(&first))
        .unwrap();

    assert_eq!(
        mirror.read_file(&first, "src/main.rs").unwrap().as_deref(),
        Some("fn main() {}\n")
    );
    assert!(
        !mirror.path().join("shallow").exists(),
        "the full fetch unshallowed the mirror"
    );
}

#[test]
fn commit_behind_the_tip_is_fetched_by_id_when_the_server_allows() {
    let root = tempfile::tempdir().unwrap();
    let (repo, first, _second) = two_commit_repo(FixtureRepo::new_in(root.path(), "public.git"));
    // As GitHub does.
    repo.git(["config", "uploadpack.allowReachableSHA1InWant", "true"]);
    let server = GitHttpServer::start(root.path(), None);
    let (_dir, mirror) = new_mirror();

    mirror
        .fetch(
            &server.url("public.git"),
            &Credentials::default(),
            Some("main"),
            Some(&first),
        )
        .unwrap();

    assert_eq!(mirror.commit_info(&first).unwrap().message, "First commit");
    let shallow = std::fs::read_to_string(mirror.path().join("shallow")).unwrap();
    assert!(
        shallow.contains(&first),
        "fetched by id with depth 1: {shallow}"
    );
}

#[test]
fn private_repo_with_the_right_token() {
    let root = tempfile::tempdir().unwrap();
    let (_repo, _first, second) = two_commit_repo(FixtureRepo::new_in(root.path(), "private.git"));
    let server = GitHttpServer::start(root.path(), Some(("ci", TOKEN)));
    let (dir, mirror) = new_mirror();
    let url = server.url("private.git");

    assert_eq!(mirror.resolve(&url, &token(TOKEN), "main").unwrap(), second);
    mirror.checkout(&second, &dir.path().join("ws")).unwrap();

    let requests = server.requests();
    assert!(
        requests.iter().any(|r| r.user.as_deref() == Some("ci")),
        "{requests:?}"
    );
    assert!(
        requests.iter().all(|r| !r.target.contains(TOKEN)),
        "the token never goes in the URL: {requests:?}"
    );
}

#[test]
fn default_user_name_is_x_access_token() {
    let root = tempfile::tempdir().unwrap();
    let (_repo, _first, second) = two_commit_repo(FixtureRepo::new_in(root.path(), "private.git"));
    let server = GitHttpServer::start(root.path(), Some(("x-access-token", TOKEN)));
    let (_dir, mirror) = new_mirror();
    let creds = Credentials {
        token: Some(TOKEN.into()),
        ..Credentials::default()
    };

    assert_eq!(
        mirror
            .resolve(&server.url("private.git"), &creds, "main")
            .unwrap(),
        second
    );
}

#[test]
fn wrong_token_is_an_auth_error_without_the_token() {
    let root = tempfile::tempdir().unwrap();
    two_commit_repo(FixtureRepo::new_in(root.path(), "private.git"));
    let server = GitHttpServer::start(root.path(), Some(("ci", TOKEN)));
    let (_dir, mirror) = new_mirror();
    let url = server.url("private.git");
    let wrong = "ghp_wr0ngTok3n";

    let err = mirror
        .fetch(&url, &token(wrong), Some("refs/heads/main"), None)
        .unwrap_err();

    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "authentication failed for {url}: the server refused the token \
             (check that it is valid, not expired, and can read the repository)"
        )
    );
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(!shown.contains(wrong) && !shown.contains(TOKEN), "{shown}");
    }
    // The callback gives up instead of letting libgit2 retry the refused token.
    let refused = server.requests().iter().filter(|r| r.status == 401).count();
    assert!(refused <= 2, "{:?}", server.requests());
}

#[test]
fn private_repo_without_credentials() {
    let root = tempfile::tempdir().unwrap();
    two_commit_repo(FixtureRepo::new_in(root.path(), "private.git"));
    let server = GitHttpServer::start(root.path(), Some(("ci", TOKEN)));
    let (_dir, mirror) = new_mirror();
    let url = server.url("private.git");

    let err = mirror
        .fetch(&url, &Credentials::default(), Some("refs/heads/main"), None)
        .unwrap_err();

    assert_eq!(
        err.to_string(),
        format!(
            "authentication failed for {url}: \
             the server requires credentials and none are configured for this repository"
        )
    );
}

#[test]
fn credentials_in_the_url_are_redacted() {
    let root = tempfile::tempdir().unwrap();
    two_commit_repo(FixtureRepo::new_in(root.path(), "private.git"));
    let server = GitHttpServer::start(root.path(), Some(("ci", TOKEN)));
    let (_dir, mirror) = new_mirror();
    let url = server
        .url("private.git")
        .replace("http://", "http://ci:ghp_inTheUrl@");

    let err = mirror
        .fetch(&url, &Credentials::default(), Some("refs/heads/main"), None)
        .unwrap_err();

    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(!shown.contains("ghp_inTheUrl"), "{shown}");
        assert!(shown.contains("http://***@127.0.0.1"), "{shown}");
    }
}

#[test]
fn unknown_repository_is_not_found() {
    let root = tempfile::tempdir().unwrap();
    let server = GitHttpServer::start(root.path(), None);
    let (_dir, mirror) = new_mirror();
    let url = server.url("nope.git");

    let err = mirror
        .fetch(&url, &Credentials::default(), Some("refs/heads/main"), None)
        .unwrap_err();

    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("not found: repository {url} (or the credentials cannot see it)")
    );
}

#[test]
fn unknown_sha_is_not_found() {
    let root = tempfile::tempdir().unwrap();
    let (repo, _first, second) = two_commit_repo(FixtureRepo::new_in(root.path(), "public.git"));
    // Rewritten history: the old tip is unreachable, so no server hands it out.
    repo.reset_hard("HEAD~1");
    let server = GitHttpServer::start(root.path(), None);
    let (_dir, mirror) = new_mirror();
    let url = server.url("public.git");

    let err = mirror
        .fetch(
            &url,
            &Credentials::default(),
            Some("refs/heads/main"),
            Some(&second),
        )
        .unwrap_err();

    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("not found: commit {second} at {url}")
    );
}

#[test]
fn unreachable_server_is_a_clear_error() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_dir, mirror) = new_mirror();
    let url = format!("http://127.0.0.1:{port}/repo.git");

    let err = mirror
        .fetch(&url, &token(TOKEN), Some("refs/heads/main"), None)
        .unwrap_err();

    assert!(matches!(err, Error::Git { .. }), "{err:?}");
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!(
            "fetch refs/heads/main from {url}: failed to connect"
        )),
        "{shown}"
    );
    assert!(!shown.contains(TOKEN));
}
