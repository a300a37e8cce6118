//! The crate's error type and the scrubbing that keeps secrets out of it.

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, for users: each variant's message says what and where. None of them ever
/// holds a token or a password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused the credentials, or wanted some and none were configured; or its SSH
    /// host key is not in the project's `known_hosts`, or differs from it.
    #[error("authentication failed for {url}: {message}")]
    Auth { url: String, message: String },
    /// A repository, ref or commit that does not exist (or that the credentials cannot see).
    #[error("not found: {what}")]
    NotFound { what: String },
    /// Anything else libgit2 reported: `context` says what Gantry was doing.
    #[error("{context}: {message}")]
    Git { context: String, message: String },
}

impl Error {
    pub(crate) fn git(context: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Git {
            context: context.into(),
            message: message.into(),
        }
    }

    pub(crate) fn not_found(what: impl Into<String>) -> Error {
        Error::NotFound { what: what.into() }
    }
}

/// `url` with any user info (`user:password@`, or a token used as the user name) replaced by
/// `***`, fit for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Removes every secret from a message that may echo one (libgit2 errors can quote URLs).
pub(crate) fn scrub(message: &str, secrets: &[&str]) -> String {
    let mut message = message.to_owned();
    for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
        message = message.replace(secret, "***");
    }
    message
}

/// The password (or token-as-user-name) that `url` carries, if any, so it can be scrubbed.
pub(crate) fn url_secret(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    Some(
        userinfo
            .split_once(':')
            .map_or(userinfo, |(_, password)| password),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_user_info() {
        let check = |url: &str, expected: &str| assert_eq!(redact_url(url), expected, "{url}");
        check(
            "https://github.com/acme/app.git",
            "https://github.com/acme/app.git",
        );
        check(
            "https://x:ghp_secret@github.com/acme/app.git",
            "https://***@github.com/acme/app.git",
        );
        check(
            "https://ghp_secret@github.com/a@b.git",
            "https://***@github.com/a@b.git",
        );
        check("git@github.com:acme/app.git", "git@github.com:acme/app.git");
        check("/srv/git/app.git", "/srv/git/app.git");
        check("file:///srv/a@b", "file:///srv/a@b");
    }

    #[test]
    fn finds_and_scrubs_url_secrets() {
        assert_eq!(url_secret("https://x:s3cret@h/r"), Some("s3cret"));
        assert_eq!(url_secret("https://tok@h/r"), Some("tok"));
        assert_eq!(url_secret("https://h/r@x"), None);
        assert_eq!(
            scrub("bad s3cret and s3cret", &["s3cret", ""]),
            "bad *** and ***"
        );
    }
}
