//! The web UI: the static files of `web/` (embedded at build time, so `cargo build` alone makes a
//! server that serves them), and browser sessions.
//!
//! The browser logs in with the admin token once and gets a session cookie (HttpOnly,
//! SameSite=Strict) instead of keeping the token in JavaScript. Requests with the cookie that
//! change something must come from the UI's own origin (`Origin`, or `Referer` when a browser
//! sends no `Origin`) and carry the session's CSRF token in `X-CSRF-Token`. `Authorization:
//! Bearer` keeps working for the CLI. Sessions are stored in the database by the SHA-256 of their
//! cookie and last 12 hours, so a restart logs nobody out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::auth::constant_time_eq;
use crate::error::ApiError;
use crate::state::App;

const COOKIE_NAME: &str = "gantry_session";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest go first.
const MAX_SESSIONS: usize = 10_000;
const CSRF_HEADER: &str = "x-csrf-token";

/// `script-src 'self'`: no inline script can run, so injected log text cannot either.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const INDEX: &[u8] = include_bytes!("../../../web/index.html");

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../web/app.js"),
    },
    Asset {
        name: "ansi.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../web/ansi.js"),
    },
    Asset {
        name: "logview.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../web/logview.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../../web/app.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../../web/favicon.svg"),
    },
];

/// The UI's pages (one document; the script routes) and files, and the session endpoints.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(index))
        .route("/login", get(index))
        .route("/runs", get(index))
        .route("/runs/{id}", get(index))
        .route("/deployments", get(index))
        .route("/assets/{name}", get(asset))
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/auth/session", get(session))
}

fn etag(body: &[u8]) -> String {
    format!("\"{}\"", &hex::encode(Sha256::digest(body))[..20])
}

/// Files are revalidated on every load (`no-cache`) and answered 304 while unchanged.
fn serve(
    headers: &HeaderMap,
    content_type: &'static str,
    body: &'static [u8],
    tag: &str,
) -> Response {
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == tag)
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(CONTENT_TYPE, content_type)], body).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(tag) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, tag);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn index(headers: HeaderMap) -> Response {
    static TAG: OnceLock<String> = OnceLock::new();
    let tag = TAG.get_or_init(|| etag(INDEX));
    let mut response = serve(&headers, "text/html; charset=utf-8", INDEX, tag);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    static TAGS: OnceLock<HashMap<&'static str, String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| ASSETS.iter().map(|a| (a.name, etag(a.body))).collect());
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => {
            let tag = tags.get(asset.name).map(String::as_str).unwrap_or_default();
            serve(&headers, asset.content_type, asset.body, tag)
        }
        None => ApiError::not_found(format!("no asset named '{name}'")).into_response(),
    }
}

#[derive(Clone)]
struct Session {
    csrf: String,
    created: DateTime<Utc>,
}

impl Session {
    fn live(&self) -> bool {
        Utc::now() - self.created < session_ttl()
    }
}

fn session_ttl() -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(SESSION_TTL).unwrap_or(chrono::TimeDelta::MAX)
}

/// Browser sessions by the SHA-256 of their cookie value. They live in the store, so a restart
/// (an upgrade) logs nobody out, and the ones in use are cached here.
#[derive(Default)]
pub struct Sessions {
    cache: Mutex<HashMap<[u8; 32], Session>>,
}

fn random_hex() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("no randomness for a session: {e}"),
        )
    })?;
    Ok(hex::encode(bytes))
}

