//! The signals that stop a frontend: SIGTERM and SIGINT ask it to stop
//! (as a user would: unmount, stop serving), a second SIGINT abandons what
//! is not stored yet, SIGHUP is ignored (said in the log).
//!
//! [`Signals`] watches all three and counts SIGINTs; once the frontend has
//! stopped serving, [`Signals::keep_counting`] goes on counting them while
//! the final flush runs, and [`second_sigint`] is the `abandon` future
//! [`shutdown`](super::shutdown()) takes.

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

/// A signal that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// SIGTERM.
    Term,
    /// SIGINT; the number of SIGINTs so far, this one included.
    Int(u32),
    /// SIGHUP.
    Hup,
}

/// SIGTERM, SIGINT and SIGHUP, watched from the moment this is made (their
/// default action, ending the process, no longer applies).
#[derive(Debug)]
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    sigints: watch::Sender<u32>,
}

impl Signals {
    /// Starts watching; inside a tokio runtime. The error says the signals
    /// cannot be watched.
    pub fn new() -> Result<Signals, String> {
        let register = |kind: SignalKind| signal(kind).map_err(|e| format!("cannot watch for signals: {e}"));
        Ok(Signals {
            term: register(SignalKind::terminate())?,
            int: register(SignalKind::interrupt())?,
            hup: register(SignalKind::hangup())?,
            sigints: watch::channel(0).0,
        })
    }

    /// The next signal (cancel-safe: use it in `select!`).
    pub async fn recv(&mut self) -> Received {
        tokio::select! {
            Some(()) = self.term.recv() => Received::Term,
            Some(()) = self.int.recv() => {
                self.sigints.send_modify(|n| *n += 1);
                Received::Int(*self.sigints.borrow())
            }
            Some(()) = self.hup.recv() => Received::Hup,
        }
    }

    /// SIGINTs so far, now and as they come.
    pub fn sigints(&self) -> watch::Receiver<u32> {
        self.sigints.subscribe()
    }

    /// For the final flush, once serving has stopped: counts further
    /// SIGINTs in the background (each said in the log: a second one
    /// abandons) and returns the count, for [`second_sigint`].
    pub fn keep_counting(self) -> watch::Receiver<u32> {
        let Signals { mut int, sigints, .. } = self;
        let counted = sigints.subscribe();
        tokio::spawn(async move {
            while int.recv().await.is_some() {
                sigints.send_modify(|n| *n += 1);
                tracing::warn!(
                    "SIGINT received while storing data; a second SIGINT abandons what is not stored"
                );
            }
        });
        counted
    }
}

/// Completes once two SIGINTs in all have arrived: the user's "abandon".
pub async fn second_sigint(mut sigints: watch::Receiver<u32>) {
    // A dropped sender counts nothing more: then never complete.
    if sigints.wait_for(|n| *n >= 2).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn sigints_are_counted_and_the_second_abandons() {
        let (tx, rx) = watch::channel(0u32);
        let abandon = tokio::spawn(second_sigint(rx));
        tx.send_modify(|n| *n += 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!abandon.is_finished(), "one SIGINT does not abandon");
        tx.send_modify(|n| *n += 1);
        tokio::time::timeout(Duration::from_secs(5), abandon).await.unwrap().unwrap();
        // Without a sender, it never completes.
        let (tx, rx) = watch::channel(1u32);
        drop(tx);
        assert!(tokio::time::timeout(Duration::from_millis(20), second_sigint(rx)).await.is_err());
    }
}
