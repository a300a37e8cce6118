//! Server-Sent Events: a run's stage changes and log lines (`/api/v1/runs/{id}/events`) and the
//! runs list (`/api/v1/events`).
//!
//! Every event carries an id that says exactly what the client has, and a client that reconnects
//! with `Last-Event-ID` gets exactly what it missed. A run stream's id is a [`Cursor`]: the last
//! line sent of every stage and a hash of the run's state as sent. The stream reads what the
//! cursor lacks from the store, then subscribes to the hub, reads the store once more (whatever
//! was published before the subscription was stored before it was published), and forwards live
//! batches, dropping lines it sent already and filling any gap from the store. When the hub drops
//! the stream for lagging, the stream starts over from the store: a slow client costs a few store
//! reads, never memory, and never slows a stage down.
//!
//! With `?tail=1` a stream sends lines at most every 50 ms, and of each stage only the last 200
//! new ones (catching up, it skips to the last 200 too): a viewer of the tail, like the web UI,
//! then costs the server a few kilobytes a tick however fast a stage prints, and fetches any
//! lines it skipped from the lines endpoint when they scroll into view. Without it, every line
//! is sent exactly once.
//!
//! Responses carry `X-Accel-Buffering: no` and a comment every 15 s, so nginx and other proxies
//! pass events on at once and keep idle streams open.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use gantry_store::{LogLine, Run};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};
use crate::hub::{LineBatch, RunMessage, TAIL_LINES, lines_event};
use crate::state::App;

/// A comment this often keeps proxies from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Lines read from the store at a time while catching up.
const PAGE: i64 = 2000;
/// How often a tail-mode stream sends lines at most.
const TAIL_EVERY: Duration = Duration::from_millis(50);
/// How long browsers wait before reconnecting.
const RETRY_MS: u32 = 2000;
/// Runs sent in a runs-list snapshot.
const SNAPSHOT_RUNS: i64 = 50;

/// What a run stream's client has: a hash of the run's state as last sent, and the last line sent
/// of each stage (by pipeline position). Written as `HASH.SEQ.SEQ…`, e.g. `9c1d…e2.120.0`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    pub state: u64,
    pub seqs: Vec<i64>,
}

impl Cursor {
    pub fn parse(text: &str) -> Option<Cursor> {
        let mut parts = text.trim().split('.');
        let state = u64::from_str_radix(parts.next()?, 16).ok()?;
        let seqs = parts
            .map(|p| p.parse::<i64>().ok().filter(|s| *s >= 0))
            .collect::<Option<Vec<_>>>()?;
        Some(Cursor { state, seqs })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.state)?;
        for seq in &self.seqs {
            write!(f, ".{seq}")?;
        }
        Ok(())
    }
}

/// FNV-1a: a stable hash of the state sent, so the cursor can say whether the client has it.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The API's run object: the stored run with each stage's `needs`, `outputs` and `deploy`.
pub async fn run_view(app: &App, run: &Run) -> Result<Value, gantry_store::Error> {
    let mut view = serde_json::to_value(run).unwrap_or_default();
    let needs = app.store.stage_needs(run.id).await?;
    if let Some(stages) = view.get_mut("stages").and_then(Value::as_array_mut) {
        for stage in stages {
            let name = stage
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let needs = needs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, needs)| needs.clone())
                .unwrap_or_default();
            stage["needs"] = json!(needs);
        }
    }
    crate::deployments::add_to_run_view(app, run.id, &mut view).await?;
    Ok(view)
}

#[derive(Deserialize)]
pub struct RunEventsQuery {
    /// Where a new stream starts: `end` (the default: the lines stored so far are left to the
    /// lines endpoint) or `start` (every line).
    from: Option<String>,
    /// A cursor to resume from, for clients that cannot send `Last-Event-ID`.
    cursor: Option<String>,
    /// `tail=1`: send only the last lines of each batch (and of the log when catching up); the
    /// client fetches what it skipped from the lines endpoint if it wants it. For viewers of
    /// the tail, such as the web UI: a stage printing 20 MB/s costs them next to nothing.
    tail: Option<u8>,
}

enum Start {
    Beginning,
    End,
    At(Cursor),
}

