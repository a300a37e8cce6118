//! Over SSH, through a real OpenSSH sshd: a deploy key, and the host key checked against the
//! project's `known_hosts` file.

use std::path::{Path, PathBuf};

use gantry_git::{Credentials, Error, redact_url};
use gantry_testkit::{FixtureRepo, Sshd};

use crate::{files, new_mirror, two_commit_repo};

fn ssh(key: PathBuf, known_hosts: &Path) -> Credentials {
    Credentials {
        username: None,
        token: None,
        ssh_key: Some(key),
        known_hosts: Some(known_hosts.to_owned()),
    }
}

/// Fetches `main` from `url` into a fresh mirror with `key` and `known_hosts`; the error it
/// fails with.
fn fetch_error(url: &str, key: PathBuf, known_hosts: &Path) -> Error {
    let (_dir, mirror) = new_mirror();
    mirror
        .fetch(url, &ssh(key, known_hosts), Some("refs/heads/main"), None)
        .unwrap_err()
}

/// A repository with two commits served by a fresh sshd, and a directory for known_hosts files.
fn setup() -> Option<(tempfile::TempDir, Sshd, String, String)> {
    let sshd = Sshd::start_or_skip()?;
    let root = tempfile::tempdir().unwrap();
    let (_repo, _first, second) = two_commit_repo(FixtureRepo::new_in(root.path(), "app.git"));
    let url = sshd.url(&root.path().join("app.git"));
    Some((root, sshd, url, second))
}

#[test]
fn a_deploy_key_and_a_known_host_fetch_and_check_out() {
    let Some((root, sshd, url, second)) = setup() else {
        return;
    };
    let known_hosts = root.path().join("known_hosts");
    // Another host's entry first: the file is searched, not only its first line.
    std::fs::write(
        &known_hosts,
        format!(
            "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n{}",
            sshd.known_hosts_line()
        ),
    )
    .unwrap();
    let (dir, mirror) = new_mirror();

    mirror
        .fetch(
            &url,
            &ssh(sshd.client_key(), &known_hosts),
            Some("refs/heads/main"),
            Some(&second),
        )
        .unwrap_or_else(|err| panic!("{err}\n{}", sshd.log()));

    let dest = dir.path().join("ws");
    mirror.checkout(&second, &dest).unwrap();
    assert_eq!(
        files(&dest)["src/main.rs"],
        "fn main() { println!(\"v2\"); }\n"
    );
    assert!(sshd.log().contains("Accepted publickey"), "{}", sshd.log());
}

#[test]
fn an_unknown_host_is_refused_before_any_key_is_offered() {
    let Some((root, sshd, url, _second)) = setup() else {
        return;
    };
    let known_hosts = root.path().join("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();

    let err = fetch_error(&url, sshd.client_key(), &known_hosts);

    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    let port = sshd.port();
    let file = known_hosts.display();
    // The user name goes as any user info does (it may be a token over https).
    let shown = redact_url(&url);
    assert_eq!(
        err.to_string(),
        format!(
            "authentication failed for {shown}: the SSH host key of [127.0.0.1]:{port} is not in \
             {file}: add it (`ssh-keyscan -p {port} 127.0.0.1 >> {file}`, after comparing its \
             fingerprint with the one the host publishes)"
        )
    );
    assert!(!sshd.log().contains("Accepted publickey"), "{}", sshd.log());
}

#[test]
fn a_changed_host_key_is_refused() {
    let Some((root, sshd, url, _second)) = setup() else {
        return;
    };
    // The entry of another sshd (another host key) under this one's address and port.
    let impostor = Sshd::start();
    let known_hosts = root.path().join("known_hosts");
    let line = impostor.known_hosts_line().replace(
        &format!(":{} ", impostor.port()),
        &format!(":{} ", sshd.port()),
    );
    std::fs::write(&known_hosts, line).unwrap();

    let err = fetch_error(&url, sshd.client_key(), &known_hosts);

    assert!(
        err.to_string().ends_with(&format!(
            "the SSH host key of [127.0.0.1]:{} does not match the one in {}: the host's key \
             changed, or someone is intercepting the connection; refusing to fetch",
            sshd.port(),
            known_hosts.display()
        )),
        "{err}"
    );
}

#[test]
fn a_key_the_server_does_not_accept_is_named() {
    let Some((root, sshd, url, _second)) = setup() else {
        return;
    };
    let known_hosts = root.path().join("known_hosts");
    std::fs::write(&known_hosts, sshd.known_hosts_line()).unwrap();

    let err = fetch_error(&url, sshd.other_key(), &known_hosts);

    assert_eq!(
        err.to_string(),
        format!(
            "authentication failed for {}: the server refused the SSH key \
             (check that it is a deploy key of the repository)",
            redact_url(&url)
        )
    );
}

#[test]
fn an_unreadable_known_hosts_file_is_named() {
    let Some((root, sshd, url, _second)) = setup() else {
        return;
    };
    let missing = root.path().join("no-such-known_hosts");

    let err = fetch_error(&url, sshd.client_key(), &missing);

    assert!(
        err.to_string().starts_with(&format!(
            "authentication failed for {}: could not read the known_hosts file {}",
            redact_url(&url),
            missing.display()
        )),
        "{err}"
    );
}
