//! Credentials for a project's repository, and the libgit2 callback that hands them out.

use std::fmt;
use std::path::PathBuf;

use git2::{Cred, CredentialType};

/// How to authenticate to a project's repository. The default (nothing) is right for public
/// repositories and for `file://` URLs and local paths.
#[derive(Clone, Default)]
pub struct Credentials {
    /// HTTPS user name; GitHub accepts any, and `x-access-token` is used when unset.
    pub username: Option<String>,
    /// HTTPS personal access token (or app installation token), sent as the Basic-auth password.
    pub token: Option<String>,
    /// Private key file for SSH URLs.
    pub ssh_key: Option<PathBuf>,
    /// An OpenSSH `known_hosts` file that SSH hosts' keys are checked against; `None`:
    /// libgit2's check, against `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("ssh_key", &self.ssh_key)
            .field("known_hosts", &self.known_hosts)
            .finish()
    }
}

/// Why authentication failed, as seen from the credentials callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuthProblem {
    /// The server asked again after getting the token: it refused it.
    TokenRefused,
    /// The server asked again after getting the key: it refused it.
    SshKeyRefused,
    /// The server wants credentials of a kind none are configured for.
    NoCredentials,
}

impl AuthProblem {
    pub(crate) fn message(self) -> &'static str {
        match self {
            AuthProblem::TokenRefused => {
                "the server refused the token (check that it is valid, not expired, and can read the repository)"
            }
            AuthProblem::SshKeyRefused => {
                "the server refused the SSH key (check that it is a deploy key of the repository)"
            }
            AuthProblem::NoCredentials => {
                "the server requires credentials and none are configured for this repository"
            }
        }
    }
}

/// State of libgit2's credentials callback during one fetch. libgit2 asks again whenever the
/// server refuses what it got, without limit over SSH, so each kind is handed out once: asking
/// again means refusal, and the callback fails instead of looping.
pub(crate) struct CredentialsCallback<'a> {
    creds: &'a Credentials,
    gave_token: bool,
    gave_ssh_key: bool,
    gave_username: bool,
    pub(crate) problem: Option<AuthProblem>,
}

impl<'a> CredentialsCallback<'a> {
    pub(crate) fn new(creds: &'a Credentials) -> Self {
        CredentialsCallback {
            creds,
            gave_token: false,
            gave_ssh_key: false,
            gave_username: false,
            problem: None,
        }
    }

    pub(crate) fn call(
        &mut self,
        username_from_url: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, git2::Error> {
        let ssh_user = || {
            username_from_url
                .or(self.creds.username.as_deref())
                .unwrap_or("git")
                .to_owned()
        };
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
            && let Some(token) = &self.creds.token
        {
            if self.gave_token {
                return Err(self.fail(AuthProblem::TokenRefused));
            }
            self.gave_token = true;
            let user = self.creds.username.as_deref().unwrap_or("x-access-token");
            return Cred::userpass_plaintext(user, token);
        }
        if allowed.contains(CredentialType::SSH_KEY)
            && let Some(key) = &self.creds.ssh_key
        {
            if self.gave_ssh_key {
                return Err(self.fail(AuthProblem::SshKeyRefused));
            }
            self.gave_ssh_key = true;
            return Cred::ssh_key(&ssh_user(), None, key, None);
        }
        // SSH asks for the user name first when the URL has none.
        if allowed.contains(CredentialType::USERNAME) && !self.gave_username {
            self.gave_username = true;
            return Cred::username(&ssh_user());
        }
        let problem = match (self.gave_token, self.gave_ssh_key) {
            (true, _) => AuthProblem::TokenRefused,
            (_, true) => AuthProblem::SshKeyRefused,
            _ => AuthProblem::NoCredentials,
        };
        Err(self.fail(problem))
    }

    fn fail(&mut self, problem: AuthProblem) -> git2::Error {
        self.problem = Some(problem);
        git2::Error::new(
            git2::ErrorCode::Auth,
            git2::ErrorClass::Callback,
            problem.message(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_token() {
        let creds = Credentials {
            username: Some("ci".into()),
            token: Some("ghp_topsecret".into()),
            ssh_key: None,
            known_hosts: None,
        };
        let shown = format!("{creds:?}");
        assert!(!shown.contains("ghp_topsecret"), "{shown}");
        assert!(shown.contains(r#"token: Some("***")"#), "{shown}");
    }

    #[test]
    fn hands_out_the_token_once() {
        let creds = Credentials {
            token: Some("t".into()),
            ..Credentials::default()
        };
        let mut cb = CredentialsCallback::new(&creds);
        assert!(cb.call(None, CredentialType::USER_PASS_PLAINTEXT).is_ok());
        assert!(cb.call(None, CredentialType::USER_PASS_PLAINTEXT).is_err());
        assert_eq!(cb.problem, Some(AuthProblem::TokenRefused));
    }

    #[test]
    fn no_credentials_is_reported_as_such() {
        let creds = Credentials::default();
        let mut cb = CredentialsCallback::new(&creds);
        assert!(cb.call(None, CredentialType::USER_PASS_PLAINTEXT).is_err());
        assert_eq!(cb.problem, Some(AuthProblem::NoCredentials));
    }
}