/// `GET /api/v1/runs/{id}/events`: events `run` (the whole run, and where its stages' lines
/// start), `stage` (one stage changed), `lines` (`{"stage", "lines": [...]}`) and `end` (the run
/// finished and everything was sent).
pub async fn run_events(
    State(app): State<Arc<App>>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    query: Result<Query<RunEventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if app.store.get_run(id).await?.is_none() {
        return Err(ApiError::not_found(format!("run {id} not found")));
    }
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(Cursor::parse);
    let start = match (resumed, query.cursor, query.from.as_deref()) {
        (Some(cursor), _, _) => Start::At(cursor),
        (None, Some(text), _) => Start::At(Cursor::parse(&text).ok_or_else(|| {
            ApiError::bad_request(format!("cursor '{text}' is not an event id of this stream"))
        })?),
        (None, None, None | Some("end")) => Start::End,
        (None, None, Some("start")) => Start::Beginning,
        (None, None, Some(other)) => {
            return Err(ApiError::bad_request(format!(
                "from must be 'start' or 'end', not '{other}'"
            )));
        }
    };
    let (tx, rx) = mpsc::channel(16);
    let stream = RunStream {
        app,
        run_id: id,
        tx,
        names: Vec::new(),
        cursor: Cursor::default(),
        sent: None,
        finished: false,
        tail: query.tail.unwrap_or(0) > 0,
    };
    tokio::spawn(stream.run(start));
    Ok(event_stream(rx))
}

