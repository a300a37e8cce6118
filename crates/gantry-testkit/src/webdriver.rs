//! A real headless Chromium for tests and benchmarks, driven through chromedriver's W3C WebDriver
//! endpoints with plain HTTP calls (ureq): a WebDriver client crate would add far more than the
//! handful of calls the tests make.
//!
//! [`Browser::start`] finds Debian's `chromium` and `chromedriver`; without them it returns
//! `None` after a note, except under `CI=true`, where a missing browser is a failure that names
//! `cargo xtask provision`. The network here is closed, so Chromium starts with every background
//! service off and a fresh profile.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

const CHROMIUM: &[&str] = &["/usr/bin/chromium", "/usr/bin/chromium-browser"];
const CHROMEDRIVER: &[&str] = &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"];
/// The key W3C WebDriver uses for element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

/// A reference to an element of the current page.
#[derive(Clone, Debug)]
pub struct Element(String);

fn find_binary(candidates: &[&str]) -> Option<PathBuf> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a `width`×`height` window.
    pub fn start_sized(width: u32, height: u32) -> Option<Browser> {
        let (Some(chromium), Some(chromedriver)) =
            (find_binary(CHROMIUM), find_binary(CHROMEDRIVER))
        else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "Chromium or chromedriver is missing, and CI=true: run `cargo xtask provision` \
                     (it installs Debian's chromium and chromium-driver)"
                );
            }
            eprintln!("note: skipping a browser test: chromium or chromedriver is not installed");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port for chromedriver")
            .port();
        let profile = tempfile::tempdir().expect("a profile directory");
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                profile.path().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .new_agent();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            agent,
            _profile: profile,
        };
        browser.wait_ready();
        let user_data = browser._profile.path().join("chromium");
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", user_data.display()),
            format!("--window-size={width},{height}"),
        ];
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
            // A dialog waits for the test to answer it (see `answer_dialog`).
            "unhandledPromptBehavior": "ignore",
        }}});
        let answer = browser.call("POST", "/session", Some(capabilities));
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver started no session: {answer}"))
            .to_string();
        Some(browser)
    }

    /// [`Browser::start_sized`] with a 1280×900 window.
    pub fn start() -> Option<Browser> {
        Browser::start_sized(1280, 900)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut response) = self.agent.get(format!("{}/status", self.base)).call() {
                let body: Value = response.body_mut().read_json().unwrap_or_default();
                if body["value"]["ready"] == true {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One WebDriver command; returns its `value`, panicking on a WebDriver error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let answer = self.try_call(method, path, body);
        match answer {
            Ok(value) => value,
            Err(error) => panic!("WebDriver {method} {path} failed: {error}"),
        }
    }

    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Value> {
        let url = format!("{}{path}", self.base);
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, body) => self.agent.post(&url).send_json(body.unwrap_or(json!({}))),
        };
        let mut response = response.unwrap_or_else(|e| panic!("chromedriver is gone: {e}"));
        let ok = response.status().is_success();
        let body: Value = response.body_mut().read_json().unwrap_or_default();
        let value = body.get("value").cloned().unwrap_or(Value::Null);
        if ok { Ok(value) } else { Err(value) }
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url` and waits for its load event.
    pub fn goto(&self, url: &str) {
        self.call(
            "POST",
            &self.session_path("/url"),
            Some(json!({ "url": url })),
        );
    }

    pub fn url(&self) -> String {
        self.call("GET", &self.session_path("/url"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and returns what it
    /// returns. A returned promise is awaited.
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.call(
            "POST",
            &self.session_path("/execute/sync"),
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Polls `script` until it returns something truthy (not null, false, 0 or ""), and returns
    /// that; panics naming `what` after `timeout`.
    pub fn wait_for(&self, what: &str, script: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self
                .try_call(
                    "POST",
                    &self.session_path("/execute/sync"),
                    Some(json!({ "script": script, "args": [] })),
                )
                .unwrap_or(Value::Null);
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() > deadline {
                let page = self.execute(
                    "return document.body ? document.body.innerText : ''",
                    vec![],
                );
                panic!(
                    "timed out waiting for {what}; the page says:\n{}",
                    page.as_str().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits for an `alert`, `confirm` or `prompt` dialog, answers it (OK when `accept`,
    /// Cancel otherwise) and returns its message; panics after `timeout`.
    pub fn answer_dialog(&self, accept: bool, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let text = loop {
            match self.try_call("GET", &self.session_path("/alert/text"), None) {
                Ok(text) => break text.as_str().unwrap_or_default().to_owned(),
                Err(error) if Instant::now() > deadline => {
                    panic!("no dialog opened within {timeout:?}: {error}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(25)),
            }
        };
        let answer = if accept {
            "/alert/accept"
        } else {
            "/alert/dismiss"
        };
        self.call("POST", &self.session_path(answer), Some(json!({})));
        text
    }

    /// The first element matching the CSS `selector`; panics if there is none.
    pub fn find(&self, selector: &str) -> Element {
        self.try_find(selector)
            .unwrap_or_else(|| panic!("no element matches {selector}"))
    }

    pub fn try_find(&self, selector: &str) -> Option<Element> {
        let value = self
            .try_call(
                "POST",
                &self.session_path("/element"),
                Some(json!({ "using": "css selector", "value": selector })),
            )
            .ok()?;
        value[ELEMENT].as_str().map(|id| Element(id.to_string()))
    }

    /// Clicks the element like a user (scrolling it into view first).
    pub fn click(&self, selector: &str) {
        self.on_element(selector, "click", json!({}));
    }

    /// Types `text` into the element (focusing it first).
    pub fn type_into(&self, selector: &str, text: &str) {
        self.on_element(selector, "value", json!({ "text": text }));
    }

    /// Runs an element command, finding the element again when the page replaced it in between
    /// (live pages redraw).
    fn on_element(&self, selector: &str, command: &str, body: Value) {
        for _ in 0..10 {
            let element = self.find(selector);
            let path = self.session_path(&format!("/element/{}/{command}", element.0));
            match self.try_call("POST", &path, Some(body.clone())) {
                Ok(_) => return,
                Err(e) if e["error"] == "stale element reference" => continue,
                Err(e) => panic!("WebDriver {command} on {selector} failed: {e}"),
            }
        }
        panic!("{selector} kept being replaced; cannot {command} it");
    }

    /// Sends keys to whatever has the focus (`\u{E010}` is End, `\u{E007}` Enter).
    pub fn press(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|c| {
                [
                    json!({ "type": "keyDown", "value": c.to_string() }),
                    json!({ "type": "keyUp", "value": c.to_string() }),
                ]
            })
            .collect();
        self.call(
            "POST",
            &self.session_path("/actions"),
            Some(json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": actions }] })),
        );
    }

    /// The rendered text of the first element matching `selector`.
    pub fn text(&self, selector: &str) -> String {
        let text = self.execute(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : null",
            vec![json!(selector)],
        );
        match text {
            Value::String(text) => text,
            _ => panic!("no element matches {selector}"),
        }
    }

    /// Saves a PNG of the viewport to `path`, creating its directory.
    pub fn screenshot(&self, path: &Path) {
        let data = self.call("GET", &self.session_path("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .expect("a base64 screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("a screenshot directory");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// Runs a Chrome DevTools Protocol command, e.g. `Emulation.setEmulatedMedia`.
    pub fn cdp(&self, command: &str, params: Value) -> Value {
        self.call(
            "POST",
            &self.session_path("/goog/cdp/execute"),
            Some(json!({ "cmd": command, "params": params })),
        )
    }

    /// Makes the page see `prefers-color-scheme: dark` (or light).
    pub fn prefer_dark(&self, dark: bool) {
        let scheme = if dark { "dark" } else { "light" };
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-color-scheme", "value": scheme }] }),
        );
    }

    pub fn set_window_size(&self, width: u32, height: u32) {
        self.call(
            "POST",
            &self.session_path("/window/rect"),
            Some(json!({ "width": width, "height": height })),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.try_call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
