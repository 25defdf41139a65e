//! The EMF writer: each interval, the samples each container sent become CloudWatch Embedded
//! Metric Format lines in that container's `metrics` source, delivered by the shipper like
//! its own lines. The CloudWatch sink puts them in the container's stream (with the default
//! templates, the same stream as its stdout), where CloudWatch Logs extracts the metrics;
//! the local and S3 sinks keep them as `metrics.log`.
//!
//! One line per container and interval holds at most [`MAX_METRICS_PER_LINE`] paths, each
//! with the interval's values as an array of at most [`MAX_VALUES_PER_METRIC`] (the newest),
//! the limits of the specification
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>).
//! Dimensions: `ClusterName`, `TaskDefinitionFamily`, `ContainerName` (those known); the
//! task id and ARN go along as properties. Unattributed samples have no stream: not written.
//!
//! Bounded: at most [`MAX_PENDING_VALUES`] values wait for the next line; more are dropped
//! and counted (`emf_dropped`), as are paths that cannot be metric names. A crash loses the
//! interval not yet written (the samples stay in the per-task store).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::events::{self, COUNTERS};
use super::{Chunk, Origin};
use crate::batch::{Batch, SourceInfo, SourceKind};
use crate::control::InventoryView;
use crate::identify::{ContainerId, ContainerIdentity, EcsTask, Group};
use crate::state::{Checkpoint, CheckpointUpdate, SourceCounters};
use crate::tail::fingerprint::Fingerprint;
use crate::tail::{LogRecord, LogRecords};

/// Metrics in one EMF directive (the specification's limit).
pub const MAX_METRICS_PER_LINE: usize = 100;
/// Values of one metric in one line (the specification's limit).
pub const MAX_VALUES_PER_METRIC: usize = 100;
/// Values waiting for the next interval, in all.
pub const MAX_PENDING_VALUES: usize = 200_000;
/// Longest metric name CloudWatch accepts.
const MAX_NAME_BYTES: usize = 255;
/// Root members of a line that are not metrics.
const RESERVED: &[&str] = &[
    "_aws",
    "ClusterName",
    "TaskDefinitionFamily",
    "ContainerName",
    "TaskId",
    "TaskArn",
];

/// One container's samples of the interval.
#[derive(Debug)]
struct Pending {
    origin: Arc<Origin>,
    paths: BTreeMap<String, VecDeque<f64>>,
}

/// Samples per container, bounded.
#[derive(Debug, Default)]
struct Aggregate {
    by_container: HashMap<ContainerId, Pending>,
    values: usize,
}

impl Aggregate {
    /// Takes a chunk's samples in; counts what is dropped.
    fn add(&mut self, chunk: &Chunk) {
        let Some(id) = chunk.origin.container_id.clone() else {
            return;
        };
        let pending = self.by_container.entry(id).or_insert_with(|| Pending {
            origin: chunk.origin.clone(),
            paths: BTreeMap::new(),
        });
        let mut dropped = 0;
        for s in &chunk.samples {
            if s.path.len() > MAX_NAME_BYTES || RESERVED.contains(&s.path.as_str()) {
                dropped += 1;
                continue;
            }
            let values = match pending.paths.get_mut(&s.path) {
                Some(v) => v,
                None => {
                    if self.values >= MAX_PENDING_VALUES {
                        dropped += 1;
                        continue;
                    }
                    pending.paths.entry(s.path.clone()).or_default()
                }
            };
            if values.len() == MAX_VALUES_PER_METRIC {
                // The newest values are kept.
                values.pop_front();
                dropped += 1;
            } else if self.values >= MAX_PENDING_VALUES {
                dropped += 1;
                continue;
            } else {
                self.values += 1;
            }
            values.push_back(s.value);
        }
        if dropped > 0 {
            events::add(&COUNTERS.emf_dropped, dropped);
        }
    }

    fn take(&mut self) -> HashMap<ContainerId, Pending> {
        self.values = 0;
        std::mem::take(&mut self.by_container)
    }
}