fn key(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

impl Sessions {
    fn cache(&self) -> MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new session: its cookie value and its CSRF token.
    async fn create(&self, store: &gantry_store::Store) -> Result<(String, String), ApiError> {
        let (cookie, csrf) = (random_hex()?, random_hex()?);
        let now = Utc::now();
        store
            .create_session(&key(&cookie), &csrf, now, now - session_ttl(), MAX_SESSIONS)
            .await?;
        let mut cache = self.cache();
        cache.retain(|_, s| s.live());
        if cache.len() >= MAX_SESSIONS
            && let Some(oldest) = cache.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| *k)
        {
            cache.remove(&oldest);
        }
        cache.insert(
            key(&cookie),
            Session {
                csrf: csrf.clone(),
                created: now,
            },
        );
        Ok((cookie, csrf))
    }

    /// The CSRF token of the live session with this cookie value.
    async fn csrf(
        &self,
        store: &gantry_store::Store,
        cookie: &str,
    ) -> Result<Option<String>, ApiError> {
        let key = key(cookie);
        let cached = self.cache().get(&key).cloned();
        let session = match cached {
            Some(session) => Some(session),
            None => {
                let stored = store.session(&key).await?;
                let session = stored.map(|(csrf, created)| Session { csrf, created });
                if let Some(session) = session.as_ref().filter(|s| s.live()) {
                    self.cache().insert(key, session.clone());
                }
                session
            }
        };
        Ok(session.filter(Session::live).map(|s| s.csrf))
    }

    async fn remove(&self, store: &gantry_store::Store, cookie: &str) -> Result<(), ApiError> {
        let key = key(cookie);
        self.cache().remove(&key);
        store.delete_session(&key).await?;
        Ok(())
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, message)
}

/// The `host[:port]` a request was sent to, as the browser saw it.
fn request_host(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
}

/// Whether the request comes from a page of this server. With `required`, a request that says
/// nowhere where it comes from is refused too.
fn check_origin(headers: &HeaderMap, required: bool) -> Result<(), ApiError> {
    let origin = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    let Some(origin) = origin else {
        return if required {
            Err(forbidden(
                "refused: the request has no Origin header, so it may come from another site",
            ))
        } else {
            Ok(())
        };
    };
    let authority = origin
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or_default());
    match (authority, request_host(headers)) {
        (Some(authority), Some(host)) if authority.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err(forbidden(format!(
            "refused: a request from {origin} may not act on this server"
        ))),
    }
}

fn secure(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    token: String,
}

/// `POST /auth/login` with `{"token": "<admin token>"}`: sets the session cookie and returns
/// `{"csrf_token"}`.
async fn login(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    check_origin(&headers, false)?;
    let Json(request) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if !constant_time_eq(
        request.token.trim().as_bytes(),
        app.admin_token.expose().as_bytes(),
    ) {
        // Slows down guessing; the token has 256 bits anyway when Gantry made it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        return Err(ApiError::unauthorized("invalid token"));
    }
    let (cookie, csrf) = app.sessions.create(&app.store).await?;
    let attributes = format!(
        "{COOKIE_NAME}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if secure(&headers) { "; Secure" } else { "" }
    );
    let mut response = Json(json!({ "csrf_token": csrf })).into_response();
    if let Ok(value) = HeaderValue::from_str(&attributes) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    Ok(response)
}

