//! Pushing images to registries, with retries for what is worth retrying.
//!
//! The engine does the talking to the registry (`POST /images/{name}/push` with the
//! credentials in `X-Registry-Auth`), so its view of the registry is what counts: its
//! `insecure-registries`, its proxy, its DNS. A push is tried at most [`PUSH_ATTEMPTS`] times:
//! again only when the registry seemed unreachable or overloaded (connection refused or reset,
//! timeouts, 5xx), each retry announced in the log (`push attempt 2 of 3 after: …`), after a
//! pause that doubles. Refused credentials and a registry that speaks plain HTTP where the
//! engine expects HTTPS are not retried: they need a person, and the error says what to change.
//!
//! The password goes nowhere but the request header: [`RegistryAuth`]'s `Debug` hides it, and
//! every message and log line of a push is scrubbed of it, in case a registry echoes it.

use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::query_parameters::PushImageOptionsBuilder;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::build::split_reference;
use crate::image::send_line;
use crate::{Docker, Error, Output, Result, cancellable, cause_of};

/// How many times a push is tried in all.
pub const PUSH_ATTEMPTS: u32 = 3;
/// The pause before the second attempt; it doubles for each further one.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Credentials for one registry, by the name the configuration gives it.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    pub name: String,
    /// `host[:port]`, e.g. `ghcr.io` or `nexus.example.com:8083`.
    pub address: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// What a failed attempt means for the next one.
enum Failure {
    /// Worth another try.
    Transient(String),
    /// Final.
    Fatal(Error),
}

