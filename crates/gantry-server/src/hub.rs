//! The in-process fan-out of run events to live viewers (the SSE streams of `sse`).
//!
//! The runner stores every stage change and log line first and publishes it here second, so
//! whatever a subscriber did not get from the hub is in the store. Publishing never waits: every
//! subscriber has a bounded queue (in messages and in bytes), and one whose queue is full is
//! dropped from the hub. Its stream then catches up from the store and subscribes again. A slow
//! viewer can therefore neither slow a stage down nor grow the server's memory.
//!
//! A batch of lines becomes its SSE event once, however many viewers receive it, and in their
//! streams' tasks rather than the runner's: each stream adds only its own `id:` line, and the
//! bytes are shared, never copied.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use axum::body::Bytes;
use gantry_store::LogLine;
use tokio::sync::mpsc;

/// Messages a subscriber may have waiting before it counts as lagging.
const QUEUE_MESSAGES: usize = 1024;
/// Bytes of lines a subscriber may have waiting before it counts as lagging.
const QUEUE_BYTES: usize = 4 << 20;
/// How many runs-list changes are kept for clients that reconnect.
const RECENT_CHANGES: usize = 4096;

/// A message about one run.
#[derive(Clone)]
pub enum RunMessage {
    /// New lines of a stage, already stored.
    Lines(Arc<LineBatch>),
    /// The run or one of its stages changed in the store.
    Changed,
}

/// Lines a tail-mode stream (see `sse`) sends per stage at most at a time: more than a screen.
pub const TAIL_LINES: usize = 200;

/// Consecutive lines of one stage of a run.
pub struct LineBatch {
    pub stage: String,
    pub first: i64,
    pub last: i64,
    pub lines: Vec<LogLine>,
    /// About the bytes `lines` take, for the subscribers' queue budgets.
    size: usize,
    /// The SSE event of all the lines, made by the first stream that sends it whole.
    event: OnceLock<Bytes>,
    /// The SSE event of the last [`TAIL_LINES`] lines, made by the first tail-mode stream.
    tail: OnceLock<Bytes>,
}

impl LineBatch {
    /// The SSE event of these lines, without its id (see [`lines_event`]); serialized once,
    /// outside the runner, however many streams send it.
    pub fn event(&self) -> Bytes {
        self.event
            .get_or_init(|| lines_event(&self.stage, &self.lines))
            .clone()
    }

    /// The seq of the first of the last [`TAIL_LINES`] lines.
    pub fn tail_first(&self) -> i64 {
        self.first.max(self.last - TAIL_LINES as i64 + 1)
    }

    /// The SSE event of the last [`TAIL_LINES`] lines, serialized once like [`LineBatch::event`].
    pub fn tail_event(&self) -> Bytes {
        self.tail
            .get_or_init(|| {
                let skip = self.lines.len().saturating_sub(TAIL_LINES);
                lines_event(&self.stage, &&self.lines[skip..])
            })
            .clone()
    }
}

/// An SSE `lines` event for `stage`, up to the `id:` line and the blank line that end it (the id
/// may follow the data: a client takes the fields of an event in any order).
pub fn lines_event(stage: &str, lines: &impl serde::Serialize) -> Bytes {
    let mut event = b"event: lines\ndata: {\"stage\":".to_vec();
    let written = serde_json::to_writer(&mut event, stage).and_then(|()| {
        event.extend_from_slice(b",\"lines\":");
        serde_json::to_writer(&mut event, lines)
    });
    if let Err(e) = written {
        // Strings and numbers always serialize; keep the stream well-formed regardless.
        tracing::error!(stage, error = %e, "cannot serialize log lines");
        return Bytes::from_static(b"event: lines\ndata: {\"stage\":\"\",\"lines\":[]}\n");
    }
    event.extend_from_slice(b"}\n");
    Bytes::from(event)
}

/// A change in the runs list: run `run_id` was created or changed status. `seq` counts the
/// changes since the server started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunChange {
    pub seq: u64,
    pub run_id: i64,
}

/// What a message costs a subscriber's queue, in bytes.
pub trait Weight {
    fn weight(&self) -> usize;
}

impl Weight for RunMessage {
    fn weight(&self) -> usize {
        match self {
            RunMessage::Lines(batch) => batch.size,
            RunMessage::Changed => 0,
        }
    }
}

impl Weight for RunChange {
    fn weight(&self) -> usize {
        0
    }
}

struct Subscriber<T> {
    tx: mpsc::Sender<T>,
    queued: Arc<AtomicUsize>,
}

