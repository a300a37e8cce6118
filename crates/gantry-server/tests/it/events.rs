//! Server-Sent Events at the API level: a run's lines reach every client exactly once, also a
//! client that keeps disconnecting and one too slow to keep up; the runs list; line ranges.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Option<String>,
    pub name: String,
    pub data: Value,
}

/// A blocking SSE client over ureq.
pub struct EventReader {
    lines: BufReader<Box<dyn Read + Send>>,
    pub last_id: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl EventReader {
    pub fn open(server: &TestServer, path: &str, last_id: Option<&str>) -> EventReader {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut request = agent
            .get(format!("{}{path}", server.base))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .header("Accept", "text/event-stream");
        if let Some(id) = last_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.call().expect("event stream");
        assert_eq!(response.status(), 200, "events of {path}");
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        let reader: Box<dyn Read + Send> = Box::new(response.into_body().into_reader());
        EventReader {
            lines: BufReader::new(reader),
            last_id: last_id.map(String::from),
            headers,
        }
    }

    /// The next event, skipping comments and `retry:`; `None` when the stream ended.
    pub fn next(&mut self) -> Option<Event> {
        let (mut id, mut name, mut data) = (None, String::from("message"), String::new());
        let mut any = false;
        loop {
            let mut line = String::new();
            if self.lines.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if any {
                    if id.is_some() {
                        self.last_id = id.clone();
                    }
                    let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                    return Some(Event { id, name, data });
                }
                continue;
            }
            if line.starts_with(':') || line.starts_with("retry:") {
                continue;
            }
            any = true;
            let (field, value) = line.split_once(": ").unwrap_or((line, ""));
            match field {
                "id" => id = Some(value.to_string()),
                "event" => name = value.to_string(),
                "data" => data.push_str(value),
                _ => {}
            }
        }
    }
}

/// Every line a client saw, by stage; fails on a duplicate or a gap.
#[derive(Default)]
struct Collected {
    lines: BTreeMap<String, Vec<(i64, String)>>,
}

impl Collected {
    fn take(&mut self, event: &Event) {
        let stage = event.data["stage"].as_str().expect("stage").to_string();
        let seen = self.lines.entry(stage.clone()).or_default();
        for line in event.data["lines"].as_array().expect("lines") {
            let seq = line["seq"].as_i64().expect("seq");
            let expected = seen.last().map_or(1, |(s, _)| s + 1);
            assert_eq!(seq, expected, "stage {stage}: a gap or a duplicate");
            seen.push((seq, line["text"].as_str().unwrap_or_default().to_string()));
        }
    }

    fn check_counts(&self, stage: &str, count: usize) {
        let lines = &self.lines[stage];
        assert_eq!(lines.len(), count, "stage {stage}");
    }
}