/// The response for a stream whose events a task sends into `rx`'s channel.
fn event_stream(mut rx: mpsc::Receiver<Bytes>) -> Response {
    let body = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|chunk| chunk.map(Ok::<_, Infallible>))
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The client went away, the server is stopping or the store failed: the stream ends (and a
/// browser reconnects with its last event id).
struct Closed;

fn event(id: &str, name: &str, data: &str) -> Bytes {
    Bytes::from(format!("id: {id}\nevent: {name}\ndata: {data}\n\n"))
}

struct RunStream {
    app: Arc<App>,
    run_id: i64,
    tx: mpsc::Sender<Bytes>,
    /// The run's stages in pipeline order; `cursor.seqs` follows it.
    names: Vec<String>,
    cursor: Cursor,
    /// The run as last sent on this connection, to send only what changes.
    sent: Option<Value>,
    finished: bool,
    /// Tail mode: skip to the last lines instead of sending every one.
    tail: bool,
}

impl RunStream {
    async fn run(mut self, start: Start) {
        let _ = self.stream(start).await;
    }

    async fn stream(&mut self, start: Start) -> Result<(), Closed> {
        self.send(Bytes::from(format!("retry: {RETRY_MS}\n\n")))
            .await?;
        let run = self.load().await?;
        self.learn_stages(&run);
        match start {
            Start::Beginning => {}
            Start::At(cursor) => {
                self.cursor.state = cursor.state;
                for (seq, have) in self.cursor.seqs.iter_mut().zip(cursor.seqs) {
                    *seq = have;
                }
            }
            Start::End => {
                for (i, name) in self.names.iter().enumerate() {
                    self.cursor.seqs[i] = self
                        .app
                        .store
                        .last_log_seq(self.run_id, name)
                        .await
                        .map_err(|e| self.store_failed(e))?;
                }
            }
        }
        let mut keep_alive =
            tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
        loop {
            // Catch up without a subscription, however far behind the client is...
            self.sync().await?;
            self.catch_up().await?;
            // ...then subscribe, and read once more what was published before that.
            let mut live = self.app.hub.subscribe_run(self.run_id);
            self.sync().await?;
            self.catch_up().await?;
            if self.finished {
                return self.end().await;
            }
            // Tail mode: batches wait here until the next send, at most every TAIL_EVERY; in
            // between, the stream sleeps instead of waking for every batch.
            let mut waiting: Vec<Arc<LineBatch>> = Vec::new();
            let mut last_sent = tokio::time::Instant::now() - TAIL_EVERY;
            loop {
                let send_at = last_sent + TAIL_EVERY;
                let (mut changed, mut lagged) = (false, false);
                tokio::select! {
                    message = live.recv(), if waiting.is_empty() => match message {
                        Some(RunMessage::Lines(batch)) if self.tail => waiting.push(batch),
                        Some(RunMessage::Lines(batch)) => self.forward(&batch).await?,
                        Some(RunMessage::Changed) => changed = true,
                        None => lagged = true,
                    },
                    _ = tokio::time::sleep_until(send_at), if !waiting.is_empty() => {
                        loop {
                            match live.try_recv() {
                                Ok(RunMessage::Lines(batch)) => waiting.push(batch),
                                Ok(RunMessage::Changed) => changed = true,
                                Err(dropped) => {
                                    lagged = dropped;
                                    break;
                                }
                            }
                        }
                        self.send_tail(&mut waiting).await?;
                        last_sent = tokio::time::Instant::now();
                    }
                    _ = keep_alive.tick() => self.send(Bytes::from_static(b": keep-alive\n\n")).await?,
                    _ = self.tx.closed() => return Err(Closed),
                    _ = self.app.shutdown.cancelled() => return Err(Closed),
                }
                if changed {
                    // Lines first: they were stored before the change.
                    self.send_tail(&mut waiting).await?;
                    self.sync().await?;
                    if self.finished {
                        // The runner stores every line before it finishes the run.
                        self.catch_up().await?;
                        return self.end().await;
                    }
                }
                if lagged {
                    // Dropped for lagging: start over from the store.
                    break;
                }
            }
        }
    }

    async fn send(&self, bytes: Bytes) -> Result<(), Closed> {
        tokio::select! {
            sent = self.tx.send(bytes) => sent.map_err(|_| Closed),
            _ = self.app.shutdown.cancelled() => Err(Closed),
        }
    }

    fn store_failed(&self, error: gantry_store::Error) -> Closed {
        tracing::error!(run_id = self.run_id, error = %error, "an event stream cannot read the store");
        Closed
    }

    async fn load(&self) -> Result<Run, Closed> {
        match self.app.store.get_run(self.run_id).await {
            Ok(Some(run)) => Ok(run),
            Ok(None) => Err(Closed),
            Err(e) => Err(self.store_failed(e)),
        }
    }

    /// Stages appear when the run's pipeline has been read; lines of a new stage start at 0.
    fn learn_stages(&mut self, run: &Run) {
        for stage in &run.stages {
            if !self.names.contains(&stage.name) {
                self.names.push(stage.name.clone());
            }
        }
        self.cursor.seqs.resize(self.names.len(), 0);
    }

    /// Sends what changed in the run since it was last sent: the whole run, or the stages that
    /// changed. Only the last event of a change carries the new state's hash, so a client that
    /// drops in between gets the whole run again.
    async fn sync(&mut self) -> Result<(), Closed> {
        let run = self.load().await?;
        self.learn_stages(&run);
        self.finished = run.status.is_finished();
        let view = run_view(&self.app, &run)
            .await
            .map_err(|e| self.store_failed(e))?;
        let state = fnv1a(&view.to_string());
        if state == self.cursor.state {
            self.sent = Some(view);
            return Ok(());
        }
        let changed = self.changed_stages(&view);
        if changed.is_empty() {
            self.cursor.state = state;
            let lines: serde_json::Map<String, Value> = self
                .names
                .iter()
                .zip(&self.cursor.seqs)
                .map(|(name, seq)| (name.clone(), json!(seq)))
                .collect();
            let data = json!({ "run": view, "lines": lines }).to_string();
            self.send(event(&self.cursor.to_string(), "run", &data))
                .await?;
        } else {
            let count = changed.len();
            for (i, stage) in changed.into_iter().enumerate() {
                if i + 1 == count {
                    self.cursor.state = state;
                }
                let data = json!({ "stage": stage }).to_string();
                self.send(event(&self.cursor.to_string(), "stage", &data))
                    .await?;
            }
        }
        self.sent = Some(view);
        Ok(())
    }

    /// The stages of `view` that differ from the run last sent, if only stages changed; empty
    /// when the whole run is to be sent.
    fn changed_stages(&self, view: &Value) -> Vec<Value> {
        let Some(sent) = &self.sent else {
            return Vec::new();
        };
        let without_stages = |v: &Value| {
            let mut v = v.clone();
            if let Some(object) = v.as_object_mut() {
                object.remove("stages");
            }
            v
        };
        if without_stages(sent) != without_stages(view) {
            return Vec::new();
        }
        let empty = Vec::new();
        let old = sent["stages"].as_array().unwrap_or(&empty);
        let new = view["stages"].as_array().unwrap_or(&empty);
        if new.len() != old.len() {
            return Vec::new();
        }
        new.iter()
            .zip(old)
            .filter(|(new, old)| new != old)
            .map(|(new, _)| new.clone())
            .collect()
    }

    /// Sends every stored line after the cursor, stage by stage.
    async fn catch_up(&mut self) -> Result<(), Closed> {
        for i in 0..self.names.len() {
            self.catch_up_stage(i).await?;
        }
        Ok(())
    }

    async fn catch_up_stage(&mut self, i: usize) -> Result<(), Closed> {
        if self.tail {
            let last = self
                .app
                .store
                .last_log_seq(self.run_id, &self.names[i])
                .await
                .map_err(|e| self.store_failed(e))?;
            let skip_to = last - TAIL_LINES as i64;
            self.cursor.seqs[i] = self.cursor.seqs[i].max(skip_to);
        }
        loop {
            let lines = self
                .app
                .store
                .read_logs(self.run_id, &self.names[i], self.cursor.seqs[i], PAGE)
                .await
                .map_err(|e| self.store_failed(e))?;
            let Some(last) = lines.last() else {
                return Ok(());
            };
            self.cursor.seqs[i] = last.seq;
            self.send_lines(lines_event(&self.names[i], &lines)).await?;
            if (lines.len() as i64) < PAGE {
                return Ok(());
            }
        }
    }

    /// Sends a `lines` event made by [`lines_event`], ending it with the cursor as its id.
    async fn send_lines(&self, event: Bytes) -> Result<(), Closed> {
        self.send(event).await?;
        self.send(Bytes::from(format!("id: {}\n\n", self.cursor)))
            .await
    }

    /// Sends the lines of a live batch the client lacks, first filling any gap from the store.
    async fn forward(&mut self, batch: &LineBatch) -> Result<(), Closed> {
        if !self.names.contains(&batch.stage) {
            self.sync().await?;
        }
        let Some(i) = self.names.iter().position(|n| *n == batch.stage) else {
            return Ok(());
        };
        if batch.first > self.cursor.seqs[i] + 1 {
            self.catch_up_stage(i).await?;
        }
        let have = self.cursor.seqs[i];
        if batch.last <= have {
            return Ok(());
        }
        self.cursor.seqs[i] = batch.last;
        if batch.first == have + 1 {
            self.send_lines(batch.event()).await
        } else {
            let rest: Vec<&LogLine> = batch.lines.iter().filter(|l| l.seq > have).collect();
            self.send_lines(lines_event(&batch.stage, &rest)).await
        }
    }

    /// Tail mode: sends, per stage, the last [`TAIL_LINES`] new lines of the waiting batches.
    /// Lines before them are skipped; the client reads them from the lines endpoint if it wants.
    async fn send_tail(&mut self, waiting: &mut Vec<Arc<LineBatch>>) -> Result<(), Closed> {
        let batches = std::mem::take(waiting);
        for i in 0..self.names.len() {
            let have = self.cursor.seqs[i];
            // A fast stage's newest batch alone fills the tail: send its shared event.
            let newest = batches.iter().rev().find(|b| b.stage == self.names[i]);
            if let Some(batch) = newest
                && batch.tail_first() > have
                && batch.last - batch.tail_first() + 1 == TAIL_LINES as i64
            {
                self.cursor.seqs[i] = batch.last;
                self.send_lines(batch.tail_event()).await?;
                continue;
            }
            let mut lines: Vec<&LogLine> = batches
                .iter()
                .filter(|b| b.stage == self.names[i] && b.last > have)
                .flat_map(|b| b.lines.iter().filter(|l| l.seq > have))
                .collect();
            let Some(last) = lines.last().map(|l| l.seq) else {
                continue;
            };
            lines.drain(..lines.len().saturating_sub(TAIL_LINES));
            self.cursor.seqs[i] = last;
            self.send_lines(lines_event(&self.names[i], &lines)).await?;
        }
        Ok(())
    }

    async fn end(&self) -> Result<(), Closed> {
        let status = self
            .sent
            .as_ref()
            .and_then(|v| v.get("status").cloned())
            .unwrap_or_default();
        let data = json!({ "status": status }).to_string();
        self.send(event(&self.cursor.to_string(), "end", &data))
            .await
    }
}

/// `GET /api/v1/events`: the runs list. Events `runs` (the latest runs; replace what you have)
/// and `run` (one run was created or changed). Ids are `EPOCH.N`: the N-th change since this
/// server process started.
pub async fn list_events(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|id| id.split_once('.'))
        .filter(|(epoch, _)| *epoch == app.hub.epoch())
        .and_then(|(_, seq)| seq.parse::<u64>().ok());
    let (tx, rx) = mpsc::channel(8);
    let stream = ListStream { app, tx };
    tokio::spawn(async move {
        let _ = stream.stream(resumed).await;
    });
    event_stream(rx)
}

