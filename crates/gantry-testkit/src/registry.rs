//! A real container registry for tests: Debian's `docker-registry` (the CNCF distribution
//! registry) serving plain HTTP on 127.0.0.1, with HTTP Basic auth from an htpasswd file
//! (bcrypt, made by `htpasswd -B`) and its storage in a temporary directory.
//!
//! Docker treats every registry on 127.0.0.0/8 as insecure, so the engine pushes to it over
//! plain HTTP with no `insecure-registries` setting. The registry can be stopped and started
//! again on the same port and storage, for tests of a registry that goes away.
//!
//! `cargo xtask provision` installs `docker-registry` and `apache2-utils`. Without them,
//! [`Registry::start_or_skip`] skips the test with a note, except under `CI=true`, where a
//! missing registry is a failure.

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tempfile::TempDir;

use crate::{free_port, on_path};

const BINARY: &str = "docker-registry";
const STARTUP: Duration = Duration::from_secs(15);
const MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
const PROVISION: &str =
    "run `cargo xtask provision` (it installs docker-registry and apache2-utils)";

/// A running registry; stopped when dropped.
pub struct Registry {
    dir: TempDir,
    port: u16,
    users: Vec<(String, String)>,
    child: Option<Child>,
}

/// A manifest as the registry serves it.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The `Docker-Content-Digest` header: `sha256:…`.
    pub digest: String,
    pub media_type: String,
    pub body: String,
}

/// One line of the registry's access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRecord {
    pub method: String,
    pub path: String,
    pub status: u16,
}

impl Registry {
    /// Whether the registry can run here: `docker-registry` and `htpasswd` are installed.
    pub fn available() -> bool {
        [BINARY, "htpasswd"].iter().all(|program| on_path(program))
    }

