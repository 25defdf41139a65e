//! SIGTERM and SIGINT, counted: the first starts the drain deadline, the second ends the
//! companion at once.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// How many termination signals have arrived.
#[derive(Debug, Clone)]
pub struct Signals {
    rx: watch::Receiver<u32>,
}

impl Signals {
    /// Listens for SIGTERM and SIGINT on the current runtime.
    ///
    /// # Errors
    /// When the signal handlers cannot be installed.
    pub fn listen() -> std::io::Result<Self> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let (tx, rx) = watch::channel(0);
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                tx.send_modify(|n| *n += 1);
                tracing::info!(signal = name, count = *tx.borrow(), "Termination signal.");
            }
        });
        Ok(Self { rx })
    }

    /// Signals counted by hand (tests): send to `tx` to count one more.
    pub fn manual() -> (watch::Sender<u32>, Self) {
        let (tx, rx) = watch::channel(0);
        (tx, Self { rx })
    }

    /// Waits until `n` signals have arrived (forever when the sender is gone).
    pub async fn wait(&mut self, n: u32) {
        if self.rx.wait_for(|count| *count >= n).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
