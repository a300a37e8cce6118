//! The SSH host key check of a project with its own `known_hosts` file.
//!
//! libgit2 checks SSH host keys against `~/.ssh/known_hosts` only, which a server in a
//! container or under a service account seldom has (and `/etc/ssh/ssh_known_hosts` it does not
//! read). With [`Credentials::known_hosts`](crate::Credentials::known_hosts) set, this check
//! replaces libgit2's: the key the server showed must be in that file (OpenSSH format, hashed
//! host names and `[host]:port` entries included) for the host and port of the clone URL, as
//! `ssh -o StrictHostKeyChecking=yes` would require. libssh2, which libgit2 links already,
//! reads the file and does the matching.

use std::path::Path;

use git2::CertificateCheckStatus;
use git2::cert::Cert;
use ssh2::{CheckResult, KnownHostFileKind};

/// State of libgit2's certificate callback during one fetch: why the check failed, if it did.
pub(crate) struct HostKeyCheck<'a> {
    known_hosts: &'a Path,
    port: u16,
    pub(crate) problem: Option<String>,
}

impl<'a> HostKeyCheck<'a> {
    pub(crate) fn new(known_hosts: &'a Path, url: &str) -> Self {
        HostKeyCheck {
            known_hosts,
            port: ssh_port(url),
            problem: None,
        }
    }

    pub(crate) fn call(
        &mut self,
        cert: &Cert<'_>,
        host: &str,
    ) -> Result<CertificateCheckStatus, git2::Error> {
        // A TLS certificate (an https URL): libgit2's own checks against the system's CAs.
        let Some(hostkey) = cert.as_hostkey() else {
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let file = self.known_hosts.display();
        let shown = match self.port {
            22 => host.to_owned(),
            port => format!("[{host}]:{port}"),
        };
        let Some(key) = hostkey.hostkey() else {
            return Err(self.fail(format!(
                "the SSH host key of {shown} could not be checked against {file}: libssh2 did not hand it over"
            )));
        };
        let checked = ssh2::Session::new()
            .and_then(|session| session.known_hosts())
            .and_then(|mut known| {
                known.read_file(self.known_hosts, KnownHostFileKind::OpenSSH)?;
                Ok(known.check_port(host, self.port, key))
            });
        match checked {
            Ok(CheckResult::Match) => Ok(CertificateCheckStatus::CertificateOk),
            Ok(CheckResult::NotFound) => {
                let keyscan = match self.port {
                    22 => format!("ssh-keyscan {host}"),
                    port => format!("ssh-keyscan -p {port} {host}"),
                };
                Err(self.fail(format!(
                    "the SSH host key of {shown} is not in {file}: add it (`{keyscan} >> {file}`, \
                     after comparing its fingerprint with the one the host publishes)"
                )))
            }
            Ok(CheckResult::Mismatch) => Err(self.fail(format!(
                "the SSH host key of {shown} does not match the one in {file}: the host's key \
                 changed, or someone is intercepting the connection; refusing to fetch"
            ))),
            Ok(CheckResult::Failure) => Err(self.fail(format!(
                "the SSH host key of {shown} could not be checked against {file}"
            ))),
            Err(err) => Err(self.fail(format!(
                "could not read the known_hosts file {file}: {}",
                err.message()
            ))),
        }
    }

    fn fail(&mut self, message: String) -> git2::Error {
        let error = git2::Error::new(
            git2::ErrorCode::Certificate,
            git2::ErrorClass::Ssh,
            message.as_str(),
        );
        self.problem = Some(message);
        error
    }
}

/// The port of an `ssh://` URL, else 22 (scp-like `git@host:path` URLs have none).
fn ssh_port(url: &str) -> u16 {
    url::Url::parse(url)
        .ok()
        .and_then(|url| url.port())
        .unwrap_or(22)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_of_ssh_urls() {
        assert_eq!(ssh_port("ssh://git@127.0.0.1:2222/srv/app.git"), 2222);
        assert_eq!(ssh_port("ssh://git@github.com/demo/app.git"), 22);
        assert_eq!(ssh_port("git@github.com:demo/app.git"), 22);
        assert_eq!(ssh_port("ssh://[::1]:2200/app.git"), 2200);
    }
}
