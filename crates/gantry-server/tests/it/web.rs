//! The web UI in a real headless Chromium: login, live logs from real containers, colours and
//! progress bars, cancel and re-run, a million-line-class log with its tools (colours carried
//! across lines and pages, search, follow, timestamps, download), and the CSRF defences.
//! Screenshots of the main pages land in `target/screenshots/`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use gantry_testkit::webdriver::Browser;
use serde_json::{Value, json};

use crate::support::*;

const WAIT: Duration = Duration::from_secs(30);

fn screenshot(browser: &Browser, name: &str) {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("screenshots");
    browser.screenshot(&dir.join(format!("{name}.png")));
}

/// Logs in through the login page and waits for the runs list.
fn login(browser: &Browser, server: &TestServer) {
    browser.goto(&format!("{}/login", server.base));
    browser.wait_for(
        "the login form",
        "return document.querySelector('#token')",
        WAIT,
    );
    browser.type_into("#token", TOKEN);
    browser.click("form.login button[type=submit]");
    browser.wait_for(
        "the runs page",
        "return location.pathname === '/' && document.querySelector('table.runs')",
        WAIT,
    );
}

/// JavaScript that finds the log row showing line `seq` and returns its text, or null.
fn row_text(seq: i64) -> String {
    format!(
        "const a = [...document.querySelectorAll('.log-row:not([hidden]) .ln')].find(a => a.textContent === '{seq}');
         return a ? a.parentElement.querySelector('.tx').textContent : null;"
    )
}

/// The classes of the pieces of the row showing line `seq`: one per styled span, `""` for plain
/// text; `[""]` is a plain line.
fn row_styles(browser: &Browser, seq: i64) -> Value {
    browser.wait_for(
        &format!("line {seq} on screen"),
        &format!(
            "const a = [...document.querySelectorAll('.log-row:not([hidden]) .ln')].find(a => a.textContent === '{seq}');
             return a && [...a.parentElement.querySelector('.tx').childNodes].map(n => n.nodeType === 1 ? n.className : '');"
        ),
        WAIT,
    )
}

/// Waits until the search says `label` ("2 / 3") and shows line `seq` highlighted, with the
/// match marked.
fn wait_for_match(browser: &Browser, label: &str, seq: i64) {
    browser.wait_for(
        &format!("search result {label} on line {seq}"),
        &format!(
            "const r = document.querySelector('.log-row.hl');
             return document.querySelector('.log-matches').textContent === '{label}'
                 && !!r && r.querySelector('.ln').textContent === '{seq}' && !!r.querySelector('mark');"
        ),
        WAIT,
    );
}

#[test]
fn login_is_required_a_bad_token_is_refused_and_logout_ends_the_session() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let server = TestServer::start(vec![project("demo/app", "file:///nonexistent")]);
    browser.goto(&format!("{}/", server.base));
    browser.wait_for(
        "the redirect to the login page",
        "return location.pathname === '/login' && document.querySelector('#token')",
        WAIT,
    );
    screenshot(&browser, "login");
    browser.type_into("#token", "not-the-token");
    browser.click("form.login button[type=submit]");
    let error = browser.wait_for(
        "the refusal",
        "return document.querySelector('.form-error').textContent",
        WAIT,
    );
    assert_eq!(error, "That token is not valid.");
    assert_eq!(
        browser.execute("return document.cookie", vec![]),
        json!(""),
        "no cookie, and the session cookie is HttpOnly anyway"
    );
    login(&browser, &server);
    let projects = browser.wait_for(
        "the projects",
        "const o = [...document.querySelectorAll('#filter-project option')].map(o => o.value); return o.length > 1 && o",
        WAIT,
    );
    assert_eq!(projects, json!(["", "demo/app"]));
    browser.click("#nav button");
    browser.wait_for(
        "the login page after logout",
        "return location.pathname === '/login'",
        WAIT,
    );
    browser.goto(&format!("{}/runs", server.base));
    browser.wait_for(
        "the login page again",
        "return location.pathname === '/login'",
        WAIT,
    );
}