impl Docker {
    /// Pushes `reference` (`repository:tag`, already built or tagged locally) and returns the
    /// digest the registry stored it under, as `repository@sha256:…`. Progress goes to `output`
    /// as stderr lines; callers must drain it concurrently.
    pub async fn push_image(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
        output: mpsc::Sender<Output>,
        cancel: CancellationToken,
    ) -> Result<String> {
        let scrub = |text: &str| scrub(text, auth);
        let (repository, tag) = split_reference(reference);
        if reference.contains('@') {
            return Err(Error::Push {
                reference: reference.to_owned(),
                attempts: 1,
                message: "a push needs a tag, not a digest".into(),
            });
        }
        send_line(&output, format!("Pushing '{reference}'")).await;
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let pushing = self.push_once(repository, tag, auth, &output);
            let Some(result) = cancellable(&cancel, pushing).await else {
                return Err(Error::Cancelled {
                    what: format!("the push of '{reference}'"),
                });
            };
            let failure = match result {
                Ok(Some(digest)) => return Ok(format!("{repository}@{digest}")),
                Ok(None) => match self.pushed_digest(reference, repository).await {
                    Ok(digest) => return Ok(digest),
                    Err(err) => Failure::Fatal(err),
                },
                Err(failure) => failure,
            };
            let message = match failure {
                Failure::Fatal(err) => return Err(err),
                Failure::Transient(message) => scrub(&message),
            };
            if attempt >= PUSH_ATTEMPTS {
                return Err(Error::Push {
                    reference: reference.to_owned(),
                    attempts: attempt,
                    message,
                });
            }
            tracing::info!(reference, attempt, error = %message, "push failed; retrying");
            send_line(
                &output,
                format!(
                    "push attempt {} of {PUSH_ATTEMPTS} after: {message}",
                    attempt + 1
                ),
            )
            .await;
            if cancellable(&cancel, tokio::time::sleep(backoff))
                .await
                .is_none()
            {
                return Err(Error::Cancelled {
                    what: format!("the push of '{reference}'"),
                });
            }
            backoff *= 2;
            attempt += 1;
        }
    }

    /// One push; `Ok(None)` if it succeeded without naming the digest.
    async fn push_once(
        &self,
        repository: &str,
        tag: &str,
        auth: Option<&RegistryAuth>,
        output: &mpsc::Sender<Output>,
    ) -> Result<Option<String>, Failure> {
        let credentials = auth.map(|auth| DockerCredentials {
            username: Some(auth.username.clone()),
            password: Some(auth.password.clone()),
            serveraddress: Some(auth.address.clone()),
            ..Default::default()
        });
        let options = PushImageOptionsBuilder::new().tag(tag).build();
        let mut events = self
            .client
            .push_image(repository, Some(options), credentials);
        let mut digest = None;
        let (mut uploaded, mut present) = (0, 0);
        while let Some(event) = events.next().await {
            let event = event.map_err(|err| self.push_failure(repository, tag, auth, err))?;
            let Some(status) = event.status else { continue };
            // The engine reports every layer's progress without saying which layer it is;
            // the log gets a count instead.
            match status.as_str() {
                "Pushed" => uploaded += 1,
                "Layer already exists" => present += 1,
                _ if status.starts_with("Mounted from ") => present += 1,
                "Preparing" | "Waiting" | "Pushing" => {}
                _ if event.progress_detail.is_some_and(|d| d.total.is_some()) => {}
                _ => {
                    if let Some(found) = digest_in_status(&status) {
                        send_line(
                            output,
                            format!(
                                "Layers: {uploaded} uploaded, {present} already in the registry"
                            ),
                        )
                        .await;
                        digest = Some(found.to_owned());
                    }
                    send_line(output, scrub(&status, auth)).await;
                }
            }
        }
        Ok(digest)
    }

    /// The digest of a pushed reference from the engine's record of it.
    async fn pushed_digest(&self, reference: &str, repository: &str) -> Result<String> {
        let image = self
            .client
            .inspect_image(reference)
            .await
            .map_err(|err| self.error(format_args!("could not inspect '{reference}'"), err))?;
        image
            .repo_digests
            .unwrap_or_default()
            .into_iter()
            .find(|digest| {
                digest
                    .split_once('@')
                    .is_some_and(|(repo, _)| repo == repository)
            })
            .ok_or_else(|| Error::Push {
                reference: reference.to_owned(),
                attempts: 1,
                message: "the engine reported no digest for the pushed image".into(),
            })
    }

    fn push_failure(
        &self,
        repository: &str,
        tag: &str,
        auth: Option<&RegistryAuth>,
        err: bollard::errors::Error,
    ) -> Failure {
        use bollard::errors::Error as E;
        let reference = format!("{repository}:{tag}");
        let message = scrub(&cause_of(&err), auth);
        match &err {
            E::DockerStreamError { .. } | E::DockerResponseServerError { .. } => {}
            // Losing the engine is no registry trouble to retry.
            _ => {
                return Failure::Fatal(match self.error("", err) {
                    unreachable @ Error::Unreachable { .. } => unreachable,
                    _ => Error::Push {
                        reference,
                        attempts: 1,
                        message,
                    },
                });
            }
        }
        match classify(&message) {
            Kind::Auth => Failure::Fatal(Error::RegistryAuth {
                registry: auth.map(|auth| auth.name.clone()),
                address: auth.map_or_else(
                    || registry_of(repository).to_owned(),
                    |auth| auth.address.clone(),
                ),
                user: auth.map(|auth| auth.username.clone()),
                message,
            }),
            Kind::PlainHttp => Failure::Fatal(Error::Push {
                reference,
                attempts: 1,
                message: plain_http_hint(&message, registry_of(repository)),
            }),
            Kind::Transient => Failure::Transient(message),
            Kind::Other => Failure::Fatal(Error::Push {
                reference,
                attempts: 1,
                message,
            }),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Auth,
    PlainHttp,
    Transient,
    Other,
}

/// Sorts the engine's description of a failed push.
fn classify(message: &str) -> Kind {
    let message = message.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|needle| message.contains(needle));
    if any(&["server gave http response to https client"]) {
        Kind::PlainHttp
    } else if any(&[
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "denied",
        "forbidden",
        "incorrect username or password",
        "status: 401",
        "status: 403",
    ]) {
        Kind::Auth
    } else if any(&[
        "connection refused",
        "connection reset",
        "broken pipe",
        "timeout",
        "timed out",
        "eof",
        "no route to host",
        "temporarily unavailable",
        "status: 5",
        "status code 5",
        "internal server error",
        "bad gateway",
        "service unavailable",
        "gateway timeout",
        "too many requests",
        "status: 429",
    ]) {
        Kind::Transient
    } else {
        Kind::Other
    }
}

/// What to do about a registry that answers HTTPS with plain HTTP.
fn plain_http_hint(message: &str, address: &str) -> String {
    format!(
        "{message}; the registry at {address} speaks plain HTTP, which the Docker daemon refuses \
         unless told otherwise: add \"{address}\" to \"insecure-registries\" in \
         /etc/docker/daemon.json and restart the daemon (or give the registry TLS)"
    )
}

