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
    /// Stop the tailer, do these (writes and rotations) while no tailer runs, start a new one
    /// from the committed checkpoints: the collector down while Docker rotates.
    Down(Vec<Op>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (1usize..400).prop_map(Op::Write),
        2 => Just(Op::Rotate),
        1 => Just(Op::CatchUpAndTruncate),
        2 => Just(Op::Pause),
        1 => Just(Op::Restart),
        1 => prop::collection::vec(
            prop_oneof![(1usize..200).prop_map(Op::Write), Just(Op::Rotate)],
            1..5
        )
        .prop_map(Op::Down),
    ]
}

/// Appends `n` numbered lines to `path`, recording them in `written`.
fn write_lines(path: &Path, written: &mut Vec<String>, n: usize) {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    let mut buf = String::new();
    for _ in 0..n {
        let line = format!("line {} {}", written.len(), "x".repeat(written.len() % 97));
        buf.push_str(&line);
        buf.push('\n');
        written.push(line);
    }
    f.write_all(buf.as_bytes()).unwrap();
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
            left_at: None,
            budget: None,
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
                Op::Write(n) => write_lines(&h.path, &mut written, n),
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
                Op::Restart | Op::Down(_) => {
                    stop.cancel();
                    tailer.await.unwrap();
                    drop(tx);
                    consumer.await.unwrap();
                    if let Op::Down(while_down) = op {
                        for op in while_down {
                            match op {
                                Op::Write(n) => write_lines(&h.path, &mut written, n),
                                Op::Rotate => rotate(&h.path),
                                other => unreachable!("not generated while down: {other:?}"),
                            }
                        }
                    }
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

/// The collector is down while the file is rotated twice: the file between the one of the
/// checkpoint and the current one is found by name and read (seen lost once under load).
#[test]
fn two_rotations_while_down_lose_nothing() {
    run_case(vec![
        Op::Write(10),
        Op::Pause,
        Op::Down(vec![Op::Rotate, Op::Write(53), Op::Rotate, Op::Write(230)]),
        Op::Write(5),
    ])
    .unwrap();
    run_case(vec![
        Op::Rotate,
        Op::Down(vec![Op::Write(53), Op::Rotate, Op::Write(230), Op::Rotate]),
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

/// A tailer started again in the same process (the container was seen running again while
/// its tailer finished) resumes where the first one left off, not at the committed
/// checkpoint: batches still in flight (sent, not committed) are not read twice.
#[test]
fn a_tailer_started_again_resumes_after_the_batches_in_flight() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let h = Harness::new(dir.path());
        let mut f = File::create(&h.path).unwrap();
        for i in 0..100 {
            writeln!(f, "line {i}").unwrap();
        }
        let slot: Arc<std::sync::Mutex<Option<crate::state::Checkpoint>>> =
            Arc::new(std::sync::Mutex::new(None));
        let start = |tx| {
            let spec = SourceSpec {
                info: h.info.clone(),
                path: h.path.clone(),
                format: LogFormat::Plain,
                identity: h.identity_tx.subscribe(),
                running: h.running_tx.subscribe(),
                new_files: None,
                quiet_tick: None,
                left_at: Some(slot.clone()),
                budget: None,
            };
            let tailer = Tailer::new(spec, h.settings.clone(), h.store.clone(), tx).unwrap();
            tokio::spawn(tailer.run(CancellationToken::new()))
        };
        // The first tailer reads everything and finishes; nothing is committed (in flight).
        h.running_tx.send_replace(false);
        let (tx, mut rx) = mpsc::channel(64);
        assert_eq!(start(tx).await.unwrap(), TailOutcome::Finished);
        let mut first = 0;
        while let Ok(b) = rx.try_recv() {
            first += b.records.len();
        }
        assert_eq!(first, 100);
        // Started again: only what was written since.
        writeln!(f, "line 100").unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        assert_eq!(start(tx).await.unwrap(), TailOutcome::Finished);
        let mut again = Vec::new();
        while let Ok(b) = rx.try_recv() {
            again.extend(
                b.records
                    .iter()
                    .map(|r| String::from_utf8(r.message.to_vec()).unwrap()),
            );
        }
        assert_eq!(again, ["line 100"]);
    });
}

/// The case proptest found once on a loaded machine (load average 10): the 53 lines written
/// between the first two rotations were missing. Not reproduced since, with this sequence
/// run 40 times under load, nor with the rotations done before the tailer first runs; kept
/// as a fixed case because a changed generator no longer replays the saved seed.
#[test]
fn rotations_before_the_first_pass_then_restarts() {
    run_case(vec![
        Op::Rotate,
        Op::Write(53),
        Op::Rotate,
        Op::Write(230),
        Op::Pause,
        Op::Restart,
        Op::Write(45),
        Op::Restart,
        Op::Restart,
        Op::Write(46),
        Op::Write(188),
        Op::CatchUpAndTruncate,
        Op::Write(9),
    ])
    .unwrap();
}

/// Sinks that hold every batch (slow, or down without a disk buffer): the sources together
/// hold no more than the memory budget, whatever their number, and once the sinks take the
/// batches every line arrives once, in order.
#[tokio::test]
async fn batches_held_by_the_sinks_stay_within_the_memory_budget() {
    use super::budget::MemoryBudget;

    const SOURCES: usize = 6;
    let dirs: Vec<_> = (0..SOURCES).map(|_| tempfile::tempdir().unwrap()).collect();
    let harnesses: Vec<_> = dirs.iter().map(|d| Harness::new(d.path())).collect();
    let mut written = vec![Vec::new(); SOURCES];
    for (h, w) in harnesses.iter().zip(&mut written) {
        File::create(&h.path).unwrap();
        write_lines(&h.path, w, 1500);
    }
    let budget_bytes = 8 * harnesses[0].settings.read_bytes;
    let budget = MemoryBudget::new(budget_bytes);
    let stop = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(1000);
    let mut tasks = Vec::new();
    for (i, h) in harnesses.iter().enumerate() {
        let spec = SourceSpec {
            info: Arc::new(SourceInfo::declared_file(
                ContainerId::parse(&format!("{i:x}").repeat(64)).unwrap(),
                PathBuf::from("/app.log"),
            )),
            path: h.path.clone(),
            format: LogFormat::Plain,
            identity: h.identity_tx.subscribe(),
            running: h.running_tx.subscribe(),
            new_files: None,
            quiet_tick: None,
            left_at: None,
            budget: Some(budget.clone()),
        };
        let tailer = Tailer::new(spec, h.settings.clone(), h.store.clone(), tx.clone()).unwrap();
        tasks.push(tokio::spawn(tailer.run(stop.clone())));
    }
    drop(tx);

    // Hold everything until nothing more comes: the budget is spent.
    let mut held = Vec::new();
    while let Ok(Some(b)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        held.push(b);
    }
    let holding: usize = held.iter().map(|b| b.records.held_bytes()).sum();
    assert!(!held.is_empty());
    assert!(
        holding <= budget_bytes,
        "{} batches hold {holding} bytes, over the budget of {budget_bytes}",
        held.len()
    );
    let lines: usize = held.iter().map(|b| b.records.len()).sum();
    assert!(
        lines < 1500 * SOURCES,
        "the budget did not hold the readers back"
    );

    // The sinks take them: everything arrives.
    let mut delivered = vec![Vec::new(); SOURCES];
    let take = |b: Batch, delivered: &mut Vec<Vec<String>>| {
        let i = usize::from_str_radix(&b.source.container_id.as_str()[..1], 16).unwrap();
        for r in b.records.iter() {
            delivered[i].push(String::from_utf8(r.message.to_vec()).unwrap());
        }
    };
    for b in held {
        take(b, &mut delivered);
    }
    while delivered.iter().map(Vec::len).sum::<usize>() < 1500 * SOURCES {
        let b = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the readers resume once the batches are dropped")
            .unwrap();
        take(b, &mut delivered);
    }
    assert_eq!(delivered, written);
    assert_eq!(budget.available(), budget_bytes);
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
}