impl<T: Weight + Clone> Subscriber<T> {
    /// Queues `message`, or says the subscriber is gone or lagging and must be dropped.
    fn offer(&self, message: &T) -> bool {
        let weight = message.weight();
        let queued = self.queued.fetch_add(weight, Ordering::AcqRel);
        // An empty queue takes any message, so one huge batch cannot lock a viewer out for good.
        if queued > 0 && queued + weight > QUEUE_BYTES {
            return false;
        }
        self.tx.try_send(message.clone()).is_ok()
    }
}

/// The receiving end of a subscription. When [`Subscription::recv`] returns `None`, the hub has
/// dropped the subscriber (it lagged, or the server is stopping): catch up from the store.
pub struct Subscription<T> {
    rx: mpsc::Receiver<T>,
    queued: Arc<AtomicUsize>,
}

impl<T: Weight> Subscription<T> {
    pub async fn recv(&mut self) -> Option<T> {
        let message = self.rx.recv().await?;
        self.queued.fetch_sub(message.weight(), Ordering::AcqRel);
        Some(message)
    }

    /// A message if one is waiting; `Err(true)` when the hub dropped the subscriber.
    pub fn try_recv(&mut self) -> Result<T, bool> {
        match self.rx.try_recv() {
            Ok(message) => {
                self.queued.fetch_sub(message.weight(), Ordering::AcqRel);
                Ok(message)
            }
            Err(mpsc::error::TryRecvError::Empty) => Err(false),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(true),
        }
    }
}

fn subscribe<T>() -> (Subscriber<T>, Subscription<T>) {
    let (tx, rx) = mpsc::channel(QUEUE_MESSAGES);
    let queued = Arc::new(AtomicUsize::new(0));
    (
        Subscriber {
            tx,
            queued: queued.clone(),
        },
        Subscription { rx, queued },
    )
}

#[derive(Default)]
struct RunsList {
    seq: u64,
    recent: VecDeque<RunChange>,
    subscribers: Vec<Subscriber<RunChange>>,
}

/// Live subscribers by run, and of the runs list.
pub struct Hub {
    runs: Mutex<HashMap<i64, Vec<Subscriber<RunMessage>>>>,
    list: Mutex<RunsList>,
    /// Names this server process in runs-list event ids: a change number means nothing to
    /// another process.
    epoch: String,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub::new()
    }
}