/// Serves one page that posts a form to `target`, as a hostile site would.
fn hostile_site(target: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let page = format!(
                "<!doctype html><form method=post action='{target}' enctype='text/plain'>\
                 <input name='{{\"project\":\"demo/app\",\"branch\":\"main\",\"x\":\"' value='\"}}'></form>\
                 <script>document.forms[0].submit()</script>"
            );
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    format!("http://{addr}/")
}

#[test]
fn a_cross_site_post_is_refused_even_with_the_session_cookie() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let server = TestServer::start(vec![project("demo/app", "file:///nonexistent")]);
    login(&browser, &server);
    // Another port on 127.0.0.1 is the same *site*, so SameSite=Strict still sends the cookie:
    // the Origin check and the CSRF token must refuse it.
    let site = hostile_site(format!("{}/api/v1/runs", server.base));
    browser.goto(&site);
    let answer = browser.wait_for(
        "the server's answer to the forged form",
        "return location.href.endsWith('/api/v1/runs') && document.body.innerText",
        WAIT,
    );
    let answer: Value = serde_json::from_str(answer.as_str().unwrap_or_default()).expect("JSON");
    let message = answer["error"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("refused: a request from http://127.0.0.1:"),
        "{answer}"
    );
    assert!(server.runs().is_empty(), "no run was made");

    // The same checks at the HTTP level: cookie without the CSRF token, wrong origin, right.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(format!("{}/auth/login", server.base))
        .send_json(json!({"token": TOKEN}))
        .expect("login");
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let csrf = response.body_mut().read_json::<Value>().expect("json")["csrf_token"]
        .as_str()
        .expect("csrf")
        .to_string();
    let session = cookie.split(';').next().unwrap_or_default().to_string();
    let origin = server.base.clone();
    let post = |origin: Option<&str>, token: Option<&str>| {
        let mut request = agent
            .post(format!("{}/api/v1/runs", server.base))
            .header("Cookie", &session);
        if let Some(o) = origin {
            request = request.header("Origin", o);
        }
        if let Some(t) = token {
            request = request.header("X-CSRF-Token", t);
        }
        let mut response = request
            .send_json(json!({"project": "demo/app", "branch": "main"}))
            .expect("post");
        let body: Value = response.body_mut().read_json().unwrap_or_default();
        (
            response.status().as_u16(),
            body["error"].as_str().unwrap_or_default().to_string(),
        )
    };
    assert_eq!(
        post(Some(&origin), None),
        (
            403,
            "refused: a change made with a session cookie needs the session's X-CSRF-Token header"
                .into()
        )
    );
    assert_eq!(post(Some("http://evil.example"), Some(&csrf)).0, 403);
    assert_eq!(
        post(None, Some(&csrf)),
        (
            403,
            "refused: the request has no Origin header, so it may come from another site".into()
        )
    );
    assert_eq!(post(Some(&origin), Some(&csrf)).0, 201);
    // Reading needs only the cookie; the CLI's bearer token works as before.
    let status = agent
        .get(format!("{}/api/v1/runs", server.base))
        .header("Cookie", &session)
        .call()
        .expect("get")
        .status();
    assert_eq!(status, 200);
    let (status, _) = server.get("/api/v1/runs");
    assert_eq!(status, 200);
}

const LIVE_SCRIPT: &str = r#"import sys, time
print("\x1b[31mred text\x1b[0m plain \x1b[1;4mbold underlined\x1b[0m \x1b[38;5;208morange256\x1b[0m \x1b[38;2;10;200;120mtruecolour\x1b[0m", flush=True)
for i in range(0, 101, 10):
    sys.stdout.write("\rprogress %d%%" % i)
    sys.stdout.flush()
    time.sleep(0.05)
print(flush=True)
time.sleep(4)
for i in range(1, 21):
    print("tick %d %.3f" % (i, time.time()), flush=True)
    time.sleep(0.25)
