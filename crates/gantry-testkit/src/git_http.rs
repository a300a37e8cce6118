//! A smart-HTTP git server for tests: `git http-backend` run as a CGI program behind a small axum
//! server on 127.0.0.1, with optional HTTP Basic auth. It runs on its own thread and runtime, so
//! synchronous tests can use it, and stops when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::oneshot;

/// One request the server answered, for tests that check what a client did (how often it
/// retried authentication, whether it sent credentials).
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub method: String,
    /// Path and query, e.g. `/public.git/info/refs?service=git-upload-pack`.
    pub target: String,
    pub status: u16,
    /// The authenticated user, if the request carried valid credentials.
    pub user: Option<String>,
    /// What `git http-backend` wrote to stderr.
    pub stderr: String,
}

pub struct GitHttpServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<RequestRecord>>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

struct ServerState {
    repos_root: PathBuf,
    /// `(user, "Basic <base64(user:token)>")` when auth is required.
    auth: Option<(String, String)>,
    requests: Arc<Mutex<Vec<RequestRecord>>>,
}

impl GitHttpServer {
    /// Serves every repository under `repos_root` (bare, or non-bare such as a
    /// [`crate::FixtureRepo`]) on a random port of 127.0.0.1. With `auth = Some((user, token))`,
    /// every request must carry those HTTP Basic credentials.
    #[track_caller]
    pub fn start(repos_root: &Path, auth: Option<(&str, &str)>) -> GitHttpServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let addr = listener.local_addr().expect("listener address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(ServerState {
            repos_root: repos_root.to_owned(),
            auth: auth.map(|(user, token)| {
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
                (user.to_owned(), format!("Basic {encoded}"))
            }),
            requests: Arc::clone(&requests),
        });
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("git-http-{}", addr.port()))
            .spawn(move || serve(listener, state, shutdown_rx))
            .expect("spawn the git http server thread");
        GitHttpServer {
            addr,
            requests,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The clone URL of the repository at `repos_root/<repo>`, e.g. `url("public.git")`.
    pub fn url(&self, repo: &str) -> String {
        format!("{}/{}", self.base_url(), repo.trim_start_matches('/'))
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    listener: std::net::TcpListener,
    state: Arc<ServerState>,
    shutdown: oneshot::Receiver<()>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the git http server runtime");
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::from_std(listener).expect("register the listener with tokio");
        let app = axum::Router::new().fallback(handle).with_state(state);
        // Not a graceful shutdown: a client may keep an idle keep-alive connection open, and a
        // test's drop must not wait for it. Dropping the runtime ends the connection tasks.
        tokio::select! {
            result = axum::serve(listener, app) => {
                if let Err(e) = result {
                    eprintln!("git http server stopped: {e}");
                }
            }
            _ = shutdown => {}
        }
    });
}

async fn handle(State(state): State<Arc<ServerState>>, request: Request) -> Response {
    let method = request.method().as_str().to_owned();
    let target = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |pq| pq.as_str().to_owned(),
    );
    let record = |status: StatusCode, user: Option<String>, stderr: String| {
        state
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(RequestRecord {
                method: method.clone(),
                target: target.clone(),
                status: status.as_u16(),
                user,
                stderr,
            });
    };

    let user = match &state.auth {
        None => None,
        Some((user, expected)) => {
            let given = request.headers().get(header::AUTHORIZATION);
            if given.is_none_or(|given| given.as_bytes() != expected.as_bytes()) {
                record(StatusCode::UNAUTHORIZED, None, String::new());
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, r#"Basic realm="git""#)],
                    "authentication required\n",
                )
                    .into_response();
            }
            Some(user.clone())
        }
    };

    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(e) => {
            record(StatusCode::BAD_REQUEST, user, e.to_string());
            return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
        }
    };
    let cgi = CgiRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        user: user.as_deref(),
        body,
    };
    match run_http_backend(&state.repos_root, cgi).await {
        Ok((response, stderr)) => {
            record(response.status(), user, stderr);
            response
        }
        Err(message) => {
            record(StatusCode::INTERNAL_SERVER_ERROR, user, message.clone());
            (StatusCode::INTERNAL_SERVER_ERROR, message).into_response()
        }
    }
}

