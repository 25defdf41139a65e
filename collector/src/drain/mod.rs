//! The drain barrier: "is every line of this task delivered?", asked by the task's companion
//! shim before it lets the task end.
//!
//! A drain names no task: the task is the caller's own, found from the kernel's peer
//! credentials on the companion socket (`crate::control::companion`), so a shim can drain
//! only its own task. It waits in two phases, each idempotent (a shim whose connection broke
//! asks again, and a restarted daemon answers from what it rediscovers):
//!
//! 1. `exited`: every other container of the task has exited. The companion itself and any
//!    container labelled `collector.role=companion` are not waited for. The shim may name the
//!    containers it expects (from the task metadata endpoint); without names, at least one
//!    other container must have been seen, so a drain asked before the job started does not
//!    pass at once.
//! 2. `drained`: first every metric sample the daemon received so far is stored (the
//!    metrics store's barrier: the shim has flushed its relay before asking); then for each
//!    of those containers every log source is read to its end (its tailer finished), its last
//!    batch acknowledged by every sink (the delivery tap), and its checkpoint committed
//!    (read back from the state database, which also gives the final counts); then, with
//!    the S3 sink on, the task's archive is finished and its `_COMPLETE` marker is in S3.
//!
//! Progress is streamed as JSON lines so the shim can say what it is waiting for when its
//! deadline passes; the state of each task's last drain is in the live view (`inspect`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::batch::SourceKind;
use crate::control::{InventoryView, LiveContainer};
use crate::identify::{ContainerId, ContainerIdentity, Group, TaskId};
use crate::metrics::StoreBarrier;
use crate::ship::s3::ArchiveHandle;
use crate::state::{Lifecycle, SourceRecord, Store};

/// How often progress is re-evaluated (and a `waiting` line sent when it changed, or at
/// least every [`PROGRESS_EVERY`]).
const POLL: Duration = Duration::from_millis(100);
/// The longest silence on a drain stream: a `waiting` line at least this often, so the shim
/// knows the daemon is alive.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Which phase a drain call waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Every other container of the task has exited.
    Exited,
    /// Everything of the task is delivered (module docs).
    Drained,
}

/// Where one container of the task stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Expected by name, not seen on this host (yet).
    Unseen,
    /// Its process runs.
    Running,
    /// Exited; its files are being read to the end.
    Reading,
    /// Read to the end; its last batch is not acknowledged by every sink yet.
    Delivering,
    /// Acknowledged; its checkpoint is not committed yet.
    Committing,
    /// Every line read, delivered and committed.
    Done,
}

/// One container of the task in a progress or final line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Task definition container name (else Docker name).
    pub name: String,
    /// Full container id, once seen.
    pub container_id: Option<String>,
    /// Where it stands.
    pub state: MemberState,
    /// Its exit code, once exited (Docker's).
    pub exit_code: Option<i64>,
    /// Lines delivered and committed, over all its sources.
    pub lines: u64,
    /// Log file bytes those lines covered.
    pub bytes: u64,
    /// Bytes known lost (rotated away before they could be read).
    pub lost_bytes: u64,
    /// Rotated files deleted before they could be opened.
    pub lost_files: u64,
}

/// The task a drain is for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TaskRef {
    /// ECS task id.
    pub task_id: String,
    /// Task ARN, when known.
    pub task_arn: Option<String>,
    /// Cluster, when known.
    pub cluster: Option<String>,
    /// Task definition family, when known.
    pub family: Option<String>,
    /// Task definition revision, when known.
    pub revision: Option<u32>,
}

/// The state of a task's latest drain, for `inspect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainStatus {
    /// The phase asked for.
    pub phase: Phase,
    /// The caller (the companion's container).
    pub caller: String,
    /// When it was asked (RFC 3339).
    pub requested_at: String,
    /// `waiting`, `exited`, `drained`, `aborted` (the caller went away or the daemon stops).
    pub state: String,
    /// When it finished (RFC 3339).
    pub finished_at: Option<String>,
    /// The containers, as last evaluated.
    pub containers: Vec<Member>,
    /// The S3 archive: its manifest key once complete, else `pending`; none without S3.
    pub s3: Option<String>,
}