struct ListStream {
    app: Arc<App>,
    tx: mpsc::Sender<Bytes>,
}

impl ListStream {
    async fn send(&self, bytes: Bytes) -> Result<(), Closed> {
        tokio::select! {
            sent = self.tx.send(bytes) => sent.map_err(|_| Closed),
            _ = self.app.shutdown.cancelled() => Err(Closed),
        }
    }

    fn id(&self, seq: u64) -> String {
        format!("{}.{seq}", self.app.hub.epoch())
    }

    async fn stream(&self, resumed: Option<u64>) -> Result<(), Closed> {
        self.send(Bytes::from(format!("retry: {RETRY_MS}\n\n")))
            .await?;
        let mut sent = resumed;
        let mut keep_alive =
            tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
        loop {
            let (mut live, now) = self.app.hub.subscribe_list();
            match sent.and_then(|seq| self.app.hub.changes_since(seq)) {
                Some(changes) => {
                    // Each changed run once, at its last change.
                    let mut last: Vec<(u64, i64)> = Vec::new();
                    for change in changes.iter().rev() {
                        if !last.iter().any(|(_, id)| *id == change.run_id) {
                            last.push((change.seq, change.run_id));
                        }
                    }
                    last.reverse();
                    for (seq, run_id) in last {
                        self.send_run(seq, run_id).await?;
                        sent = Some(seq);
                    }
                }
                None => {
                    self.send_snapshot(now).await?;
                    sent = Some(now);
                }
            }
            loop {
                tokio::select! {
                    change = live.recv() => match change {
                        Some(change) if Some(change.seq) <= sent => {}
                        Some(change) => {
                            self.send_run(change.seq, change.run_id).await?;
                            sent = Some(change.seq);
                        }
                        None => break,
                    },
                    _ = keep_alive.tick() => self.send(Bytes::from_static(b": keep-alive\n\n")).await?,
                    _ = self.tx.closed() => return Err(Closed),
                    _ = self.app.shutdown.cancelled() => return Err(Closed),
                }
            }
        }
    }