struct CgiRequest<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    headers: &'a HeaderMap,
    user: Option<&'a str>,
    body: Bytes,
}

/// Runs `git http-backend` for one request (RFC 3875 CGI) and turns its output into a response.
async fn run_http_backend(
    repos_root: &Path,
    request: CgiRequest<'_>,
) -> Result<(Response, String), String> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", repos_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REQUEST_METHOD", request.method)
        .env("PATH_INFO", request.path)
        .env("QUERY_STRING", request.query)
        .env("CONTENT_LENGTH", request.body.len().to_string());
    if let Some(content_type) = request.headers.get(header::CONTENT_TYPE) {
        cmd.env("CONTENT_TYPE", content_type.to_str().unwrap_or_default());
    }
    if let Some(user) = request.user {
        cmd.env("REMOTE_USER", user).env("AUTH_TYPE", "Basic");
    }
    // Other headers as HTTP_*: http-backend reads HTTP_CONTENT_ENCODING (gzip'd request bodies)
    // and HTTP_GIT_PROTOCOL (protocol v2) from them. Credentials are never passed on.
    for (name, value) in request.headers {
        if [
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::CONTENT_LENGTH,
        ]
        .contains(name)
        {
            continue;
        }
        if let Ok(value) = value.to_str() {
            let var = format!(
                "HTTP_{}",
                name.as_str().to_ascii_uppercase().replace('-', "_")
            );
            cmd.env(var, value);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);

    let mut child = cmd
        .spawn()
        .map_err(|e| format!("start git http-backend: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("git http-backend has no stdin")?;
    let body = request.body;
    // Write the body while reading the output, so neither side blocks on a full pipe.
    let writer = tokio::spawn(async move {
        // http-backend may answer without reading the whole body; a broken pipe is fine.
        let _ = stdin.write_all(&body).await;
    });
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| format!("run git http-backend: {e}"))?;
    let _ = writer.await;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let response = parse_cgi_response(&output.stdout).map_err(|e| {
        format!(
            "git http-backend ({}): {e}; stderr: {stderr}",
            output.status
        )
    })?;
    Ok((response, stderr))
}

/// Parses a CGI response: header lines (`Status:` among them), a blank line, then the body.
fn parse_cgi_response(output: &[u8]) -> Result<Response, String> {
    let (head, body) = split_head(output).ok_or("no end of the CGI header block")?;
    let head = std::str::from_utf8(head).map_err(|_| "CGI headers are not UTF-8")?;
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    for line in head.lines().filter(|line| !line.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("malformed CGI header line {line:?}"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or_default();
            status = code
                .parse::<u16>()
                .ok()
                .and_then(|code| StatusCode::from_u16(code).ok())
                .ok_or_else(|| format!("bad CGI status {value:?}"))?;
        } else {
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("bad CGI header name {name:?}"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("bad CGI header value {value:?}"))?;
            headers.append(name, value);
        }
    }
    let mut response = Response::new(Body::from(body.to_vec()));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

fn split_head(output: &[u8]) -> Option<(&[u8], &[u8])> {
    let crlf = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    let lf = output.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let (at, len) = match (crlf, lf) {
        (Some(a), Some(b)) => {
            if a.0 <= b.0 {
                a
            } else {
                b
            }
        }
        (a, b) => a.or(b)?,
    };
    Some((&output[..at], &output[at + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cgi_status_and_headers() {
        let response =
            parse_cgi_response(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope")
                .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/plain");

        let response = parse_cgi_response(b"Content-Type: x\n\nbody\n\nmore").unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(parse_cgi_response(b"Content-Type: x").is_err());
    }
}