/// `POST /auth/logout`: ends the session (it needs the CSRF token like any change).
async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(cookie) = session_cookie(&headers) {
        check_session_change(&app, &headers, cookie).await?;
        app.sessions.remove(&app.store, cookie).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_static("gantry_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(response)
}

/// `GET /auth/session`: `{"csrf_token"}` of the browser's session, or 401 when it has none.
async fn session(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let csrf = match session_cookie(&headers) {
        Some(cookie) => app.sessions.csrf(&app.store, cookie).await?,
        None => None,
    }
    .ok_or_else(|| ApiError::unauthorized("not logged in"))?;
    let mut response = Json(json!({ "csrf_token": csrf })).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// A change made with the session cookie: from this server's pages, with the CSRF token.
async fn check_session_change(
    app: &App,
    headers: &HeaderMap,
    cookie: &str,
) -> Result<(), ApiError> {
    let csrf = app
        .sessions
        .csrf(&app.store, cookie)
        .await?
        .ok_or_else(|| ApiError::unauthorized("your session has expired; log in again"))?;
    check_origin(headers, true)?;
    let sent = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !constant_time_eq(sent.as_bytes(), csrf.as_bytes()) {
        return Err(forbidden(
            "refused: a change made with a session cookie needs the session's X-CSRF-Token header",
        ));
    }
    Ok(())
}

/// The API's gate: `Authorization: Bearer` (the CLI) or a session cookie (the browser), with
/// the CSRF checks for changes made with a cookie.
pub async fn require_auth(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let checked = if !request.headers().contains_key(AUTHORIZATION)
        && let Some(cookie) = session_cookie(request.headers())
    {
        if matches!(*request.method(), Method::GET | Method::HEAD) {
            match app.sessions.csrf(&app.store, cookie).await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(ApiError::unauthorized(
                    "your session has expired; log in again",
                )),
                Err(e) => Err(e),
            }
        } else {
            check_session_change(&app, request.headers(), cookie).await
        }
    } else {
        crate::auth::check_token(&app, &request)
    };
    match checked {
        Ok(()) => next.run(request).await,
        Err(error) => crate::auth::refuse(request, error).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn origins() {
        let same = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ]);
        assert!(check_origin(&same, true).is_ok());
        let other = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:9999"),
        ]);
        assert_eq!(
            check_origin(&other, true).map_err(|e| e.message),
            Err("refused: a request from http://127.0.0.1:9999 may not act on this server".into())
        );
        let referer = headers(&[
            ("host", "ci.example"),
            ("referer", "https://ci.example/runs/1"),
        ]);
        assert!(check_origin(&referer, true).is_ok());
        let proxied = headers(&[
            ("host", "127.0.0.1:8080"),
            ("x-forwarded-host", "ci.example"),
            ("origin", "https://ci.example"),
        ]);
        assert!(check_origin(&proxied, true).is_ok());
        let none = headers(&[("host", "127.0.0.1:8080")]);
        assert!(check_origin(&none, true).is_err());
        assert!(check_origin(&none, false).is_ok());
        let null = headers(&[("host", "127.0.0.1:8080"), ("origin", "null")]);
        assert!(check_origin(&null, false).is_err());
    }

    #[test]
    fn cookies() {
        let h = headers(&[("cookie", "a=b; gantry_session=abc; c=d")]);
        assert_eq!(session_cookie(&h), Some("abc"));
        assert_eq!(
            session_cookie(&headers(&[("cookie", "gantry_session=")])),
            None
        );
        assert_eq!(session_cookie(&headers(&[])), None);
    }

    #[tokio::test]
    async fn sessions_outlive_their_cache_expire_and_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = gantry_store::Store::open_sqlite(&dir.path().join("db"))
            .await
            .unwrap();
        async fn csrf_of(
            sessions: &Sessions,
            store: &gantry_store::Store,
            cookie: &str,
        ) -> Result<Option<String>, String> {
            sessions.csrf(store, cookie).await.map_err(|e| e.message)
        }
        let sessions = Sessions::default();
        let (cookie, csrf) = sessions
            .create(&store)
            .await
            .map_err(|e| e.message)
            .unwrap();
        assert_eq!(
            csrf_of(&sessions, &store, &cookie).await,
            Ok(Some(csrf.clone()))
        );
        assert_eq!(csrf_of(&sessions, &store, "other").await, Ok(None));

        // A new process (an empty cache) finds it in the store.
        let restarted = Sessions::default();
        assert_eq!(csrf_of(&restarted, &store, &cookie).await, Ok(Some(csrf)));

        // One made longer ago than the TTL is over, stored or not.
        let old = Utc::now() - session_ttl() - chrono::TimeDelta::seconds(1);
        store
            .create_session(&key("stale"), "x", old, old - session_ttl(), MAX_SESSIONS)
            .await
            .unwrap();
        assert_eq!(csrf_of(&restarted, &store, "stale").await, Ok(None));

        sessions
            .remove(&store, &cookie)
            .await
            .map_err(|e| e.message)
            .unwrap();
        assert_eq!(csrf_of(&sessions, &store, &cookie).await, Ok(None));
        assert_eq!(
            csrf_of(&Sessions::default(), &store, &cookie).await,
            Ok(None)
        );
    }
}
