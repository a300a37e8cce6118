//! The HTTP side of the client: requests to `/api/v1`, the bearer token, and
//! every way a request can fail, turned into one user-facing [`Error`].

use std::io;
use std::time::Duration;

use serde::Deserialize;

/// Logs can be long; the default limit of the HTTP library (10 MiB) is not.
const BODY_LIMIT: u64 = 256 * 1024 * 1024;

/// Where the admin token comes from, for the hint after a 401.
const TOKEN_HINT: &str = "set GANTRY_TOKEN to the admin token (printed by 'gantry serve' at first start, \
                          stored in <data_dir>/admin-token)";

/// Why a client command could not do its job. The `Display` text is the one
/// line the user sees after `error: `; it never contains the token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot reach Gantry at {server}: {cause} (is 'gantry serve' running? set GANTRY_SERVER)"
    )]
    Unreachable { server: String, cause: String },
    #[error("the server refused the token ({status}): {message}; {TOKEN_HINT}")]
    TokenRefused { status: u16, message: String },
    #[error("the server wants a token ({status}): {message}; {TOKEN_HINT}")]
    TokenMissing { status: u16, message: String },
    #[error("{0}")]
    NotFound(String),
    /// A 4xx other than 401, 403 and 404: the server explains what was wrong.
    #[error("{message}")]
    Rejected { status: u16, message: String },
    #[error("the server failed ({status}): {message}")]
    ServerFailed { status: u16, message: String },
    #[error("unexpected answer from {url}: {detail}")]
    Protocol { url: String, detail: String },
    #[error("{0}")]
    Usage(String),
    /// The reader of our output went away (`gantry runs | head`): stop quietly.
    #[error("stdout was closed")]
    StdoutClosed,
    #[error("cannot write to stdout: {0}")]
    Stdout(io::Error),
}

impl Error {
    /// The exit code scripts see: 3 for "no such thing", 2 for everything
    /// that kept the command from doing its job.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::NotFound(_) => super::exit::NOT_FOUND,
            Error::StdoutClosed => 0,
            _ => super::exit::ERROR,
        }
    }

    /// Replaces the server's wording of a 404 with `{what} not found`, for
    /// lookups where the client knows exactly what was missing.
    pub fn not_found_as(self, what: impl std::fmt::Display) -> Error {
        match self {
            Error::NotFound(_) => Error::NotFound(format!("{what} not found")),
            other => other,
        }
    }
}

/// A successful answer.
pub struct Reply {
    pub body: String,
    /// `X-Gantry-Last-Seq`, sent with log lines.
    pub last_seq: Option<u64>,
}

/// `{"error": "message"}`, the body of every non-2xx answer.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// How long a request may take, connecting included, unless it says otherwise.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Api {
    agent: ureq::Agent,
    /// `http://host:port` (plus a path prefix, if any), without a trailing `/`.
    base: String,
    token: Option<String>,
}

