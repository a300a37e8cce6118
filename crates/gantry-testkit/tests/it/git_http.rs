use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;

use gantry_testkit::git::git_command;
use gantry_testkit::{FixtureRepo, GitHttpServer};

fn clone(args: &[&str], url: &str, dest: &Path) -> std::process::Output {
    git_command()
        .arg("clone")
        .args(args)
        .arg(url)
        .arg(dest)
        .output()
        .unwrap()
}

#[test]
fn git_clones_over_smart_http() {
    let root = tempfile::tempdir().unwrap();
    let repo = FixtureRepo::new_in(root.path(), "public.git");
    repo.write("a.txt", "hello\n");
    repo.commit("One");
    repo.write("a.txt", "hello again\n");
    let tip = repo.commit("Two");
    let server = GitHttpServer::start(root.path(), None);
    let out = tempfile::tempdir().unwrap();

    for (args, dest) in [(&[][..], "full"), (&["--depth", "1"][..], "shallow")] {
        let dest = out.path().join(dest);
        let output = clone(args, &server.url("public.git"), &dest);
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            std::fs::read_to_string(dest.join("a.txt")).unwrap(),
            "hello again\n"
        );
        let head = FixtureRepo::new_in(out.path(), dest.file_name().unwrap().to_str().unwrap());
        assert_eq!(head.rev_parse("HEAD"), tip);
    }
    assert!(
        server.requests().iter().all(|r| r.status == 200),
        "{:?}",
        server.requests()
    );
}

#[test]
fn basic_auth() {
    let root = tempfile::tempdir().unwrap();
    let repo = FixtureRepo::new_in(root.path(), "private.git");
    repo.commit("One");
    let server = GitHttpServer::start(root.path(), Some(("ci", "tok3n")));
    let out = tempfile::tempdir().unwrap();

    let wrong = server
        .url("private.git")
        .replace("http://", "http://ci:wrong@");
    let output = clone(&[], &wrong, &out.path().join("wrong"));
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Authentication failed"),
        "{output:?}"
    );
    let last = server.requests().pop().unwrap();
    assert_eq!((last.status, last.user), (401, None));

    let right = server
        .url("private.git")
        .replace("http://", "http://ci:tok3n@");
    let output = clone(&[], &right, &out.path().join("right"));
    assert!(output.status.success(), "{output:?}");
    assert_eq!(server.requests().pop().unwrap().user.as_deref(), Some("ci"));
}

#[test]
fn answers_a_gzipped_upload_pack_request() {
    let root = tempfile::tempdir().unwrap();
    let repo = FixtureRepo::new_in(root.path(), "public.git");
    repo.write("a.txt", "a\n");
    let sha = repo.commit("One");
    let server = GitHttpServer::start(root.path(), None);

    let request = format!("0032want {sha}\n00000009done\n");
    let body = gzip(request.as_bytes());
    let addr = server.base_url().trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "POST /public.git/git-upload-pack HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/x-git-upload-pack-request\r\nContent-Encoding: gzip\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();

    let head = String::from_utf8_lossy(&response[..response.len().min(200)]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("content-type: application/x-git-upload-pack-result"),
        "{head}"
    );
    assert!(response.windows(4).any(|w| w == b"PACK"), "{head}");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut child = std::process::Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    output.stdout
}