    /// Starts a registry, or returns `None` with a note when it cannot run here and the test
    /// should be skipped. Under `CI=true` a missing registry fails the test instead.
    #[track_caller]
    pub fn start_or_skip(users: &[(&str, &str)]) -> Option<Registry> {
        if Registry::available() {
            return Some(Registry::start(users));
        }
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "CI=true and the test registry cannot run: {BINARY} or htpasswd is missing; {PROVISION}"
            );
        }
        eprintln!("note: skipping, {BINARY} or htpasswd is not installed; {PROVISION}");
        None
    }

    /// Starts a registry on a free port of 127.0.0.1. With `users`, every request needs HTTP
    /// Basic credentials of one of them; with none, anyone may push and pull.
    #[track_caller]
    pub fn start(users: &[(&str, &str)]) -> Registry {
        assert!(
            Registry::available(),
            "{BINARY} or htpasswd is not installed; {PROVISION}"
        );
        let dir = tempfile::tempdir().expect("create a temporary directory for the registry");
        let port = free_port();
        let users: Vec<(String, String)> = users
            .iter()
            .map(|(user, password)| ((*user).to_owned(), (*password).to_owned()))
            .collect();
        let mut htpasswd = String::new();
        for (user, password) in &users {
            let output = Command::new("htpasswd")
                .args(["-B", "-b", "-n", user, password])
                .output()
                .expect("run htpasswd");
            assert!(
                output.status.success(),
                "htpasswd failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            htpasswd.push_str(String::from_utf8_lossy(&output.stdout).trim_end());
            htpasswd.push('\n');
        }
        fs::write(dir.path().join("htpasswd"), htpasswd).expect("write the htpasswd file");
        fs::write(
            dir.path().join("config.yml"),
            config(dir.path(), port, !users.is_empty()),
        )
        .expect("write the registry configuration");
        let mut registry = Registry {
            dir,
            port,
            users,
            child: None,
        };
        registry.spawn();
        registry
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT/<name>`.
    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.address())
    }

    /// Stops the registry; its port refuses connections until [`Registry::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the registry again on the same port, with the same storage and users.
    #[track_caller]
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Fetches a manifest (`GET /v2/<repository>/manifests/<reference>`, asking for the Docker
    /// v2 schema) with the first user's credentials; `None` if the registry has no such
    /// manifest. `repository` is without the address, e.g. `pet/backend`.
    #[track_caller]
    pub fn manifest(&self, repository: &str, reference: &str) -> Option<Manifest> {
        let url = format!(
            "http://{}/v2/{repository}/manifests/{reference}",
            self.address()
        );
        let mut request = ureq::get(&url).header("Accept", MANIFEST_V2);
        if let Some((user, password)) = self.users.first() {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request = request.header("Authorization", &format!("Basic {token}"));
        }
        let mut response = request
            .config()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .call()
            .unwrap_or_else(|err| panic!("GET {url}: {err}"));
        let status = response.status().as_u16();
        if status == 404 {
            return None;
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let digest = header("Docker-Content-Digest");
        let media_type = header("Content-Type");
        let body = response
            .body_mut()
            .read_to_string()
            .unwrap_or_else(|err| panic!("GET {url}: reading the body: {err}"));
        assert_eq!(status, 200, "GET {url} answered {status}: {body}");
        Some(Manifest {
            digest,
            media_type,
            body,
        })
    }

    /// The registry's log so far: its own messages and the access log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The requests the registry answered so far, from its access log (Apache combined
    /// format), oldest first.
    pub fn requests(&self) -> Vec<AccessRecord> {
        self.log().lines().filter_map(parse_access_line).collect()
    }

    /// The user names of the requests whose credentials the registry refused, oldest first.
    pub fn refused_logins(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|line| {
                let (_, rest) = line.split_once("error authenticating user \\\"")?;
                let (user, _) = rest.split_once("\\\"")?;
                Some(user.to_owned())
            })
            .collect()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    #[track_caller]
    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the registry log");
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicate the registry log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("start {BINARY}: {err}; {PROVISION}"));
        self.child = Some(child);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let started = Instant::now();
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "{BINARY} exited with {status} before it listened on {addr}:\n{}",
                    self.log()
                );
            }
            assert!(
                started.elapsed() < STARTUP,
                "{BINARY} did not listen on {addr} within {STARTUP:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config(dir: &Path, port: u16, auth: bool) -> String {
    let mut config = format!(
        "version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
",
        root = dir.join("storage").display(),
    );
    if auth {
        config.push_str(&format!(
            "auth:
  htpasswd:
    realm: gantry-test
    path: {}
",
            dir.join("htpasswd").display()
        ));
    }
    config
}

/// `127.0.0.1 - - [10/May/2026:12:00:00 +0000] "GET /v2/ HTTP/1.1" 401 87 "" "docker/20.10"`
fn parse_access_line(line: &str) -> Option<AccessRecord> {
    let (_, rest) = line.split_once(" [")?;
    let (_, rest) = rest.split_once("] \"")?;
    let (request, rest) = rest.split_once("\" ")?;
    let mut request = request.split(' ');
    let method = request.next()?.to_owned();
    let path = request.next()?.to_owned();
    let status = rest.split(' ').next()?.parse().ok()?;
    Some(AccessRecord {
        method,
        path,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_lines() {
        let line = r#"127.0.0.1 - - [10/May/2026:12:00:00 +0000] "HEAD /v2/x/blobs/sha256:ab HTTP/1.1" 401 0 "" "docker/20.10.24""#;
        assert_eq!(
            parse_access_line(line),
            Some(AccessRecord {
                method: "HEAD".into(),
                path: "/v2/x/blobs/sha256:ab".into(),
                status: 401,
            })
        );
        assert_eq!(
            parse_access_line("time=\"…\" level=info msg=\"listening\""),
            None
        );
    }

    #[test]
    fn serves_authenticates_stops_and_restarts() {
        let Some(mut registry) = Registry::start_or_skip(&[("ci", "s3cret")]) else {
            return;
        };
        assert!(registry.manifest("pet/none", "latest").is_none());
        let address = registry.address();
        let status = |auth: Option<&str>| {
            let url = format!("http://{address}/v2/");
            let mut request = ureq::get(&url);
            if let Some(auth) = auth {
                let token = base64::engine::general_purpose::STANDARD.encode(auth);
                request = request.header("Authorization", &format!("Basic {token}"));
            }
            match request.call() {
                Ok(response) => response.status().as_u16(),
                Err(ureq::Error::StatusCode(code)) => code,
                Err(err) => panic!("GET {url}: {err}"),
            }
        };
        assert_eq!(status(Some("ci:s3cret")), 200);
        assert_eq!(status(Some("ci:wrong")), 401);
        registry.stop();
        assert!(TcpStream::connect(&address).is_err());
        registry.restart();
        assert_eq!(status(Some("ci:s3cret")), 200);
        let requests = registry.requests();
        let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [404, 200, 401, 200], "{requests:?}");
        assert_eq!(registry.refused_logins(), ["ci"]);
    }
}