impl Api {
    pub fn new(server: &str, token: Option<String>) -> Result<Api, Error> {
        let base = normalize_server(server)?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .user_agent(concat!("gantry/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Api {
            agent: config.into(),
            base,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// GET `/api/v1{path}` with the query parameters that are set.
    pub fn get(&self, path: &str, query: &[(&str, Option<String>)]) -> Result<Reply, Error> {
        let url = self.url(path);
        let mut request = self.agent.get(&url);
        for (key, value) in query {
            if let Some(value) = value {
                request = request.query(key, value);
            }
        }
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        self.finish(&url, request.call())
    }

    /// POST a JSON body (or an empty one) to `/api/v1{path}`.
    pub fn post(&self, path: &str, body: Option<&serde_json::Value>) -> Result<Reply, Error> {
        self.post_for(path, body, Some(REQUEST_TIMEOUT))
    }

    /// POST, waiting for the answer as long as the server works on it (the server bounds it):
    /// a manual rollback answers when its rollout has ended, up to the Deployment's progress
    /// deadline (10 minutes by default), longer than any usual request.
    pub fn post_and_wait(
        &self,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, Error> {
        self.post_for(path, body, None)
    }

    fn post_for(
        &self,
        path: &str,
        body: Option<&serde_json::Value>,
        timeout: Option<Duration>,
    ) -> Result<Reply, Error> {
        let url = self.url(path);
        let mut request = self
            .agent
            .post(&url)
            .config()
            .timeout_global(timeout)
            .build();
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let result = match body {
            Some(body) => request.send_json(body),
            None => request.send_empty(),
        };
        self.finish(&url, result)
    }

    /// PUT a JSON body to `/api/v1{path}`.
    pub fn put(&self, path: &str, body: &serde_json::Value) -> Result<Reply, Error> {
        let url = self.url(path);
        let mut request = self.agent.put(&url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        self.finish(&url, request.send_json(body))
    }

    /// DELETE `/api/v1{path}`.
    pub fn delete(&self, path: &str) -> Result<Reply, Error> {
        let url = self.url(path);
        let mut request = self.agent.delete(&url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        self.finish(&url, request.call())
    }

    /// The server's address, as the user gave it (normalized).
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    fn finish(
        &self,
        url: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Reply, Error> {
        let mut response = result.map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        let last_seq = response
            .headers()
            .get("x-gantry-last-seq")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let body = response
            .body_mut()
            .with_config()
            .limit(BODY_LIMIT)
            .lossy_utf8(true)
            .read_to_string()
            .map_err(|e| self.transport_error(e))?;
        if (200..300).contains(&status) {
            return Ok(Reply { body, last_seq });
        }
        Err(self.status_error(url, status, &body))
    }

    fn transport_error(&self, error: ureq::Error) -> Error {
        let cause = match error {
            ureq::Error::BadUri(_) | ureq::Error::Http(_) => {
                return Error::Usage(format!(
                    "'{}' is not a usable server address ({error}); set GANTRY_SERVER to e.g. http://127.0.0.1:8080",
                    self.base
                ));
            }
            ureq::Error::Io(e) => describe_io(&e),
            ureq::Error::HostNotFound => "host not found".to_string(),
            ureq::Error::Timeout(_) => "timed out".to_string(),
            ureq::Error::ConnectionFailed => "connection failed".to_string(),
            other => other.to_string(),
        };
        Error::Unreachable {
            server: self.base.clone(),
            cause: self.scrub(&cause),
        }
    }

    fn status_error(&self, url: &str, status: u16, body: &str) -> Error {
        let gantry_message = serde_json::from_str::<ErrorBody>(body)
            .ok()
            .map(|b| self.scrub(&b.error));
        if status == 404 && gantry_message.is_none() {
            // Not Gantry's 404: the address is some other web server, or an
            // older Gantry without this endpoint.
            return Error::Protocol {
                url: url.to_string(),
                detail: "404 Not Found without a Gantry error; is GANTRY_SERVER the address of 'gantry serve'?"
                    .to_string(),
            };
        }
        let message = gantry_message.unwrap_or_else(|| self.scrub(&fallback_message(status, body)));
        match status {
            401 | 403 if self.token.is_some() => Error::TokenRefused { status, message },
            401 | 403 => Error::TokenMissing { status, message },
            404 => Error::NotFound(message),
            400..=499 => Error::Rejected { status, message },
            _ => Error::ServerFailed { status, message },
        }
    }

    /// One line, and never the token, even if a server echoes it back.
    fn scrub(&self, text: &str) -> String {
        let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
        match &self.token {
            Some(token) => line.replace(token.as_str(), "***"),
            None => line,
        }
    }
}

/// `localhost:8080` → `http://localhost:8080`; `http://h/` → `http://h`.
fn normalize_server(server: &str) -> Result<String, Error> {
    let server = server.trim().trim_end_matches('/');
    if server.is_empty() {
        return Err(Error::Usage(
            "GANTRY_SERVER is empty; set it to e.g. http://127.0.0.1:8080".into(),
        ));
    }
    let url = if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    };
    if url.starts_with("https://") {
        return Err(Error::Usage(format!(
            "cannot reach Gantry at {url}: this gantry speaks plain HTTP only; \
             use http:// (e.g. through an SSH tunnel) or a local TLS-terminating proxy"
        )));
    }
    if !url.starts_with("http://") {
        return Err(Error::Usage(format!(
            "'{url}' is not an http:// address; set GANTRY_SERVER to e.g. http://127.0.0.1:8080"
        )));
    }
    Ok(url)
}

/// `connection refused` rather than `Connection refused (os error 111)`.
fn describe_io(error: &io::Error) -> String {
    if error.get_ref().is_none() {
        error.kind().to_string()
    } else {
        error.to_string()
    }
}

/// What to say when a non-2xx body is not `{"error": ...}` (a proxy's page,
/// say): its first line, or the status's name.
fn fallback_message(status: u16, body: &str) -> String {
    let first = body
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    if first.is_empty() || first.starts_with('<') {
        let reason = ureq::http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("no reason");
        return reason.to_string();
    }
    first.chars().take(200).collect()
}

/// Percent-encodes one path segment (a stage or project name) for the URL.
pub fn path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        let ok = |s: &str| normalize_server(s).map_err(|e| e.to_string());
        assert_eq!(
            ok("http://127.0.0.1:8080/"),
            Ok("http://127.0.0.1:8080".to_string())
        );
        assert_eq!(
            ok("ci.example.com:8080"),
            Ok("http://ci.example.com:8080".to_string())
        );
        assert_eq!(ok(" http://h/gantry "), Ok("http://h/gantry".to_string()));
        expect_test::expect![[r#"
            Err(
                "cannot reach Gantry at https://ci.example.com: this gantry speaks plain HTTP only; use http:// (e.g. through an SSH tunnel) or a local TLS-terminating proxy",
            )
        "#]]
        .assert_debug_eq(&ok("https://ci.example.com"));
        expect_test::expect![[r#"
            Err(
                "'ftp://h' is not an http:// address; set GANTRY_SERVER to e.g. http://127.0.0.1:8080",
            )
        "#]]
        .assert_debug_eq(&ok("ftp://h"));
    }

    #[test]
    fn stage_names_in_paths() {
        assert_eq!(path_segment("build-1.2_x~"), "build-1.2_x~");
        assert_eq!(path_segment("unit tests/é"), "unit%20tests%2F%C3%A9");
    }

    #[test]
    fn status_errors_name_the_problem_and_hide_the_token() {
        let api = |token: Option<&str>| {
            Api::new("http://127.0.0.1:1", token.map(String::from)).expect("valid address")
        };
        let with = api(Some("s3cret"));
        let check = |api: &Api, status, body: &str| {
            api.status_error("http://x/api/v1/runs", status, body)
                .to_string()
        };
        expect_test::expect!["the server refused the token (401): token *** is wrong; set GANTRY_TOKEN to the admin token (printed by 'gantry serve' at first start, stored in <data_dir>/admin-token)"]
            .assert_eq(&check(&with, 401, r#"{"error": "token s3cret\nis wrong"}"#));
        expect_test::expect!["the server wants a token (401): missing bearer token; set GANTRY_TOKEN to the admin token (printed by 'gantry serve' at first start, stored in <data_dir>/admin-token)"]
            .assert_eq(&check(&api(None), 401, r#"{"error": "missing bearer token"}"#));
        expect_test::expect!["run 42 does not exist"].assert_eq(&check(
            &with,
            404,
            r#"{"error": "run 42 does not exist"}"#,
        ));
        expect_test::expect!["unexpected answer from http://x/api/v1/runs: 404 Not Found without a Gantry error; is GANTRY_SERVER the address of 'gantry serve'?"]
            .assert_eq(&check(&with, 404, "<html>nope</html>"));
        expect_test::expect!["run 12 has already finished (success)"].assert_eq(&check(
            &with,
            409,
            r#"{"error": "run 12 has already finished (success)"}"#,
        ));
        expect_test::expect!["the server failed (502): Bad Gateway"]
            .assert_eq(&check(&with, 502, "<html>"));
        expect_test::expect!["the server failed (500): database is locked"].assert_eq(&check(
            &with,
            500,
            "database is locked\n",
        ));
    }
}
