//! Model-based tests of the tailer: random writes, rename rotations, truncations and
//! collector restarts against the real filesystem, checked against the list of lines written.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::format::LogFormat;
use super::tailer::{SourceSpec, TailOutcome, Tailer};
use crate::batch::{Batch, SourceInfo};
use crate::config::TailConfig;
use crate::identify::{ContainerId, ContainerIdentity};
use crate::state::Store;

#[derive(Clone, Debug)]
enum Op {
    /// Append this many lines.
    Write(usize),
    /// Rename-rotate: `f.N` -> `f.N+1`, `f` -> `f.1`, new empty `f` (Docker max-size).
    Rotate,
    /// Wait until everything written was delivered, then truncate to zero (copytruncate).
    CatchUpAndTruncate,
    /// Let the tailer run a little.
    Pause,
    /// Stop the tailer (as a crash would: no final flush) and start a new one from the
    /// committed checkpoints.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (1usize..400).prop_map(Op::Write),
        2 => Just(Op::Rotate),
        1 => Just(Op::CatchUpAndTruncate),
        2 => Just(Op::Pause),
        1 => Just(Op::Restart),
    ]
}

struct Harness {
    path: PathBuf,
    store: Store,
    settings: TailConfig,
    running_tx: watch::Sender<bool>,
    identity_tx: watch::Sender<Arc<ContainerIdentity>>,
    info: Arc<SourceInfo>,
}

impl Harness {
    fn new(dir: &Path) -> Self {
        let id = ContainerId::parse(&"c".repeat(64)).unwrap();
        let settings = TailConfig {
            poll_interval: Duration::from_millis(5),
            exit_settle: Duration::from_millis(50),
            read_bytes: 4096,
            max_line_bytes: 1024,
            ..TailConfig::default()
        };
        Self {
            path: dir.join("app.log"),
            store: Store::in_memory().unwrap(),
            settings,
            running_tx: watch::channel(true).0,
            identity_tx: watch::channel(Arc::new(ContainerIdentity::new(id.clone()))).0,
            info: Arc::new(SourceInfo::declared_file(id, PathBuf::from("/app.log"))),
        }
    }

    fn spawn(
        &self,
        tx: mpsc::Sender<Batch>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<TailOutcome> {
        let spec = SourceSpec {
            info: self.info.clone(),
            path: self.path.clone(),
            format: LogFormat::Plain,
            identity: self.identity_tx.subscribe(),
            running: self.running_tx.subscribe(),
            new_files: None,
            quiet_tick: None,
        };
        let tailer = Tailer::new(spec, self.settings.clone(), self.store.clone(), tx).unwrap();
        tokio::spawn(tailer.run(stop))
    }
}

/// Receives batches, records their lines and commits their checkpoints, like the shipper.
async fn consume(
    mut rx: mpsc::Receiver<Batch>,
    store: Store,
    delivered: Arc<std::sync::Mutex<Vec<String>>>,
) {
    while let Some(b) = rx.recv().await {
        let mut d = delivered.lock().unwrap();
        for r in b.records.iter() {
            d.push(String::from_utf8(r.message.to_vec()).unwrap());
        }
        drop(d);
        store.checkpoint(&[b.ack]).unwrap();
    }
}

fn rotate(path: &Path) {
    let name = |i: u32| PathBuf::from(format!("{}.{i}", path.display()));
    let mut n = 1;
    while name(n).exists() {
        n += 1;
    }
    for i in (1..n).rev() {
        std::fs::rename(name(i), name(i + 1)).unwrap();
    }
    if path.exists() {
        std::fs::rename(path, name(1)).unwrap();
    }
    File::create(path).unwrap();
}

async fn wait_for(delivered: &Arc<std::sync::Mutex<Vec<String>>>, n: usize) {
    for _ in 0..2000 {
        if delivered.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!(
        "timed out waiting for {n} lines, have {}",
        delivered.lock().unwrap().len()
    );
}

fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let h = Harness::new(dir.path());
        File::create(&h.path).unwrap();
        let delivered = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut written: Vec<String> = Vec::new();
        let mut restarts = 0;
        let (mut tx, rx) = mpsc::channel(4);
        let mut consumer = tokio::spawn(consume(rx, h.store.clone(), delivered.clone()));
        let mut stop = CancellationToken::new();
        let mut tailer = h.spawn(tx.clone(), stop.clone());
        for op in ops {
            match op {
                Op::Write(n) => {
                    let mut f = OpenOptions::new().append(true).open(&h.path).unwrap();
                    let mut buf = String::new();
                    for _ in 0..n {
                        let line =
                            format!("line {} {}", written.len(), "x".repeat(written.len() % 97));
                        buf.push_str(&line);
                        buf.push('\n');
                        written.push(line);
                    }
                    f.write_all(buf.as_bytes()).unwrap();
                }
                Op::Rotate => rotate(&h.path),
                Op::CatchUpAndTruncate => {
                    wait_for(&delivered, written.len()).await;
                    // Let the checkpoint of the last batch land before the file shrinks.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    OpenOptions::new()
                        .write(true)
                        .truncate(true)
                        .open(&h.path)
                        .unwrap();
                }
                Op::Pause => tokio::time::sleep(Duration::from_millis(15)).await,
                Op::Restart => {
                    stop.cancel();
                    tailer.await.unwrap();
                    drop(tx);
                    consumer.await.unwrap();
                    // Everything delivered so far was checkpointed by the consumer; a new
                    // tailer must resume exactly there.
                    restarts += 1;
                    let (ntx, nrx) = mpsc::channel(4);
                    tx = ntx;
                    consumer = tokio::spawn(consume(nrx, h.store.clone(), delivered.clone()));
                    stop = CancellationToken::new();
                    tailer = h.spawn(tx.clone(), stop.clone());
                }
            }
        }
        h.running_tx.send_replace(false);
        let outcome = tokio::time::timeout(Duration::from_secs(20), tailer)
            .await
            .expect("tailer finishes")
            .unwrap();
        prop_assert_eq!(outcome, TailOutcome::Finished);
        drop(tx);
        consumer.await.unwrap();
        let got = delivered.lock().unwrap().clone();
        // Every line once, in order: the consumer committed each batch before the next, so a
        // restart resumes exactly after the last delivered line.
        prop_assert_eq!(got.len(), written.len(), "restarts: {}", restarts);
        prop_assert_eq!(got, written);
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 50, ..ProptestConfig::default() })]

    #[test]
    fn every_line_once_in_order(ops in prop::collection::vec(op(), 1..25)) {
        run_case(ops)?;
    }
}

#[test]
fn rotation_burst_while_behind_loses_nothing() {
    // Three rotations before the tailer gets to run: the rotated files are found by name.
    run_case(vec![
        Op::Write(50),
        Op::Rotate,
        Op::Write(50),
        Op::Rotate,
        Op::Write(50),
        Op::Rotate,
        Op::Write(5),
    ])
    .unwrap();
}

#[test]
fn restart_resumes_at_checkpoint_across_rotation() {
    run_case(vec![
        Op::Write(300),
        Op::Pause,
        Op::Rotate,
        Op::Write(20),
        Op::Restart,
        Op::Write(7),
        Op::Rotate,
        Op::Restart,
    ])
    .unwrap();
}
