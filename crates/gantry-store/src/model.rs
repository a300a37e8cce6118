//! The records the store keeps, as the rest of Gantry sees them: plain data, no database types.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::Error;

/// A GitHub webhook delivery to store. `guid` is the `X-GitHub-Delivery` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub guid: String,
    pub event: String,
    pub project: Option<String>,
    pub git_ref: Option<String>,
    pub after_sha: Option<String>,
    /// The request body, kept so a delivery can be processed again after a crash.
    pub payload: String,
}

/// A stored delivery, without its payload (see [`crate::Store::get_delivery_payload`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub id: i64,
    pub guid: String,
    pub event: String,
    pub project: Option<String>,
    pub git_ref: Option<String>,
    pub after_sha: Option<String>,
    /// What the server did with the delivery; `None` while that is not decided yet.
    pub outcome: Option<String>,
    pub run_id: Option<i64>,
    pub received_at: DateTime<Utc>,
}

/// What [`crate::Store::record_delivery`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryInsert {
    /// The delivery is new and now stored.
    Inserted(Delivery),
    /// A delivery with the same guid was stored before (GitHub redelivered it); nothing changed.
    Duplicate(Delivery),
}

impl DeliveryInsert {
    pub fn delivery(&self) -> &Delivery {
        match self {
            DeliveryInsert::Inserted(delivery) | DeliveryInsert::Duplicate(delivery) => delivery,
        }
    }

    pub fn is_duplicate(&self) -> bool {
        matches!(self, DeliveryInsert::Duplicate(_))
    }
}

/// A run to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRun {
    pub project: String,
    pub event: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    /// May be empty for a manual run until [`crate::Store::set_run_commit`] fills it in.
    pub commit_sha: String,
    pub commit_message: Option<String>,
    pub delivery_id: Option<i64>,
    pub rerun_of: Option<i64>,
}

/// A run with its stages in pipeline order. Serializes to the API's run object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    pub id: i64,
    pub project: String,
    /// The run's number within its project: #1, #2, …
    pub number: i64,
    pub status: RunStatus,
    pub event: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub commit_sha: String,
    pub commit_message: Option<String>,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub rerun_of: Option<i64>,
    /// The delivery that made this run; not part of the API's run object.
    #[serde(skip)]
    pub delivery_id: Option<i64>,
    pub stages: Vec<StageRecord>,
}

/// Which runs [`crate::Store::list_runs`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFilter {
    pub project: Option<String>,
    pub status: Option<RunStatus>,
    /// At most this many runs (none if zero or negative).
    pub limit: i64,
}

/// A stage of a run, as written by the engine and as listed in a [`Run`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageRecord {
    /// The stage's place in the pipeline; stages are listed by it. Not part of the API's object.
    #[serde(skip)]
    pub position: i64,
    pub name: String,
    pub status: StageStatus,
    pub attempt: i64,
    pub exit_code: Option<i64>,
    pub reason: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One line of a stage's log. `seq` numbers a stage's lines from 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub seq: i64,
    /// `stdout`, `stderr` or `system` (see [`LOG_STREAMS`]).
    pub stream: String,
    pub at: DateTime<Utc>,
    pub text: String,
}

/// The values [`LogLine::stream`] may take.
pub const LOG_STREAMS: [&str; 3] = ["stdout", "stderr", "system"];

/// Defines a status enum stored and serialized as its lowercase name.
macro_rules! status_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal, finished: [$($finished:ident),*],
        { $($variant:ident => $text:literal),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($variant),*
        }

        impl $name {
            /// Every status, in the order of the lifecycle.
            pub const ALL: &[$name] = &[$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),*
                }
            }

            /// Whether this status is final: nothing changes it any more.
            pub fn is_finished(self) -> bool {
                matches!(self, $($name::$finished)|*)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self, Error> {
                match s {
                    $($text => Ok($name::$variant),)*
                    _ => Err(Error::Invalid {
                        what: $what,
                        value: s.to_owned(),
                        expected: &[$($text),*],
                    }),
                }
            }
        }
    };
}

status_enum! {
    /// Where a run is in its life: queued → running → one of the finished statuses.
    RunStatus, "run status", finished: [Success, Failure, Cancelled, Error],
    {
        Queued => "queued",
        Running => "running",
        Success => "success",
        Failure => "failure",
        Cancelled => "cancelled",
        Error => "error",
    }
}

status_enum! {
    /// Where a stage is in its life: pending → running → one of the finished statuses.
    StageStatus, "stage status", finished: [Success, Failure, Skipped, Cancelled],
    {
        Pending => "pending",
        Running => "running",
        Success => "success",
        Failure => "failure",
        Skipped => "skipped",
        Cancelled => "cancelled",
    }
}
