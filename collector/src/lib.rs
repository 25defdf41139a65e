//! The host-level log and metric collector for containers on AWS ECS.
//!
//! One daemon per host finds every container, knows its ECS task, tails its log files and
//! ships every line, committing read offsets only after delivery.
//!
//! # Layout
//! In data-flow order:
//! - [`discover`]: which containers exist (procfs, cgroupfs + inotify, Docker root, Docker
//!   events), at start and live.
//! - [`identify`]: cgroup id <-> container id <-> ECS task, from cgroup paths, Docker's files,
//!   labels and the ECS agent.
//! - [`inventory`]: the one owner of "what runs here"; starts and stops tailers.
//! - [`tail`]: reads log files across rotation and truncation, frames and decodes lines into
//!   [`tail::LogRecord`]s, in batches that carry the offsets they cover.
//! - [`metrics`]: Graphite (TCP, UDP, unix socket) and StatsD ingest, each sample attributed
//!   to the task that sent it by the connection; stored per task and forwarded to carbon.
//! - [`death`]: how each run of a container ended (eBPF or Docker), and the final record the
//!   sinks get about it.
//! - [`ship`]: sinks behind one trait (local directory, discard, CloudWatch Logs, S3); acks
//!   move checkpoints.
//! - [`drain`]: the barrier a task's companion shim waits on: every line of the task read,
//!   delivered and committed, its metrics stored, its S3 archive complete.
//! - [`state`]: SQLite: checkpoints and the history of containers and tasks.
//! - [`config`]: the TOML configuration, its defaults and validation.
//! - [`app`]: wires the stages together and shuts them down in order.
//! - [`internal_events`]: self-telemetry (logs + counters).
//! - [`control`]: the control API on a unix socket: live view, `/metrics`, `inspect` and
//!   `tail` endpoints; and the companion API (the drain barrier) on a socket of its own.
//! - [`inspect`]: `collector inspect` and `collector tail`: from a PID, container, cgroup or
//!   task to the whole chain, from the daemon or, without it, from the host's files.
//! - [`taskdef`]: `collector taskdef`: the daemon's ECS task definition and service, and the
//!   companion shim added to a user's task definition.
//!
//! `fuzzing` (hidden) exposes the little the fuzz targets in `fuzz/` need of private code.

pub mod app;
pub mod batch;
pub mod config;
pub mod control;
pub mod death;
pub mod discover;
pub mod drain;
#[doc(hidden)]
pub mod fuzzing;
pub mod identify;
pub mod inspect;
pub mod instance;
pub mod internal_events;
pub mod inventory;
pub mod metrics;
pub mod ship;
pub mod state;
pub mod tail;
pub mod taskdef;
pub mod telemetry;

#[cfg(test)]
mod test_support;