/// The EMF lines of one container's interval, `time_ms` their timestamp.
fn lines(
    origin: &Origin,
    paths: &BTreeMap<String, VecDeque<f64>>,
    namespace: &str,
    time_ms: u64,
) -> Vec<String> {
    let cluster = origin
        .cluster
        .as_deref()
        .map(|c| c.rsplit('/').next().unwrap_or(c).to_owned());
    let dims: Vec<(&str, Option<String>)> = vec![
        ("ClusterName", cluster),
        ("TaskDefinitionFamily", origin.family.clone()),
        ("ContainerName", origin.container_name.clone()),
    ];
    let dims: Vec<(&str, String)> = dims
        .into_iter()
        .filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (k, v)))
        .collect();
    let names: Vec<&str> = paths.keys().map(String::as_str).collect();
    names
        .chunks(MAX_METRICS_PER_LINE)
        .map(|group| {
            let mut root = Map::new();
            root.insert(
                "_aws".into(),
                json!({
                    "Timestamp": time_ms,
                    "CloudWatchMetrics": [{
                        "Namespace": namespace,
                        "Dimensions": [dims.iter().map(|(k, _)| *k).collect::<Vec<_>>()],
                        "Metrics": group.iter().map(|n| json!({"Name": n})).collect::<Vec<_>>(),
                    }],
                }),
            );
            for (k, v) in &dims {
                root.insert((*k).into(), Value::String(v.clone()));
            }
            if let Some(t) = &origin.task_id {
                root.insert("TaskId".into(), Value::String(t.as_str().to_owned()));
            }
            if let Some(a) = &origin.task_arn {
                root.insert("TaskArn".into(), Value::String(a.clone()));
            }
            for name in group {
                let values = &paths[*name];
                let v = if values.len() == 1 {
                    json!(values[0])
                } else {
                    json!(values.iter().collect::<Vec<_>>())
                };
                root.insert((*name).to_owned(), v);
            }
            Value::Object(root).to_string()
        })
        .collect()
}

/// An identity for a sender the inventory does not know (yet): enough for the sinks' names.
fn identity_of(origin: &Origin, id: &ContainerId) -> ContainerIdentity {
    let mut identity = ContainerIdentity::new(id.clone());
    if let Some(t) = &origin.task_id {
        identity.group = Group::EcsTask { task_id: t.clone() };
        identity.ecs = Some(EcsTask {
            task_id: Some(t.clone()),
            cluster: origin.cluster.clone(),
            family: origin.family.clone(),
            revision: origin.revision,
            container_name: origin.container_name.clone(),
            ..Default::default()
        });
    }
    identity
}

/// The batch of a container's lines: source `<id>/metrics`, its checkpoint the time (not a
/// file, like the lifecycle source).
fn batch(
    identity: Arc<ContainerIdentity>,
    lines: &[String],
    time: SystemTime,
    time_ms: u64,
) -> Batch {
    let id = identity.container_id.clone();
    let key = format!("{id}/metrics");
    let stamp = humantime::format_rfc3339_nanos(time).to_string();
    let mut records = LogRecords::new();
    let mut bytes = 0;
    for l in lines {
        bytes += l.len() as u64;
        records.push_copy(LogRecord {
            time: stamp.as_bytes(),
            stream: None,
            message: l.as_bytes(),
            split: false,
        });
    }
    Batch {
        source: Arc::new(SourceInfo {
            key: key.clone(),
            container_id: id.clone(),
            kind: SourceKind::Metrics,
        }),
        identity,
        records,
        ack: CheckpointUpdate {
            source: key,
            container_id: id.to_string(),
            checkpoint: Checkpoint {
                fingerprint: Fingerprint::NOT_A_FILE,
                path: "(collector metrics)".to_owned(),
                offset: time_ms,
            },
            counters: SourceCounters {
                lines: lines.len() as u64,
                bytes,
                ..SourceCounters::default()
            },
        },
        last: false,
    }
}

