//! Gantry's durable state: webhook deliveries, the run queue, stages, log lines and sealed secrets.
//!
//! [`Store`] is the whole interface; its methods take and return the plain types of [`model`], so
//! nothing outside this crate sees sqlx or SQL. Today the store is SQLite (WAL, one queued writer
//! connection, a few reader connections); the schema lives in `migrations/sqlite/` at the
//! repository root and is applied when the store opens.

mod deliveries;
mod deploys;
mod error;
mod graph;
mod log_search;
mod logs;
pub mod model;
mod rows;
mod runs;
mod secrets;
mod sessions;
mod store;

pub use deploys::{Deployment, NewDeployment};
pub use error::{Error, Result};
pub use model::{
    Delivery, DeliveryInsert, LOG_STREAMS, LogLine, NewDelivery, NewRun, Run, RunFilter, RunStatus,
    StageRecord, StageStatus,
};
pub use secrets::{SealedSecret, SecretInfo};
pub use store::Store;