"#;

const LIVE_PIPELINE: &str = "stages:
  - name: prepare
    image: local/busybox
    commands: [ \"echo preparing\" ]
  - name: ticks
    image: local/python:3.11
    needs: [ prepare ]
    commands: [ \"python3 -u ticks.py\" ]
  - name: lint
    image: local/busybox
    needs: [ prepare ]
    commands: [ \"echo linted\" ]
  - name: package
    image: local/busybox
    needs: [ ticks, lint ]
    commands: [ \"echo packaged\" ]
";

#[test]
fn a_running_pipeline_streams_into_the_page_with_colours_and_progress_bars() {
    if !docker_available() {
        return;
    }
    let Some(browser) = Browser::start() else {
        return;
    };
    let (repo, _) = repo_with(LIVE_PIPELINE);
    repo.write("ticks.py", LIVE_SCRIPT);
    repo.commit("ticks");
    let server = TestServer::start(vec![project("demo/app", &repo.file_url())]);
    login(&browser, &server);

    // Start the run from the UI.
    browser.execute("document.querySelector('#new-branch').value = ''", vec![]);
    browser.type_into("#new-branch", "main");
    browser.click("form.new-run button[type=submit]");
    browser.wait_for(
        "the run page",
        "return /^\\/runs\\/\\d+$/.test(location.pathname) && document.querySelector('[data-stage=ticks]')",
        Duration::from_secs(60),
    );
    // Record when each tick line first shows up in the page.
    browser.execute(
        "window.__seen = {};
         window.__since = Date.now() / 1000;
         const look = () => {
           for (const tx of document.querySelectorAll('.log-row .tx')) {
             const m = /^tick (\\d+) ([\\d.]+)$/.exec(tx.textContent);
             if (m && !(m[1] in window.__seen)) window.__seen[m[1]] = [Number(m[2]), Date.now() / 1000];
           }
         };
         new MutationObserver(look).observe(document.querySelector('#main'), { subtree: true, childList: true, characterData: true });",
        vec![],
    );
    browser.click("[data-stage=ticks]");
    browser.wait_for(
        "the coloured line",
        "return [...document.querySelectorAll('.log-row .tx')].some(t => t.textContent.startsWith('red text'))",
        Duration::from_secs(60),
    );
    let seen = browser.wait_for(
        "all 20 ticks",
        "return Object.keys(window.__seen).length >= 20 && window.__seen",
        Duration::from_secs(60),
    );
    let since = browser
        .execute("return window.__since", vec![])
        .as_f64()
        .unwrap_or_default();
    let mut delays = Vec::new();
    for (tick, times) in seen.as_object().expect("ticks") {
        let (printed, shown) = (
            times[0].as_f64().unwrap_or_default(),
            times[1].as_f64().unwrap_or_default(),
        );
        if printed > since {
            delays.push((tick.clone(), shown - printed));
        }
    }
    assert!(delays.len() >= 15, "the page watched too late: {delays:?}");
    for (tick, delay) in &delays {
        assert!(
            *delay < 1.0,
            "tick {tick} appeared {delay:.3}s after it was printed: {delays:?}"
        );
    }

    // Colours are styled spans: 16 colours as classes, 256 and truecolour inline.
    let styles = browser.execute(
        "const span = (text) => [...document.querySelectorAll('.log-row .tx span')].find(s => s.textContent === text);
         const style = (s) => s && { cls: s.className, color: getComputedStyle(s).color, weight: getComputedStyle(s).fontWeight, deco: getComputedStyle(s).textDecorationLine };
         return { red: style(span('red text')), bold: style(span('bold underlined')), c256: style(span('orange256')), rgb: style(span('truecolour')),
                  plain: getComputedStyle(document.querySelector('.log-row .tx')).color };",
        vec![],
    );
    assert_eq!(styles["red"]["cls"], "a-f1", "{styles:#}");
    assert_ne!(styles["red"]["color"], styles["plain"], "{styles:#}");
    assert_eq!(styles["bold"]["cls"], "a-b a-u", "{styles:#}");
    assert_eq!(styles["bold"]["weight"], "700", "{styles:#}");
    assert_eq!(styles["bold"]["deco"], "underline", "{styles:#}");
    assert_eq!(styles["c256"]["color"], "rgb(255, 135, 0)", "{styles:#}");
    assert_eq!(styles["rgb"]["color"], "rgb(10, 200, 120)", "{styles:#}");
    // The progress bar collapsed to its last state.
    let progress = browser.execute(
        "return [...document.querySelectorAll('.log-row .tx')].map(t => t.textContent).filter(t => t.includes('progress'))",
        vec![],
    );
    assert_eq!(progress, json!(["progress 100%"]));

    // The graph shows the parallel branches: ticks and lint side by side, after prepare.
    browser.wait_for(
        "the run's end",
        "return document.querySelector('.run-head .badge').textContent.includes('success')",
        Duration::from_secs(60),
    );
    let columns = browser.execute(
        "return [...document.querySelectorAll('.graph .column')].map(c => [...c.querySelectorAll('.stage')].map(s => s.dataset.stage))",
        vec![],
    );
    assert_eq!(
        columns,
        json!([["prepare"], ["ticks", "lint"], ["package"]])
    );
    let edges = browser.execute(
        "return document.querySelectorAll('.graph .edges path').length",
        vec![],
    );
    assert_eq!(edges, json!(4));
    screenshot(&browser, "run");
    browser.prefer_dark(true);
    screenshot(&browser, "run-dark");
    browser.prefer_dark(false);

    // A permalink to a line highlights it.
    let url = browser.url();
    browser.goto(&format!("{url}#stage-ticks-L3"));
    let text = browser.wait_for(
        "the highlighted line",
        "const r = document.querySelector('.log-row.hl'); return r && r.querySelector('.tx').textContent",
        WAIT,
    );
    assert_eq!(text, "progress 100%");

    browser.goto(&format!("{}/", server.base));
    browser.wait_for(
        "the runs list",
        "return document.querySelectorAll('table.runs tbody tr').length === 1",
        WAIT,
    );
    let row = browser.text("table.runs tbody tr");
    assert!(
        row.contains("success") && row.contains("demo/app #1") && row.contains("manual"),
        "{row}"
    );
    screenshot(&browser, "runs");
    browser.set_window_size(390, 844);
    screenshot(&browser, "runs-phone");
    browser.goto(&format!("{url}#stage-ticks-L3"));
    browser.wait_for(
        "the run page",
        "return document.querySelector('.log-row.hl')",
        WAIT,
    );
    screenshot(&browser, "run-phone");
}

#[test]
fn cancel_and_rerun_from_the_ui() {
    if !docker_available() {
        return;
    }
    let Some(browser) = Browser::start() else {
        return;
    };
    let pipeline = "stages:\n  - { name: wait, image: local/busybox, commands: [\"echo waiting\", \"sleep 300\"] }\n";
    let (repo, _) = repo_with(pipeline);
    let server = TestServer::start(vec![project("demo/app", &repo.file_url())]);
    let (_, run) = server.post(
        "/api/v1/runs",
        json!({"project": "demo/app", "branch": "main"}),
    );
    let id = run["id"].as_i64().expect("id");
    login(&browser, &server);
    browser.goto(&format!("{}/runs/{id}", server.base));
    browser.wait_for(
        "the running stage's output",
        "return [...document.querySelectorAll('.log-row .tx')].some(t => t.textContent === 'waiting')",
        Duration::from_secs(60),
    );
    browser.click("[data-action=cancel]");
    browser.wait_for(
        "the cancelled run",
        "return document.querySelector('.run-head .badge').textContent.includes('cancelled')
             && document.querySelector('[data-stage=wait]').className.includes('s-cancelled')",
        Duration::from_secs(30),
    );
    assert_eq!(
        server.get(&format!("/api/v1/runs/{id}")).1["status"],
        "cancelled"
    );
    screenshot(&browser, "run-cancelled");
    browser.click("[data-action=rerun]");
    let new_id = browser.wait_for(
        "the re-run's page",
        &format!("const m = /^\\/runs\\/(\\d+)$/.exec(location.pathname); return m && m[1] !== '{id}' && Number(m[1])"),
        WAIT,
    );
    let new_id = new_id.as_i64().expect("id");
    browser.wait_for(
        "the re-run's trigger",
        &format!("return document.querySelector('.meta') && document.querySelector('.meta').textContent.includes('re-run of #{id}')"),
        WAIT,
    );
    let (status, _) = server.post(&format!("/api/v1/runs/{new_id}/cancel"), json!({}));
    assert_eq!(status, 200);
}

#[test]
fn a_huge_log_opens_at_once_jumps_to_its_end_permalinks_and_searches() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let server = TestServer::start(vec![project("demo/app", "file:///nonexistent")]);
    const LINES: i64 = 300_000;
    let id = fill_huge_run(&server, LINES);
    login(&browser, &server);
    browser.goto(&format!("{}/runs/{id}", server.base));
    let first = browser.wait_for("the first line", &row_text(1), WAIT);
    assert_eq!(first, "line 1 of the big log");
    browser.wait_for(
        "a complete first screen",
        "return document.querySelector('.log').dataset.complete === 'true'",
        WAIT,
    );
    let rows = browser.execute(
        "return document.querySelectorAll('.log-row').length",
        vec![],
    );
    assert!(
        rows.as_i64().unwrap_or(0) < 100,
        "only the visible lines exist: {rows}"
    );
    let painted = browser.execute(
        "return performance.getEntriesByName('gantry-log-first-screen').length",
        vec![],
    );
    assert_eq!(painted, json!(1));
    screenshot(&browser, "huge-log");

    // Line 1 turns red and line 3 resets: line 2, which says nothing about colour, is red.
    assert_eq!(row_styles(&browser, 1), json!(["a-f1"]));
    assert_eq!(row_styles(&browser, 2), json!(["a-f1"]));
    assert_eq!(row_styles(&browser, 3), json!([""]));

    // Timestamps are hidden until asked for.
    let times = "const ts = document.querySelector('.log-row:not([hidden]) .ts');
        return [getComputedStyle(ts).display, ts.textContent];";
    let hidden = browser.execute(times, vec![]);
    assert_eq!(hidden[0], "none", "{hidden}");
    browser.click(".log-tools input[type=checkbox]");
    let shown = browser.execute(times, vec![]);
    assert_ne!(shown[0], "none", "{shown}");
    let clock = shown[1].as_str().unwrap_or_default();
    assert!(
        clock.len() == 12
            && clock
                .chars()
                .all(|c| c.is_ascii_digit() || ":.".contains(c)),
        "HH:MM:SS.mmm: {clock:?}"
    );

    let download = browser.execute(
        "const a = [...document.querySelectorAll('.log-tools a')].find(a => a.textContent === 'Download raw');
         return [a.getAttribute('href'), a.hasAttribute('download')];",
        vec![],
    );
    assert_eq!(
        download,
        json!([format!("/api/v1/runs/{id}/stages/big/raw"), true])
    );

    browser.click("[data-action=end]");
    let last = browser.wait_for("the last line", &row_text(LINES), WAIT);
    assert_eq!(last, format!("line {LINES} of the big log"));
    screenshot(&browser, "huge-log-end");

    // Following stops when the reader scrolls up and starts again at the bottom.
    let following = |on: bool| {
        browser.wait_for(
            &format!("following {}", if on { "on" } else { "off" }),
            &format!(
                "return document.querySelector('[data-action=follow]').getAttribute('aria-pressed') === '{on}'"
            ),
            WAIT,
        );
    };
    following(true);
    browser.execute("document.querySelector('.log-scroll').focus()", vec![]);
    browser.press("\u{E00E}"); // PageUp
    following(false);
    browser.wait_for(
        "the end of the smooth scroll up",
        "const s = document.querySelector('.log-scroll'); const top = s.scrollTop;
         const settled = window.__top === top; window.__top = top;
         return settled && top < s.scrollHeight - 1.5 * s.clientHeight;",
        WAIT,
    );
    browser.execute(
        "const s = document.querySelector('.log-scroll'); s.scrollTop = s.scrollHeight;",
        vec![],
    );
    following(true);

    let url = format!("{}/runs/{id}#stage-big-L150000", server.base);
    browser.goto(&url);
    let text = browser.wait_for(
        "the permalinked line",
        "const r = document.querySelector('.log-row.hl'); return r && r.querySelector('.ln').textContent === '150000' && r.querySelector('.tx').textContent",
        WAIT,
    );
    assert_eq!(text, "line 150000 of the big log");
    // Yellow from line 149,995 to 150,005 holds across the page boundary at 150,000, though the
    // pages before were never read.
    assert_eq!(row_styles(&browser, 149_994), json!([""]));
    assert_eq!(row_styles(&browser, 150_000), json!(["a-f3"]));
    assert_eq!(row_styles(&browser, 150_001), json!(["a-f3"]));
    assert_eq!(row_styles(&browser, 150_005), json!([""]));

    // Search finds what the page shows: a word split by a colour code, not one a progress bar
    // overwrote. Enter and Shift+Enter or the buttons step through the matches, round the end.
    browser.type_into(".log-search", "needle-in-the-haystack\u{E007}");
    wait_for_match(&browser, "1 / 3", 100);
    browser.click("[aria-label='Next match']");
    wait_for_match(&browser, "2 / 3", 234_567);
    screenshot(&browser, "huge-log-search");
    browser.type_into(".log-search", "\u{E007}");
    wait_for_match(&browser, "3 / 3", LINES - 1);
    browser.type_into(".log-search", "\u{E007}");
    wait_for_match(&browser, "1 / 3", 100);
    browser.type_into(".log-search", "\u{E008}\u{E007}"); // Shift+Enter
    wait_for_match(&browser, "3 / 3", LINES - 1);
    browser.click("[aria-label='Previous match']");
    wait_for_match(&browser, "2 / 3", 234_567);
}

/// A finished run with one stage of `lines` lines, written straight into the server's database.
fn fill_huge_run(server: &TestServer, lines: i64) -> i64 {
    crate::huge_log::fill_huge_run(
        &server.data.path().join("gantry.db"),
        "demo/app",
        lines,
        |seq| match seq {
            1 => "\x1b[31mline 1 of the big log".to_string(),
            3 => "\x1b[0mline 3 of the big log".to_string(),
            100 => "needle-in-the-\x1b[1mhaystack\x1b[0m, split by a colour code".to_string(),
            200 => "needle-in-the-haystack\rOVERWRITTEN BY A PROGRESS BAR".to_string(),
            149_995 => "\x1b[33mline 149995 of the big log".to_string(),
            150_005 => "\x1b[39mline 150005 of the big log".to_string(),
            234_567 => "needle-in-the-haystack".to_string(),
            299_999 => "the last needle-in-the-haystack".to_string(),
            s if s % 1000 == 500 => format!("\x1b[32mline {s} of the big log\x1b[0m"),
            s => format!("line {s} of the big log"),
        },
    )
    .expect("the huge run")
}

/// The Deployments page: the history, one "Roll back" per Deployment (on its newest entry),
/// a confirmation that can be declined, the rollback itself, and a failure told in the page.
#[test]
fn the_deployments_page_lists_rollouts_and_rolls_back_after_a_confirmation() {
    use crate::deployments::{NAME, NS, ROLLBACK, deployments, image, server_for, shop_backend};

    let Some(browser) = Browser::start() else {
        return;
    };
    let emulator = shop_backend(&["backend:1", "backend:2", "backend:3"]);
    let server = server_for(Vec::new(), &emulator);
    // Two rollbacks through the API make the history: 3 -> 2 (revision 4), then 4 -> 1 (5).
    assert_eq!(server.post(ROLLBACK, json!({})).0, 200);
    assert_eq!(server.post(ROLLBACK, json!({"to_revision": 1})).0, 200);
    assert_eq!(image(&emulator), "backend:1");

    login(&browser, &server);
    browser.click("a[href='/deployments']");
    let rows = "return [...document.querySelectorAll('table.deployments tbody tr')]
        .map(r => [...r.cells].map(c => c.textContent.trim()).slice(1).join(' | ').trimEnd())";
    let listed = browser.wait_for(
        "the deployment history",
        &format!("const r = (() => {{ {rows} }})(); return r.length === 2 && r"),
        WAIT,
    );
    assert_eq!(
        listed,
        json!([
            "rollback | prod | shop/backend | backend:1 | 4 → 1 | ✓complete | manual rollback | Roll back",
            "rollback | prod | shop/backend | backend:2 | 3 → 2 | ✓complete | manual rollback |",
        ])
    );
    assert_eq!(
        browser.execute(
            "return document.querySelectorAll('button.rollback').length",
            vec![]
        ),
        json!(1),
        "only the newest entry of a Deployment offers the rollback"
    );
    screenshot(&browser, "deployments");

    // Declined: nothing happens.
    browser.click("button.rollback");
    let question = browser.answer_dialog(false, WAIT);
    assert_eq!(
        question,
        format!("Roll {NS}/{NAME} on prod back to its previous revision?")
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(image(&emulator), "backend:1");
    assert_eq!(deployments(&server, "").len(), 2);

    // Clicks "Roll back", says OK, and returns the flash message of `kind` (ok, error).
    let roll_back = |kind: &str| {
        browser.click("button.rollback");
        browser.answer_dialog(true, WAIT);
        browser.wait_for(
            &format!("a flash message of kind {kind}"),
            &format!(
                "const f = document.querySelector('#flash .flash.{kind}'); return f && f.textContent"
            ),
            WAIT,
        )
    };

    // Accepted: back to revision 4 (backend:2), which runs as revision 6.
    let told = roll_back("ok");
    assert_eq!(
        told,
        "Rolled shop/backend back to revision 4 (now revision 6)."
    );
    assert_eq!(image(&emulator), "backend:2");
    let listed = browser.wait_for(
        "the new entry",
        &format!("const r = (() => {{ {rows} }})(); return r.length === 3 && r"),
        WAIT,
    );
    assert_eq!(
        listed[0],
        "rollback | prod | shop/backend | backend:2 | 5 → 4 | ✓complete | manual rollback | Roll back"
    );
    let history = deployments(&server, "");
    assert_eq!(history.len(), 3);
    assert_eq!(
        (&history[0]["kind"], &history[0]["image_after"]),
        (&json!("rollback"), &json!("backend:2"))
    );
    screenshot(&browser, "deployments-rolled-back");
    browser.set_window_size(390, 844);
    screenshot(&browser, "deployments-phone");
    browser.set_window_size(1280, 900);

    // The cluster is gone: the page says why and nothing is recorded.
    emulator.set_unreachable(true);
    let told = roll_back("error");
    assert_eq!(
        told,
        format!(
            "Rollback of shop/backend failed: cannot reach cluster 'prod' at {}: connection refused",
            emulator.url()
        )
    );
    assert_eq!(
        browser.execute("const b = document.querySelector('button.rollback'); return [b.disabled, b.textContent]", vec![]),
        json!([false, "Roll back"]),
        "the button is usable again"
    );
    emulator.set_unreachable(false);
    assert_eq!(deployments(&server, "").len(), 3);
    assert_eq!(image(&emulator), "backend:2");
}