/// A drain call: the caller's task and container, what to wait for.
#[derive(Clone, Debug)]
pub struct DrainRequest {
    /// The caller's task.
    pub task: TaskRef,
    /// The caller's container (never waited for).
    pub caller: ContainerId,
    /// The caller's display name.
    pub caller_name: String,
    /// Names of the containers the caller expects (`None`: at least one must be seen).
    pub expect: Option<Vec<String>>,
    /// What to wait for.
    pub phase: Phase,
}

/// What the barrier reads; cheap to clone.
#[derive(Clone, Debug)]
pub struct DrainBarrier {
    view: InventoryView,
    /// A read-only connection: committed checkpoints and counters.
    store: Option<Store>,
    archive: Option<ArchiveHandle>,
    metrics: Option<StoreBarrier>,
    /// Batches waiting in sinks' disk buffers (`crate::ship::spill`): delivered only once
    /// sent from there.
    buffers: Vec<Arc<std::sync::atomic::AtomicU64>>,
}

/// What one evaluation found.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Evaluation {
    members: Vec<Member>,
    /// Some member was found or expected, and none runs or is unseen.
    exited: bool,
    /// `exited`, and every member is done.
    delivered: bool,
    /// An identity of the task (for the S3 unit), from a member.
    identity: Option<Arc<ContainerIdentity>>,
}

impl DrainBarrier {
    /// A barrier over the live view, the state database (read-only), the S3 archive and the
    /// metrics store, each when present.
    pub fn new(
        view: InventoryView,
        store: Option<Store>,
        archive: Option<ArchiveHandle>,
        metrics: Option<StoreBarrier>,
    ) -> Self {
        Self {
            view,
            store,
            archive,
            metrics,
            buffers: Vec::new(),
        }
    }

    /// Also waits for these disk buffers to be empty.
    pub fn with_buffers(mut self, buffers: Vec<Arc<std::sync::atomic::AtomicU64>>) -> Self {
        self.buffers = buffers;
        self
    }

