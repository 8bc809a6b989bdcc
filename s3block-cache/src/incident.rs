//! Failures that repeat, logged once per incident.
//!
//! While the store is unreachable (with `--io-timeout`) or refuses every
//! request (credentials revoked, a full bucket), every upload and fetch of
//! every block fails, again at each retry: one log line each would bury
//! the journal. An [`Incident`] turns a run of failures into a few lines:
//! the first failure in full, then, at most once per [`SUMMARY_EVERY`],
//! how many more failed, and one line when things work again, saying how
//! many failed in all and for how long. The time is passed in (tokio's
//! clock), so the tests run it in paused time.

use std::time::Duration;

use tokio::time::Instant;

/// At most one line per incident this often, after its first.
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// A run of failures of one kind (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Incident {
    open: Option<Open>,
}

#[derive(Debug)]
struct Open {
    since: Instant,
    next_summary: Instant,
    /// Failures not said yet.
    unsaid: u64,
    total: u64,
}

/// What to log for a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Say {
    /// The first failure of an incident: log it in full.
    First,
    /// A summary is due: `count` failures since the last line, this one
    /// included; `total` since the first, which was `lasted` ago.
    Summary { count: u64, total: u64, lasted: Duration },
    /// Counted, to be said in the next summary (log at debug level only).
    Counted,
}

/// The end of an incident: how many failures in all, over how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ended {
    pub(crate) total: u64,
    pub(crate) lasted: Duration,
}

impl Incident {
    /// A failure at `now`: what to log.
    pub(crate) fn failed(&mut self, now: Instant) -> Say {
        match &mut self.open {
            None => {
                self.open = Some(Open { since: now, next_summary: now + SUMMARY_EVERY, unsaid: 0, total: 1 });
                Say::First
            }
            Some(open) => {
                open.total += 1;
                open.unsaid += 1;
                if now < open.next_summary {
                    return Say::Counted;
                }
                open.next_summary = now + SUMMARY_EVERY;
                let count = std::mem::take(&mut open.unsaid);
                Say::Summary { count, total: open.total, lasted: now.duration_since(open.since) }
            }
        }
    }

    /// A success at `now`: the incident going on, if any, is over. `Some`
    /// when more than one failure was logged or counted (a single failure
    /// needs no second line).
    pub(crate) fn succeeded(&mut self, now: Instant) -> Option<Ended> {
        let open = self.open.take()?;
        (open.total > 1).then(|| Ended { total: open.total, lasted: now.duration_since(open.since) })
    }
}

/// A duration for the log, to the second: `42s`, `3m05s`, `2h07m`.
pub(crate) fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_hour_of_failures_is_a_line_a_minute() {
        let mut incident = Incident::default();
        let start = Instant::now();
        let mut lines = Vec::new();
        // A failure every 2 s for an hour, as retries of 8 blocks would be.
        for _ in 0..1800 {
            match incident.failed(Instant::now()) {
                Say::Counted => {}
                said => lines.push(said),
            }
            tokio::time::advance(Duration::from_secs(2)).await;
        }
        assert_eq!(lines[0], Say::First);
        assert_eq!(lines.len(), 60, "the first, then one a minute: {lines:?}");
        assert_eq!(lines[1], Say::Summary { count: 30, total: 31, lasted: Duration::from_secs(60) });
        let counted: u64 = lines
            .iter()
            .map(|s| match s {
                Say::First => 1,
                Say::Summary { count, .. } => *count,
                Say::Counted => 0,
            })
            .sum();
        assert_eq!(counted, 1 + 59 * 30, "every failure said in a line, once");
        let ended = incident.succeeded(Instant::now()).expect("the incident ends");
        assert_eq!(ended, Ended { total: 1800, lasted: start.elapsed() });
        // Over: the next failure starts a new incident.
        assert_eq!(incident.succeeded(Instant::now()), None);
        assert_eq!(incident.failed(Instant::now()), Say::First);
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_failure_needs_no_end_line() {
        let mut incident = Incident::default();
        assert_eq!(incident.failed(Instant::now()), Say::First);
        assert_eq!(incident.succeeded(Instant::now()), None);
        assert_eq!(incident.failed(Instant::now()), Say::First);
    }

    #[test]
    fn spans_read_well() {
        assert_eq!(span(Duration::from_secs(42)), "42s");
        assert_eq!(span(Duration::from_secs(185)), "3m05s");
        assert_eq!(span(Duration::from_secs(7620)), "2h07m");
    }
}