/// Writes each interval until `stop` (then writes what is pending).
pub async fn run(
    namespace: String,
    interval: Duration,
    mut rx: mpsc::Receiver<Arc<Chunk>>,
    view: InventoryView,
    out: mpsc::Sender<Batch>,
    stop: CancellationToken,
) {
    let mut agg = Aggregate::default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let last = tokio::select! {
            c = rx.recv() => match c {
                Some(c) => { agg.add(&c); continue; }
                None => true,
            },
            _ = tick.tick() => false,
            _ = stop.cancelled() => true,
        };
        let now = SystemTime::now();
        let time_ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for (id, pending) in agg.take() {
            let text = lines(&pending.origin, &pending.paths, &namespace, time_ms);
            if text.is_empty() {
                continue;
            }
            let identity = view
                .container(&id)
                .map(|c| c.identity)
                .unwrap_or_else(|| Arc::new(identity_of(&pending.origin, &id)));
            let n = text.len() as u64;
            if out
                .send(batch(identity, &text, now, time_ms))
                .await
                .is_err()
            {
                debug!("The shipper stopped; EMF lines not written.");
                return;
            }
            events::add(&COUNTERS.emf_lines, n);
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Sample;

    fn origin() -> Arc<Origin> {
        let mut identity = ContainerIdentity::new(ContainerId::parse(&"a".repeat(64)).unwrap());
        let task = crate::identify::TaskId::parse("0123456789abcdef0123456789abcdef").unwrap();
        identity.ecs = Some(EcsTask {
            task_id: Some(task),
            cluster: Some("arn:aws:ecs:eu-west-1:123456789012:cluster/prod".into()),
            family: Some("web".into()),
            container_name: Some("app".into()),
            ..Default::default()
        });
        Arc::new(Origin::of_identity(&identity, "peer_credentials"))
    }

    fn chunk(samples: &[(&str, f64)]) -> Chunk {
        Chunk {
            origin: origin(),
            samples: samples
                .iter()
                .map(|(p, v)| Sample {
                    path: (*p).to_owned(),
                    value: *v,
                    timestamp: 0,
                })
                .collect(),
            rejected: 0,
            rate_limited: 0,
        }
    }

    /// A line is valid EMF: the directive names every metric, each a root member with its
    /// values, with the task's dimensions; a reserved name is not a metric.
    #[test]
    fn lines_follow_the_specification() {
        let mut agg = Aggregate::default();
        agg.add(&chunk(&[
            ("app.requests", 1.0),
            ("app.latency", 0.5),
            ("app.requests", 2.0),
        ]));
        agg.add(&chunk(&[("ContainerName", 9.0)]));
        let pending = agg.take();
        let p = pending.values().next().unwrap();
        let text = lines(&p.origin, &p.paths, "ECS/Tasks", 1_700_000_000_000);
        assert_eq!(text.len(), 1);
        let v: Value = serde_json::from_str(&text[0]).unwrap();
        let d = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000u64);
        assert_eq!(d["Namespace"], "ECS/Tasks");
        assert_eq!(
            d["Dimensions"],
            json!([["ClusterName", "TaskDefinitionFamily", "ContainerName"]])
        );
        assert_eq!(
            d["Metrics"],
            json!([{"Name": "app.latency"}, {"Name": "app.requests"}])
        );
        assert_eq!(v["app.requests"], json!([1.0, 2.0]));
        assert_eq!(v["app.latency"], json!(0.5));
        assert_eq!(v["ClusterName"], "prod");
        assert_eq!(v["ContainerName"], "app");
        assert_eq!(v["TaskId"], "0123456789abcdef0123456789abcdef");
    }

    /// Over 100 paths, several lines; over 100 values, the newest 100; the pending total is
    /// bounded.
    #[test]
    fn limits_hold() {
        let mut agg = Aggregate::default();
        let many: Vec<(String, f64)> = (0..250).map(|i| (format!("p{i:03}"), 1.0)).collect();
        let refs: Vec<(&str, f64)> = many.iter().map(|(p, v)| (p.as_str(), *v)).collect();
        agg.add(&chunk(&refs));
        let values: Vec<(&str, f64)> = (0..150).map(|i| ("busy", f64::from(i))).collect();
        agg.add(&chunk(&values));
        let pending = agg.take();
        let p = pending.values().next().unwrap();
        let text = lines(&p.origin, &p.paths, "N", 1);
        assert_eq!(text.len(), 3, "251 metrics in lines of at most 100");
        let busy = text
            .iter()
            .map(|t| serde_json::from_str::<Value>(t).unwrap())
            .find(|v| v.get("busy").is_some())
            .unwrap();
        let arr = busy["busy"].as_array().unwrap();
        assert_eq!((arr.len(), arr[0].as_f64()), (100, Some(50.0)));

        let mut agg = Aggregate::default();
        for i in 0..(MAX_PENDING_VALUES / 100 + 10) {
            let v: Vec<(String, f64)> = (0..100).map(|j| (format!("q{i}.{j}"), 1.0)).collect();
            let r: Vec<(&str, f64)> = v.iter().map(|(p, x)| (p.as_str(), *x)).collect();
            agg.add(&chunk(&r));
        }
        assert_eq!(agg.values, MAX_PENDING_VALUES);
    }

    /// The writer sends one batch per container and interval into the shipper's channel,
    /// in the container's `metrics` source.
    #[tokio::test]
    async fn the_writer_sends_a_batch_per_interval() {
        let (tx, rx) = mpsc::channel(4);
        let (out, mut batches) = mpsc::channel(4);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            "N".into(),
            Duration::from_secs(1),
            rx,
            InventoryView::new(),
            out,
            stop.clone(),
        ));
        tx.send(Arc::new(chunk(&[("x", 1.0)]))).await.unwrap();
        let b = tokio::time::timeout(Duration::from_secs(5), batches.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.source.kind, SourceKind::Metrics);
        assert_eq!(b.ack.source, format!("{}/metrics", "a".repeat(64)));
        assert_eq!(b.records.len(), 1);
        stop.cancel();
        task.await.unwrap();
    }
}