/// The registry part of a repository (`docker.io` when it names none), as Docker reads it:
/// the first component, if it has a `.` or a `:` or is `localhost`.
fn registry_of(repository: &str) -> &str {
    match repository.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// The digest in the engine's closing status line, `<tag>: digest: sha256:… size: 735`.
fn digest_in_status(status: &str) -> Option<&str> {
    let (_, rest) = status.split_once(": digest: ")?;
    let digest = rest.split_whitespace().next()?;
    digest.starts_with("sha256:").then_some(digest)
}

/// Replaces the password, should anything echo it.
fn scrub(text: &str, auth: Option<&RegistryAuth>) -> String {
    match auth {
        Some(auth) if !auth.password.is_empty() => text.replace(&auth.password, "***"),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified() {
        for (message, kind) in [
            ("unauthorized: authentication required", Kind::Auth),
            ("no basic auth credentials", Kind::Auth),
            (
                "denied: requested access to the resource is denied",
                Kind::Auth,
            ),
            (
                "Get \"http://127.0.0.1:5124/v2/\": dial tcp 127.0.0.1:5124: connect: connection refused",
                Kind::Transient,
            ),
            (
                "received unexpected HTTP status: 503 Service Unavailable",
                Kind::Transient,
            ),
            (
                "read tcp 1.2.3.4:1->5.6.7.8:443: read: connection reset by peer",
                Kind::Transient,
            ),
            ("net/http: TLS handshake timeout", Kind::Transient),
            (
                "Get \"https://10.1.2.3:5000/v2/\": http: server gave HTTP response to HTTPS client",
                Kind::PlainHttp,
            ),
            (
                "An image does not exist locally with the tag: 127.0.0.1:5000/x",
                Kind::Other,
            ),
        ] {
            assert_eq!(classify(message), kind, "{message}");
        }
    }

    #[test]
    fn digests_and_registries() {
        assert_eq!(
            digest_in_status("1: digest: sha256:7723 size: 735"),
            Some("sha256:7723")
        );
        assert_eq!(digest_in_status("Pushed"), None);
        assert_eq!(registry_of("127.0.0.1:5000/pet/app"), "127.0.0.1:5000");
        assert_eq!(registry_of("ghcr.io/acme/app"), "ghcr.io");
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(registry_of("acme/app"), "docker.io");
        assert_eq!(registry_of("app"), "docker.io");
    }

    #[test]
    fn error_messages() {
        let messages = [
            Error::Build {
                step: Some("3/5 'RUN pytest'".into()),
                message: "The command '/bin/sh -c pytest' returned a non-zero code: 1".into(),
            },
            Error::Build {
                step: None,
                message: "dockerfile parse error line 2: unknown instruction: FROBNICATE".into(),
            },
            Error::RegistryAuth {
                registry: Some("nexus".into()),
                address: "127.0.0.1:5000".into(),
                user: Some("ci".into()),
                message: "unauthorized: authentication required".into(),
            },
            Error::RegistryAuth {
                registry: None,
                address: "127.0.0.1:5000".into(),
                user: None,
                message: "no basic auth credentials".into(),
            },
            Error::Push {
                reference: "127.0.0.1:5000/pet/backend:1.0".into(),
                attempts: 3,
                message: "Get \"http://127.0.0.1:5000/v2/\": dial tcp 127.0.0.1:5000: connect: \
                          connection refused"
                    .into(),
            },
            Error::Push {
                reference: "10.0.0.5:5000/pet/backend:1.0".into(),
                attempts: 1,
                message: plain_http_hint(
                    "Get \"https://10.0.0.5:5000/v2/\": http: server gave HTTP response to \
                     HTTPS client",
                    "10.0.0.5:5000",
                ),
            },
            Error::Cancelled {
                what: "the push of 'app:1'".into(),
            },
        ]
        .map(|err| err.to_string());
        assert_eq!(
            messages.join("\n"),
            [
                "step 3/5 'RUN pytest' failed: The command '/bin/sh -c pytest' returned a \
                 non-zero code: 1",
                "image build failed: dockerfile parse error line 2: unknown instruction: FROBNICATE",
                "registry 'nexus' (127.0.0.1:5000) refused the credentials of user 'ci': \
                 unauthorized: authentication required",
                "registry 127.0.0.1:5000 refused an anonymous push: no basic auth credentials; \
                 name a registry with credentials in the stage",
                "could not push '127.0.0.1:5000/pet/backend:1.0' (3 attempts): Get \
                 \"http://127.0.0.1:5000/v2/\": dial tcp 127.0.0.1:5000: connect: connection \
                 refused",
                "could not push '10.0.0.5:5000/pet/backend:1.0': Get \"https://10.0.0.5:5000/v2/\": \
                 http: server gave HTTP response to HTTPS client; the registry at 10.0.0.5:5000 \
                 speaks plain HTTP, which the Docker daemon refuses unless told otherwise: add \
                 \"10.0.0.5:5000\" to \"insecure-registries\" in /etc/docker/daemon.json and \
                 restart the daemon (or give the registry TLS)",
                "the push of 'app:1' was cancelled",
            ]
            .join("\n")
        );
    }

    #[test]
    fn the_password_stays_hidden() {
        let auth = RegistryAuth {
            name: "nexus".into(),
            address: "127.0.0.1:5000".into(),
            username: "ci".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
        assert_eq!(
            scrub("bad credentials ci:hunter2", Some(&auth)),
            "bad credentials ci:***"
        );
    }
}
