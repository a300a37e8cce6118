//! A real SSH server for tests: Debian's OpenSSH `sshd` on a free port of 127.0.0.1, with its
//! own host key, accepting one client key for the current user, whose login shell then runs
//! `git-upload-pack` as for any SSH clone. Its files live in a temporary directory.
//!
//! `cargo xtask provision` installs `openssh-server`. Without it, [`Sshd::start_or_skip`] skips
//! the test with a note, except under `CI=true`, where a missing sshd is a failure.

use std::fs;
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{free_port, on_path};

const SSHD: &str = "/usr/sbin/sshd";
const STARTUP: Duration = Duration::from_secs(15);
const PROVISION: &str = "run `cargo xtask provision` (it installs openssh-server)";

/// A running sshd; stopped when dropped.
pub struct Sshd {
    dir: TempDir,
    port: u16,
    user: String,
    child: Child,
}

impl Sshd {
    /// Whether sshd can run here: it and `ssh-keygen` are installed.
    pub fn available() -> bool {
        Path::new(SSHD).is_file() && on_path("ssh-keygen")
    }

    /// Starts sshd, or returns `None` with a note when it cannot run here and the test should
    /// be skipped. Under `CI=true` a missing sshd fails the test instead.
    #[track_caller]
    pub fn start_or_skip() -> Option<Sshd> {
        if Sshd::available() {
            return Some(Sshd::start());
        }
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "CI=true and the test SSH server cannot run: {SSHD} or ssh-keygen is missing; {PROVISION}"
            );
        }
        eprintln!("note: skipping, {SSHD} or ssh-keygen is not installed; {PROVISION}");
        None
    }

    /// Starts sshd with a fresh host key, and a fresh client key ([`Sshd::client_key`]) that it
    /// accepts for the current user.
    #[track_caller]
    pub fn start() -> Sshd {
        assert!(
            Sshd::available(),
            "{SSHD} or ssh-keygen is not installed; {PROVISION}"
        );
        let dir = tempfile::tempdir().expect("create a temporary directory for sshd");
        let path = dir.path();
        keygen(&path.join("host_key"));
        keygen(&path.join("client_key"));
        fs::copy(path.join("client_key.pub"), path.join("authorized_keys"))
            .expect("authorize the client key");
        // sshd insists on its privilege separation directory when it runs as root.
        let _ = fs::create_dir_all("/run/sshd");
        let port = free_port();
        let user = current_user();
        fs::write(
            path.join("sshd_config"),
            format!(
                "Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 HostKey {host_key}\n\
                 PidFile {pid}\n\
                 AuthorizedKeysFile {authorized}\n\
                 AllowUsers {user}\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\n\
                 LogLevel VERBOSE\n",
                host_key = path.join("host_key").display(),
                pid = path.join("sshd.pid").display(),
                authorized = path.join("authorized_keys").display(),
            ),
        )
        .expect("write sshd_config");
        let log = fs::File::create(path.join("sshd.log")).expect("create sshd.log");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(path.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let mut sshd = Sshd {
            dir,
            port,
            user,
            child,
        };
        sshd.wait_until_listening();
        sshd
    }

    fn wait_until_listening(&mut self) {
        let started = Instant::now();
        loop {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sshd exited ({status}) before it listened:\n{}", self.log());
            }
            assert!(
                started.elapsed() < STARTUP,
                "sshd did not listen on 127.0.0.1:{} within {STARTUP:?}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ssh://USER@127.0.0.1:PORT/ABSOLUTE/PATH`, the clone URL of the repository at `path`.
    pub fn url(&self, path: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            path.display()
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The private key sshd accepts (OpenSSH format, no passphrase).
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// Makes a key pair that sshd does not accept, in its directory; returns the private key.
    pub fn other_key(&self) -> PathBuf {
        let key = self.dir.path().join("other_key");
        keygen(&key);
        key
    }

    /// A `known_hosts` line for this server's host key: `[127.0.0.1]:PORT TYPE BASE64`.
    pub fn known_hosts_line(&self) -> String {
        let public = fs::read_to_string(self.dir.path().join("host_key.pub"))
            .expect("read the host's public key");
        let mut fields = public.split_whitespace();
        let (kind, key) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        format!("[127.0.0.1]:{} {kind} {key}\n", self.port)
    }

    /// What sshd logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An ECDSA P-256 key pair at `path` and `path.pub`: a key type libssh2 reads in every version.
fn keygen(path: &Path) {
    let output = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ecdsa",
            "-b",
            "256",
            "-N",
            "",
            "-C",
            "gantry-test",
            "-f",
        ])
        .arg(path)
        .output()
        .expect("run ssh-keygen");
    assert!(
        output.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn current_user() -> String {
    let output = Command::new("id").arg("-un").output().expect("run id -un");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