    /// Batches waiting in the sinks' disk buffers.
    fn buffered(&self) -> u64 {
        self.buffers
            .iter()
            .map(|g| g.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }

    /// Runs a drain, sending JSON lines into `out` until the phase is reached (then a final
    /// `exited` or `drained` line), the caller leaves (`out` closes) or `stop`.
    pub async fn run(&self, req: DrainRequest, out: mpsc::Sender<Bytes>, stop: CancellationToken) {
        let started = Instant::now();
        let requested_at = rfc3339(SystemTime::now());
        let mut status = DrainStatus {
            phase: req.phase,
            caller: req.caller.to_string(),
            requested_at,
            state: "waiting".to_owned(),
            finished_at: None,
            containers: Vec::new(),
            s3: self.archive.as_ref().map(|_| "pending".to_owned()),
        };
        info!(task_id = %req.task.task_id, caller = %req.caller_name, phase = ?req.phase, "Drain asked.");
        let head = serde_json::json!({
            "task": req.task,
            "caller": {"container_id": req.caller.as_str(), "name": req.caller_name},
            "collector": {"instance": crate::instance::id()},
        });
        if !send(&out, &head).await {
            return;
        }
        if req.phase == Phase::Drained
            && let Some(m) = &self.metrics
            && !m.wait().await
        {
            warn!(task_id = %req.task.task_id, "Metrics store stopped during a drain.");
        }
        let mut last_sent: Option<(Vec<Member>, Instant)> = None;
        let mut end_requested = false;
        loop {
            let ev = self.evaluate(&req);
            status.containers = ev.members.clone();
            let buffered = self.buffered();
            let mut done = match req.phase {
                Phase::Exited => ev.exited,
                Phase::Drained => ev.delivered && buffered == 0,
            };
            let mut s3_answer = serde_json::Value::Null;
            if done
                && req.phase == Phase::Drained
                && let Some(archive) = &self.archive
            {
                let identity = ev
                    .identity
                    .clone()
                    .unwrap_or_else(|| Arc::new(identity_of_task(&req.task, req.caller.clone())));
                match archive.completed(&identity) {
                    Some(c) => {
                        status.s3 = Some(c.manifest.clone());
                        s3_answer = serde_json::json!({
                            "location": archive.unit_prefix(&identity),
                            "manifest": c.manifest,
                            "chunks": c.chunks,
                            "completed_at": c.completed_at,
                        });
                    }
                    None => {
                        if !end_requested {
                            archive.request_end(identity);
                            end_requested = true;
                        }
                        done = false;
                    }
                }
            }
            if done {
                let (state, key) = match req.phase {
                    Phase::Exited => ("exited", "exited"),
                    Phase::Drained => ("drained", "drained"),
                };
                status.state = state.to_owned();
                status.finished_at = Some(rfc3339(SystemTime::now()));
                self.view.record_drain(&req.task.task_id, status.clone());
                let elapsed_ms = started.elapsed().as_millis() as u64;
                let body = match req.phase {
                    Phase::Exited => serde_json::json!({ key: {
                        "containers": ev.members, "elapsed_ms": elapsed_ms,
                    }}),
                    Phase::Drained => serde_json::json!({ key: {
                        "containers": ev.members, "s3": s3_answer, "elapsed_ms": elapsed_ms,
                    }}),
                };
                let (lines, bytes): (u64, u64) = ev
                    .members
                    .iter()
                    .fold((0, 0), |(l, b), m| (l + m.lines, b + m.bytes));
                info!(task_id = %req.task.task_id, phase = ?req.phase, lines, bytes, elapsed_ms, "Drain answered.");
                send(&out, &body).await;
                return;
            }
            self.view.record_drain(&req.task.task_id, status.clone());
            let due = match &last_sent {
                None => true,
                Some((members, at)) => *members != ev.members || at.elapsed() >= PROGRESS_EVERY,
            };
            if due {
                let line = serde_json::json!({"waiting": {
                    "phase": req.phase,
                    "containers": ev.members,
                    "s3": status.s3,
                    "buffered_batches": buffered,
                }});
                if !send(&out, &line).await {
                    break;
                }
                last_sent = Some((ev.members, Instant::now()));
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = out.closed() => break,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
        status.state = "aborted".to_owned();
        status.finished_at = Some(rfc3339(SystemTime::now()));
        self.view.record_drain(&req.task.task_id, status);
        info!(task_id = %req.task.task_id, phase = ?req.phase, "Drain left before its answer (caller gone or daemon stopping).");
    }

    fn evaluate(&self, req: &DrainRequest) -> Evaluation {
        let members: Vec<LiveContainer> = self
            .view
            .containers()
            .into_iter()
            .filter(|c| {
                c.identity.container_id != req.caller
                    && !c.identity.is_companion()
                    && c.identity
                        .ecs
                        .as_ref()
                        .and_then(|e| e.task_id.as_ref())
                        .is_some_and(|t| t.as_str() == req.task.task_id)
            })
            .collect();
        let sources = |id: &ContainerId| -> Vec<SourceRecord> {
            self.store
                .as_ref()
                .and_then(|s| s.sources(id.as_str()).ok())
                .unwrap_or_default()
        };
        evaluate(&members, req.expect.as_deref(), &self.view, &sources)
    }
}

/// The pure part of [`DrainBarrier::evaluate`]: members, the names expected, the view's
/// delivered positions and the committed sources.
fn evaluate(
    members: &[LiveContainer],
    expect: Option<&[String]>,
    view: &InventoryView,
    committed: &dyn Fn(&ContainerId) -> Vec<SourceRecord>,
) -> Evaluation {
    let mut out = Vec::new();
    let mut seen_names = BTreeSet::new();
    for c in members {
        let name = c.identity.display_name().to_owned();
        seen_names.insert(name.clone());
        let records = committed(&c.identity.container_id);
        let mut m = Member {
            name,
            container_id: Some(c.identity.container_id.to_string()),
            state: MemberState::Done,
            exit_code: c.docker.as_ref().and_then(|d| d.state.exit_code),
            lines: 0,
            bytes: 0,
            lost_bytes: 0,
            lost_files: 0,
        };
        // The container's own lines: its output and declared files (not the collector's
        // lifecycle record or EMF lines about it).
        for r in records
            .iter()
            .filter(|r| r.key.ends_with("/json") || r.key.contains("/file:"))
        {
            m.lines += r.counters.lines;
            m.bytes += r.counters.bytes;
            m.lost_bytes += r.counters.lost_bytes;
            m.lost_files += r.counters.lost_files;
        }
        m.state = member_state(c, view, &records);
        if m.state == MemberState::Running {
            m.exit_code = None;
        }
        out.push(m);
    }
    for name in expect.unwrap_or_default() {
        if !seen_names.contains(name) {
            out.push(Member {
                name: name.clone(),
                container_id: None,
                state: MemberState::Unseen,
                exit_code: None,
                lines: 0,
                bytes: 0,
                lost_bytes: 0,
                lost_files: 0,
            });
        }
    }
    out.sort_by(|a, b| {
        a.name
            .cmp(&b.name)
            .then(a.container_id.cmp(&b.container_id))
    });
    // Without names, a drain before any other container was seen waits for one.
    let something = !out.is_empty() || expect.is_some();
    let exited = something
        && out
            .iter()
            .all(|m| !matches!(m.state, MemberState::Running | MemberState::Unseen));
    let delivered = exited && out.iter().all(|m| m.state == MemberState::Done);
    Evaluation {
        members: out,
        exited,
        delivered,
        identity: members.first().map(|c| c.identity.clone()),
    }
}

fn member_state(
    c: &LiveContainer,
    view: &InventoryView,
    committed: &[SourceRecord],
) -> MemberState {
    if c.lifecycle == Lifecycle::Running {
        return MemberState::Running;
    }
    // A json-file container always has its output source; until its tailer is started the
    // container is not read yet.
    let json_file = c
        .docker
        .as_ref()
        .and_then(|d| d.log_driver.as_deref())
        .is_none_or(|d| d == "json-file");
    let has_output = c
        .sources
        .values()
        .any(|s| matches!(s.info.kind, SourceKind::ContainerOutput));
    if (json_file && !has_output) || c.sources.values().any(|s| s.active) {
        return MemberState::Reading;
    }
    let mut state = MemberState::Done;
    for (key, s) in &c.sources {
        let delivered = view.delivered(key);
        // The output file always exists, so its tailer always sends a last batch; a declared
        // glob that never matched a file has none to send.
        let last_delivered = match s.info.kind {
            SourceKind::ContainerOutput => delivered.as_ref().is_some_and(|d| d.last),
            _ => delivered.as_ref().is_none_or(|d| d.last),
        };
        if !last_delivered {
            return MemberState::Delivering;
        }
        if let Some(d) = delivered {
            let record = committed.iter().find(|r| r.key == *key);
            let in_store = record
                .and_then(|r| r.checkpoint.as_ref())
                .is_some_and(|cp| cp.fingerprint.same_inode(d.dev, d.ino) && cp.offset >= d.offset);
            if !in_store {
                state = MemberState::Committing;
            }
        }
    }
    state
}

/// A stand-in identity for a task none of whose containers is in the view (a drain after a
/// restart that rediscovered nothing): enough for its S3 unit.
fn identity_of_task(task: &TaskRef, caller: ContainerId) -> ContainerIdentity {
    let mut identity = ContainerIdentity::new(caller);
    let task_id = TaskId::parse(&task.task_id);
    if let Some(t) = &task_id {
        identity.group = Group::EcsTask { task_id: t.clone() };
    }
    identity.ecs = Some(crate::identify::EcsTask {
        task_id,
        cluster: task.cluster.clone(),
        family: task.family.clone(),
        revision: task.revision,
        ..Default::default()
    });
    identity
}

async fn send(out: &mpsc::Sender<Bytes>, v: &serde_json::Value) -> bool {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    out.send(Bytes::from(b)).await.is_ok()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::batch::{Batch, SourceInfo};
    use crate::state::{Checkpoint, CheckpointUpdate, SourceCounters};
    use crate::tail::LogRecords;
    use crate::tail::fingerprint::Fingerprint;

    const TASK: &str = "0123456789abcdef0123456789abcdef";

    fn member(c: char, name: &str, labels: &[(&str, &str)]) -> Arc<ContainerIdentity> {
        let mut i = ContainerIdentity::new(ContainerId::parse(&c.to_string().repeat(64)).unwrap());
        let task_id = TaskId::parse(TASK).unwrap();
        i.group = Group::EcsTask {
            task_id: task_id.clone(),
        };
        i.ecs = Some(crate::identify::EcsTask {
            task_id: Some(task_id),
            container_name: Some(name.to_owned()),
            ..Default::default()
        });
        i.labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Arc::new(i)
    }

    fn fp() -> Fingerprint {
        Fingerprint {
            dev: 1,
            ino: 2,
            head_len: 0,
            head_hash: 0,
        }
    }

    fn batch(identity: &Arc<ContainerIdentity>, offset: u64, last: bool) -> Batch {
        let info = Arc::new(SourceInfo::container_output(identity.container_id.clone()));
        Batch {
            source: info.clone(),
            identity: identity.clone(),
            records: LogRecords::new(),
            ack: CheckpointUpdate {
                source: info.key.clone(),
                container_id: identity.container_id.to_string(),
                checkpoint: Checkpoint {
                    fingerprint: fp(),
                    path: "/x.log".into(),
                    offset,
                },
                counters: SourceCounters::default(),
            },
            last,
        }
    }

    fn committed(identity: &Arc<ContainerIdentity>, offset: u64, lines: u64) -> SourceRecord {
        SourceRecord {
            key: format!("{}/json", identity.container_id),
            path: "/x.log".into(),
            counters: SourceCounters {
                lines,
                bytes: offset,
                ..Default::default()
            },
            updated_ms: 0,
            checkpoint: Some(Checkpoint {
                fingerprint: fp(),
                path: "/x.log".into(),
                offset,
            }),
        }
    }

    fn request(
        view: &InventoryView,
        caller: &Arc<ContainerIdentity>,
        expect: Option<&[&str]>,
    ) -> (DrainBarrier, DrainRequest) {
        let barrier = DrainBarrier::new(view.clone(), None, None, None);
        let req = DrainRequest {
            task: TaskRef {
                task_id: TASK.to_owned(),
                ..Default::default()
            },
            caller: caller.container_id.clone(),
            caller_name: "collector-companion".into(),
            expect: expect.map(|e| e.iter().map(|s| (*s).to_owned()).collect()),
            phase: Phase::Drained,
        };
        (barrier, req)
    }

    /// A job container moves through every state to done; the caller and another companion
    /// are never waited for; counts come from the committed record.
    #[test]
    fn a_member_is_done_only_when_read_delivered_and_committed() {
        let view = InventoryView::new();
        let shim = member('c', "collector-companion", &[]);
        let other_shim = member('d', "shim2", &[("collector.role", "companion")]);
        let job = member('a', "job", &[]);
        for i in [&shim, &other_shim, &job] {
            view.publish_container(i.clone(), Lifecycle::Running, Some(1), None, vec![]);
        }
        let (barrier, req) = request(&view, &shim, None);
        let store_says = std::cell::RefCell::new(Vec::<SourceRecord>::new());
        let eval = || {
            let members: Vec<LiveContainer> = view
                .containers()
                .into_iter()
                .filter(|c| c.identity.container_id != req.caller && !c.identity.is_companion())
                .collect();
            evaluate(&members, req.expect.as_deref(), &view, &|_| {
                store_says.borrow().clone()
            })
        };
        let states = |e: &Evaluation| e.members.iter().map(|m| m.state).collect::<Vec<_>>();
        // The barrier's own filter agrees with the one above.
        assert_eq!(barrier.evaluate(&req).members.len(), 1);

        let e = eval();
        assert_eq!(
            (states(&e), e.exited, e.delivered),
            (vec![MemberState::Running], false, false)
        );

        view.publish_container(job.clone(), Lifecycle::Exited, None, None, vec![]);
        assert_eq!(
            states(&eval()),
            [MemberState::Reading],
            "no output source started yet"
        );
        let info = Arc::new(SourceInfo::container_output(job.container_id.clone()));
        view.source_started(info.clone(), PathBuf::from("/x.log"));
        let e = eval();
        assert_eq!((states(&e), e.exited), (vec![MemberState::Reading], true));

        view.record_delivery(&batch(&job, 10, false));
        view.source_finished(&job.container_id, &info.key);
        assert_eq!(
            states(&eval()),
            [MemberState::Delivering],
            "last batch not delivered"
        );

        view.record_delivery(&batch(&job, 20, true));
        store_says.borrow_mut().push(committed(&job, 10, 1));
        assert_eq!(states(&eval()), [MemberState::Committing]);

        store_says.borrow_mut()[0] = committed(&job, 20, 2);
        let e = eval();
        assert_eq!((states(&e), e.delivered), (vec![MemberState::Done], true));
        assert_eq!((e.members[0].lines, e.members[0].bytes), (2, 20));
    }

    /// Named containers not seen yet hold the drain; with no names and nobody else seen, the
    /// drain waits; with an empty list it passes at once.
    #[test]
    fn expected_names_and_the_empty_task() {
        let view = InventoryView::new();
        let shim = member('c', "collector-companion", &[]);
        view.publish_container(shim.clone(), Lifecycle::Running, Some(1), None, vec![]);

        let (barrier, req) = request(&view, &shim, None);
        let e = barrier.evaluate(&req);
        assert!(!e.exited && e.members.is_empty());

        let (barrier, req) = request(&view, &shim, Some(&["job", "sidecar"]));
        let e = barrier.evaluate(&req);
        assert_eq!(
            e.members
                .iter()
                .map(|m| (m.name.as_str(), m.state))
                .collect::<Vec<_>>(),
            [
                ("job", MemberState::Unseen),
                ("sidecar", MemberState::Unseen)
            ]
        );
        assert!(!e.exited);

        let (barrier, req) = request(&view, &shim, Some(&[]));
        let e = barrier.evaluate(&req);
        assert!(e.exited && e.delivered);
    }

    /// The stream: a head line, `waiting` lines while the job runs, then `exited`.
    #[tokio::test]
    async fn the_exited_phase_streams_until_the_job_exits() {
        let view = InventoryView::new();
        let shim = member('c', "collector-companion", &[]);
        let job = member('a', "job", &[]);
        view.publish_container(job.clone(), Lifecycle::Running, Some(2), None, vec![]);
        let (barrier, mut req) = request(&view, &shim, None);
        req.phase = Phase::Exited;
        let (tx, mut rx) = mpsc::channel(16);
        let run = tokio::spawn(async move { barrier.run(req, tx, CancellationToken::new()).await });
        let line = |b: Bytes| serde_json::from_slice::<serde_json::Value>(&b).unwrap();
        let head = line(rx.recv().await.unwrap());
        assert_eq!(head["task"]["task_id"], TASK);
        let waiting = line(rx.recv().await.unwrap());
        assert_eq!(waiting["waiting"]["containers"][0]["state"], "running");
        view.publish_container(job.clone(), Lifecycle::Exited, None, None, vec![]);
        let last = loop {
            let l = line(rx.recv().await.unwrap());
            if l.get("waiting").is_none() {
                break l;
            }
        };
        assert_eq!(last["exited"]["containers"][0]["name"], "job");
        run.await.unwrap();
        assert!(rx.recv().await.is_none());
        assert_eq!(view.drain(TASK).unwrap().state, "exited");
    }
}