impl Hub {
    pub fn new() -> Hub {
        let mut bytes = [0u8; 4];
        let _ = getrandom::fill(&mut bytes);
        Hub {
            runs: Mutex::new(HashMap::new()),
            list: Mutex::new(RunsList::default()),
            epoch: hex::encode(bytes),
        }
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    fn runs(&self) -> MutexGuard<'_, HashMap<i64, Vec<Subscriber<RunMessage>>>> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn list(&self) -> MutexGuard<'_, RunsList> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes to the stage changes and lines of run `run_id`.
    pub fn subscribe_run(&self, run_id: i64) -> Subscription<RunMessage> {
        let (subscriber, subscription) = subscribe();
        let mut runs = self.runs();
        // Streams that ended leave closed senders behind; sweep them here rather than on a timer.
        runs.retain(|_, subscribers| {
            subscribers.retain(|s| !s.tx.is_closed());
            !subscribers.is_empty()
        });
        runs.entry(run_id).or_default().push(subscriber);
        subscription
    }

    /// Whether anyone watches run `run_id`.
    pub fn is_watched(&self, run_id: i64) -> bool {
        self.runs().contains_key(&run_id)
    }

    /// Publishes lines of a stage that are stored already. Costs nothing when nobody watches.
    /// Takes the lines out of `lines` only when someone watches: the runner's cost is a
    /// lookup, a sum and a queue push per subscriber.
    pub fn publish_lines(&self, run_id: i64, stage: &str, lines: &mut Vec<LogLine>) {
        let (Some(first), Some(last)) = (lines.first(), lines.last()) else {
            return;
        };
        if !self.is_watched(run_id) {
            return;
        }
        let (first, last) = (first.seq, last.seq);
        let size = lines.iter().map(|l| l.text.len() + 96).sum();
        let batch = RunMessage::Lines(Arc::new(LineBatch {
            stage: stage.to_owned(),
            first,
            last,
            lines: std::mem::take(lines),
            size,
            event: OnceLock::new(),
            tail: OnceLock::new(),
        }));
        self.publish(run_id, &batch);
    }

    /// Says that a stage of run `run_id` changed in the store.
    pub fn stage_changed(&self, run_id: i64) {
        self.publish(run_id, &RunMessage::Changed);
    }

    /// Says that run `run_id` was created or changed in the store (its status, its commit).
    pub fn run_changed(&self, run_id: i64) {
        self.publish(run_id, &RunMessage::Changed);
        let mut list = self.list();
        list.seq += 1;
        let change = RunChange {
            seq: list.seq,
            run_id,
        };
        if list.recent.len() == RECENT_CHANGES {
            list.recent.pop_front();
        }
        list.recent.push_back(change);
        list.subscribers.retain(|s| s.offer(&change));
    }

    fn publish(&self, run_id: i64, message: &RunMessage) {
        let mut runs = self.runs();
        if let Some(subscribers) = runs.get_mut(&run_id) {
            subscribers.retain(|s| s.offer(message));
            if subscribers.is_empty() {
                runs.remove(&run_id);
            }
        }
    }

    /// Subscribes to the runs list; also returns the number of the last change so far.
    pub fn subscribe_list(&self) -> (Subscription<RunChange>, u64) {
        let (subscriber, subscription) = subscribe();
        let mut list = self.list();
        list.subscribers.retain(|s| !s.tx.is_closed());
        list.subscribers.push(subscriber);
        (subscription, list.seq)
    }

    /// The changes after change `seq`, or `None` if they are no longer all remembered.
    pub fn changes_since(&self, seq: u64) -> Option<Vec<RunChange>> {
        let list = self.list();
        if seq > list.seq {
            return None;
        }
        let oldest = list.recent.front().map_or(list.seq + 1, |c| c.seq);
        if seq + 1 < oldest {
            return None;
        }
        Some(
            list.recent
                .iter()
                .filter(|c| c.seq > seq)
                .copied()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn lines(seqs: std::ops::RangeInclusive<i64>, text: &str) -> Vec<LogLine> {
        seqs.map(|seq| LogLine {
            seq,
            stream: "stdout".into(),
            at: Utc::now(),
            text: text.into(),
        })
        .collect()
    }

    #[tokio::test]
    async fn subscribers_get_lines_once_serialized() {
        let hub = Hub::new();
        let mut a = hub.subscribe_run(1);
        let mut b = hub.subscribe_run(1);
        hub.publish_lines(1, "test", &mut lines(1..=2, "hi"));
        hub.publish_lines(2, "test", &mut lines(1..=1, "other run"));
        for sub in [&mut a, &mut b] {
            let Some(RunMessage::Lines(batch)) = sub.recv().await else {
                panic!("expected lines");
            };
            assert_eq!(
                (batch.first, batch.last, batch.stage.as_str()),
                (1, 2, "test")
            );
            let event = batch.event();
            let event = String::from_utf8_lossy(&event);
            assert!(
                event.starts_with("event: lines\ndata: {\"stage\":\"test\",\"lines\":[{\"seq\":1,"),
                "{event}"
            );
            assert!(event.ends_with("}]}\n"), "{event}");
        }
    }

    #[tokio::test]
    async fn a_lagging_subscriber_is_dropped_and_the_publisher_never_waits() {
        let hub = Hub::new();
        let mut slow = hub.subscribe_run(1);
        let big = "x".repeat(64 * 1024);
        // Far more than the byte budget; publishing must neither block nor keep it all.
        for i in 0..200 {
            hub.publish_lines(1, "test", &mut lines(i + 1..=i + 1, &big));
        }
        let mut received = 0;
        while let Some(message) = slow.recv().await {
            assert!(matches!(message, RunMessage::Lines(_)));
            received += 1;
        }
        assert!(received < 200, "received {received}");
        assert!(received * big.len() <= QUEUE_BYTES + big.len());
        assert!(!hub.is_watched(1), "the lagging subscriber was removed");
    }

    #[tokio::test]
    async fn runs_list_changes_are_remembered_for_reconnects() {
        let hub = Hub::new();
        let (mut sub, last) = hub.subscribe_list();
        assert_eq!(last, 0);
        hub.run_changed(7);
        hub.run_changed(8);
        assert_eq!(sub.recv().await, Some(RunChange { seq: 1, run_id: 7 }));
        assert_eq!(
            hub.changes_since(1),
            Some(vec![RunChange { seq: 2, run_id: 8 }])
        );
        assert_eq!(hub.changes_since(2), Some(vec![]));
        assert_eq!(hub.changes_since(3), None, "a change from another process");
        for i in 0..RECENT_CHANGES as i64 {
            hub.run_changed(i);
        }
        assert_eq!(hub.changes_since(1), None, "forgotten");
    }
}
