//! SIGINT, SIGTERM and SIGHUP, counted from the start of a `run`, `resume` or `retry`. The
//! runner listens for them itself once it submits; these cover what comes before — discovery
//! and preflight — where a signal would otherwise end the process at once, with no summary and
//! no exit code, or (once a handler exists) go unheard.
//!
//! This module only counts signals; what a signal stops is decided where it is awaited.

/// The command's signals: clone freely, every clone sees the same count.
#[derive(Clone)]
pub struct Signals(tokio::sync::watch::Receiver<u32>);

impl Signals {
    pub fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let (tx, rx) = tokio::sync::watch::channel(0u32);
        tokio::spawn(async move {
            loop {
                let got = tokio::select! {
                    got = int.recv() => got,
                    got = term.recv() => got,
                    got = hup.recv() => got,
                };
                if got.is_none() {
                    return;
                }
                tx.send_modify(|n| *n += 1);
            }
        });
        Ok(Signals(rx))
    }

    /// Resolves once a signal was received (at once if one already was); never otherwise.
    pub async fn first(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|n| *n > 0).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