    async fn send_run(&self, seq: u64, run_id: i64) -> Result<(), Closed> {
        let run = match self.app.store.get_run(run_id).await {
            Ok(Some(run)) => run,
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::error!(run_id, error = %e, "the runs event stream cannot read a run");
                return Err(Closed);
            }
        };
        let data = json!({ "run": run }).to_string();
        self.send(event(&self.id(seq), "run", &data)).await
    }

    async fn send_snapshot(&self, seq: u64) -> Result<(), Closed> {
        let filter = gantry_store::RunFilter {
            project: None,
            status: None,
            limit: SNAPSHOT_RUNS,
        };
        let runs = match self.app.store.list_runs(&filter).await {
            Ok(runs) => runs,
            Err(e) => {
                tracing::error!(error = %e, "the runs event stream cannot list runs");
                return Err(Closed);
            }
        };
        let data = json!({ "runs": runs }).to_string();
        self.send(event(&self.id(seq), "runs", &data)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let cursor = Cursor {
            state: 0xdead_beef,
            seqs: vec![120, 0, 7],
        };
        assert_eq!(cursor.to_string(), "00000000deadbeef.120.0.7");
        assert_eq!(Cursor::parse(&cursor.to_string()), Some(cursor));
        assert_eq!(
            Cursor::parse("0"),
            Some(Cursor {
                state: 0,
                seqs: vec![]
            })
        );
        for bad in ["", "zz.1", "1.-3", "1.x", "1..2"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