/// Two parallel stages printing 60,000 numbered lines each, fast.
const FLOOD_PIPELINE: &str = "stages:
  - name: one
    image: local/busybox
    needs: []
    commands: [ \"sleep 1\", \"seq 1 60000\" ]
  - name: two
    image: local/busybox
    needs: []
    commands: [ \"sleep 1\", \"seq 1 60000 | sed 's/^/two /'\" ]
";

/// Every stage's line count of the flood: one `$ command` echo per command plus the output.
fn check_flood(collected: &Collected) {
    for stage in ["one", "two"] {
        let lines = &collected.lines[stage];
        let numbers: Vec<&str> = lines
            .iter()
            .map(|(_, text)| text.as_str())
            .filter(|t| t.trim_start_matches("two ").parse::<u64>().is_ok())
            .collect();
        assert_eq!(numbers.len(), 60_000, "stage {stage}");
        assert_eq!(numbers[59_999].trim_start_matches("two "), "60000");
    }
}

fn start_flood() -> (TestServer, i64, gantry_testkit::FixtureRepo) {
    let (repo, _) = repo_with(FLOOD_PIPELINE);
    let server = TestServer::start(vec![project("demo/app", &repo.file_url())]);
    let (status, run) = server.post(
        "/api/v1/runs",
        json!({"project": "demo/app", "branch": "main"}),
    );
    assert_eq!(status, 201, "{run}");
    (server, run["id"].as_i64().expect("id"), repo)
}

#[test]
fn a_client_that_keeps_disconnecting_misses_nothing_and_sees_nothing_twice() {
    if !docker_available() {
        return;
    }
    let (server, id, _repo) = start_flood();
    let path = format!("/api/v1/runs/{id}/events?from=start");
    let mut collected = Collected::default();
    let mut last_id: Option<String> = None;
    let mut reconnects = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    'connections: loop {
        assert!(Instant::now() < deadline, "the run never ended");
        let mut events = EventReader::open(&server, &path, last_id.as_deref());
        // Drop the connection after a few events, wherever that is.
        for _ in 0..(2 + reconnects % 5) {
            let Some(event) = events.next() else {
                last_id = events.last_id.clone();
                continue 'connections;
            };
            match event.name.as_str() {
                "lines" => collected.take(&event),
                "end" => break 'connections,
                _ => {}
            }
            last_id = event.id.clone().or(last_id);
        }
        reconnects += 1;
    }
    assert!(reconnects > 10, "only {reconnects} reconnects");
    check_flood(&collected);
    let run = server.wait_finished(id);
    assert_eq!(run["status"], "success", "{run:#}");
    // The stream's totals match the store's.
    for stage in ["one", "two"] {
        let (_, page) = server.get(&format!(
            "/api/v1/runs/{id}/stages/{stage}/lines?from=1&to=1"
        ));
        collected.check_counts(stage, page["total"].as_u64().expect("total") as usize);
    }
}

#[test]
fn a_slow_client_falls_behind_catches_up_from_the_store_and_gets_everything_once() {
    if !docker_available() {
        return;
    }
    let (server, id, _repo) = start_flood();
    let mut events = EventReader::open(
        &server,
        &format!("/api/v1/runs/{id}/events?from=start"),
        None,
    );
    let mut collected = Collected::default();
    let mut count = 0;
    let mut stalled = false;
    loop {
        let event = events.next().expect("the stream ends with an 'end' event");
        match event.name.as_str() {
            "lines" => collected.take(&event),
            "end" => {
                assert_eq!(event.data["status"], "success", "{:?}", event.data);
                break;
            }
            _ => {}
        }
        count += 1;
        // Stall once lines flow: far longer than the server's queue for this client lasts.
        if !stalled && !collected.lines.is_empty() {
            stalled = true;
            std::thread::sleep(Duration::from_secs(4));
        }
        if count % 20 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    check_flood(&collected);
}

#[test]
fn a_tail_stream_sends_only_the_last_lines_of_each_tick() {
    if !docker_available() {
        return;
    }
    let (server, id, _repo) = start_flood();
    let mut events = EventReader::open(
        &server,
        &format!("/api/v1/runs/{id}/events?from=start&tail=1"),
        None,
    );
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    let mut count = 0;
    loop {
        let event = events.next().expect("the stream ends with an 'end' event");
        match event.name.as_str() {
            "lines" => {
                let stage = event.data["stage"].as_str().expect("stage").to_string();
                for line in event.data["lines"].as_array().expect("lines") {
                    let seq = line["seq"].as_i64().expect("seq");
                    let before = last.insert(stage.clone(), seq).unwrap_or(0);
                    assert!(seq > before, "stage {stage}: {seq} after {before}");
                    count += 1;
                }
            }
            "end" => break,
            _ => {}
        }
    }
    for stage in ["one", "two"] {
        let (_, page) = server.get(&format!(
            "/api/v1/runs/{id}/stages/{stage}/lines?from=1&to=1"
        ));
        assert_eq!(
            last.get(stage),
            page["total"].as_i64().as_ref(),
            "{stage} ends at its last line"
        );
    }
    assert!(
        count < 60_000,
        "the tail of 120,000 lines took {count} lines"
    );
}

#[test]
fn a_run_stream_has_run_stage_and_masked_line_events_and_proxy_headers() {
    if !docker_available() {
        return;
    }
    let pipeline = "stages:
  - name: build
    image: local/busybox
    secrets: [ API_TOKEN ]
    commands: [ \"sleep 1\", \"echo token=$API_TOKEN\" ]
  - name: test
    image: local/busybox
    commands: [ \"echo tested\" ]
";
    let (repo, _) = repo_with(pipeline);
    let server = TestServer::start(vec![project("demo/app", &repo.file_url())]);
    let (_, run) = server.post(
        "/api/v1/runs",
        json!({"project": "demo/app", "branch": "main"}),
    );
    let id = run["id"].as_i64().expect("id");
    let mut events = EventReader::open(&server, &format!("/api/v1/runs/{id}/events"), None);
    let header = |name: &str| {
        events
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(header("x-accel-buffering").as_deref(), Some("no"));
    assert_eq!(header("cache-control").as_deref(), Some("no-cache"));
    let first = events.next().expect("a first event");
    assert_eq!(first.name, "run");
    assert_eq!(first.data["run"]["id"], id);
    let mut names = Vec::new();
    let mut text = String::new();
    // What the first snapshot shows counts too: on a busy machine `build` may already run
    // when the stream opens, and then no stage event says so.
    let mut statuses: Vec<String> = first.data["run"]["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|stage| {
            format!(
                "{} {}",
                stage["name"].as_str().unwrap_or_default(),
                stage["status"].as_str().unwrap_or_default()
            )
        })
        .collect();
    while let Some(event) = events.next() {
        assert!(event.id.is_some() || event.name == "end", "{event:?}");
        match event.name.as_str() {
            "lines" => {
                for line in event.data["lines"].as_array().expect("lines") {
                    text.push_str(line["text"].as_str().unwrap_or_default());
                    text.push('\n');
                }
            }
            "stage" => statuses.push(format!(
                "{} {}",
                event.data["stage"]["name"].as_str().unwrap_or_default(),
                event.data["stage"]["status"].as_str().unwrap_or_default()
            )),
            "run" => {
                // The stage graph: `test` waits for `build`.
                if let Some(stages) = event.data["run"]["stages"].as_array()
                    && stages.len() == 2
                {
                    assert_eq!(stages[1]["needs"], json!(["build"]));
                    assert_eq!(stages[0]["needs"], json!([]));
                }
            }
            _ => {}
        }
        names.push(event.name.clone());
        if event.name == "end" {
            assert_eq!(event.data["status"], "success");
            break;
        }
    }
    assert!(text.contains("token=***"), "{text}");
    assert!(!text.contains("server-side-secret-value"), "{text}");
    assert!(text.contains("tested"), "{text}");
    for expected in [
        "build running",
        "build success",
        "test running",
        "test success",
    ] {
        assert!(
            statuses.iter().any(|s| s == expected),
            "{expected} in {statuses:?}"
        );
    }
    // The REST run object has the graph too.
    let (_, run) = server.get(&format!("/api/v1/runs/{id}"));
    assert_eq!(run["stages"][1]["needs"], json!(["build"]));

    // Reconnecting with the last id of a finished run: nothing again, just the end.
    let last = events.last_id.clone().expect("an id");
    let mut again = EventReader::open(&server, &format!("/api/v1/runs/{id}/events"), Some(&last));
    let event = again.next().expect("an event");
    assert_eq!(
        (event.name.as_str(), event.id.as_deref()),
        ("end", Some(last.as_str()))
    );
}

#[test]
fn the_runs_list_stream_tells_of_new_runs_and_resumes_where_it_left() {
    let server = TestServer::start(vec![project("demo/app", "file:///nonexistent")]);
    let mut events = EventReader::open(&server, "/api/v1/events", None);
    let snapshot = events.next().expect("a snapshot");
    assert_eq!(snapshot.name, "runs");
    assert_eq!(snapshot.data["runs"], json!([]));
    let (_, run) = server.post(
        "/api/v1/runs",
        json!({"project": "demo/app", "branch": "main"}),
    );
    let id = run["id"].as_i64().expect("id");
    let event = events.next().expect("a run event");
    assert_eq!(
        (event.name.as_str(), &event.data["run"]["id"]),
        ("run", &json!(id))
    );
    let resume = event.id.clone().expect("an id");
    drop(events);

    // The run fails to check out (no such repository) while nobody listens...
    server.wait_finished(id);
    let (_, second) = server.post(
        "/api/v1/runs",
        json!({"project": "demo/app", "branch": "main"}),
    );
    // ...and a client that comes back gets what changed since, not a snapshot.
    let mut events = EventReader::open(&server, "/api/v1/events", Some(&resume));
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = events.next().expect("an event");
        assert_eq!(event.name, "run", "{event:?}");
        seen.push(event.data["run"]["id"].as_i64().expect("id"));
    }
    assert!(
        seen.contains(&id) && seen.contains(&second["id"].as_i64().expect("id")),
        "{seen:?}"
    );

    // An id from another server process gets a snapshot.
    let mut events = EventReader::open(&server, "/api/v1/events", Some("0000.12"));
    assert_eq!(events.next().expect("a snapshot").name, "runs");
}

#[test]
fn line_ranges_search_and_download() {
    if !docker_available() {
        return;
    }
    let pipeline =
        "stages:\n  - { name: count, image: local/busybox, commands: [\"seq 1 2500\"] }\n";
    let (repo, _) = repo_with(pipeline);
    let server = TestServer::start(vec![project("demo/app", &repo.file_url())]);
    let (_, run) = server.post(
        "/api/v1/runs",
        json!({"project": "demo/app", "branch": "main"}),
    );
    let id = run["id"].as_i64().expect("id");
    let run = server.wait_finished(id);
    assert_eq!(run["status"], "success", "{run:#}");
    let base = format!("/api/v1/runs/{id}/stages/count");
    let (status, page) = server.get(&format!("{base}/lines?from=101&to=103"));
    assert_eq!(status, 200, "{page}");
    let total = page["total"].as_i64().expect("total");
    assert!(total >= 2500, "{page}");
    let seqs: Vec<i64> = page["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| l["seq"].as_i64().unwrap_or_default())
        .collect();
    assert_eq!(seqs, vec![101, 102, 103]);
    let (_, last) = server.get(&format!("{base}/lines?from={total}"));
    assert_eq!(last["lines"][0]["text"], "2500");
    let (status, body) = server.get(&format!("{base}/lines?from=5&to=2"));
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("to (2) is before from (5)"))
    );
    let (status, _) = server.get(&format!("/api/v1/runs/{id}/stages/nope/lines"));
    assert_eq!(status, 404);

    let (_, found) = server.get(&format!("{base}/search?q=2499"));
    assert_eq!(
        found["matches"].as_array().map(Vec::len),
        Some(1),
        "{found}"
    );
    let (_, found) = server.get(&format!("{base}/search?q=1&limit=5"));
    assert_eq!(found["truncated"], true, "{found}");

    let (status, raw, _) = server.text(&format!("{base}/raw"));
    assert_eq!(status, 200);
    assert_eq!(
        raw.lines().filter(|l| l.parse::<u32>().is_ok()).count(),
        2500
    );
    assert!(raw.ends_with("2500\n"), "{}", &raw[raw.len() - 20..]);
}
