//! Counts of requests made to the object store: what the user is billed for.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of [`RequestCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// GET requests (including HEAD).
    pub gets: u64,
    /// PUT requests.
    pub puts: u64,
    /// DELETE requests, one per key (a bulk delete of 1000 keys counts 1000 here).
    pub deletes: u64,
    /// Bulk delete requests (S3 multi-object delete).
    pub bulk_deletes: u64,
    /// LIST requests (pages).
    pub lists: u64,
    /// Bytes sent in request bodies.
    pub bytes_sent: u64,
    /// Bytes received in response bodies.
    pub bytes_received: u64,
    /// Requests that failed and were tried again.
    pub retries: u64,
    /// Requests that finally failed.
    pub errors: u64,
}

/// Live request counters, shared by the layers that make and retry requests
/// and read by the frontends (the stats file, `s3block info`).
#[derive(Debug, Default)]
pub struct RequestCounters {
    gets: AtomicU64,
    puts: AtomicU64,
    deletes: AtomicU64,
    bulk_deletes: AtomicU64,
    lists: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    retries: AtomicU64,
    errors: AtomicU64,
}

macro_rules! counter {
    ($($name:ident => $field:ident),* $(,)?) => {
        impl RequestCounters {
            $(
                #[doc = concat!("Adds `n` to `", stringify!($field), "`.")]
                pub fn $name(&self, n: u64) {
                    self.$field.fetch_add(n, Ordering::Relaxed);
                }
            )*

            /// The counts so far.
            pub fn snapshot(&self) -> RequestCounts {
                RequestCounts { $($field: self.$field.load(Ordering::Relaxed)),* }
            }

            /// Sets every counter back to zero.
            pub fn reset(&self) {
                $(self.$field.store(0, Ordering::Relaxed);)*
            }
        }
    };
}

counter! {
    add_gets => gets,
    add_puts => puts,
    add_deletes => deletes,
    add_bulk_deletes => bulk_deletes,
    add_lists => lists,
    add_bytes_sent => bytes_sent,
    add_bytes_received => bytes_received,
    add_retries => retries,
    add_errors => errors,
}

impl RequestCounts {
    /// What these requests cost at the given prices (dollars per 1000 requests).
    /// DELETE is free on S3; LIST is billed like PUT.
    pub fn cost(&self, put_per_1000: f64, get_per_1000: f64) -> f64 {
        ((self.puts + self.lists) as f64 * put_per_1000 + self.gets as f64 * get_per_1000) / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_resets() {
        let c = RequestCounters::default();
        c.add_puts(3);
        c.add_gets(1000);
        c.add_bytes_sent(10);
        let s = c.snapshot();
        assert_eq!((s.puts, s.gets, s.bytes_sent), (3, 1000, 10));
        assert!((s.cost(5.0, 0.4) - (3.0 * 5.0 + 400.0) / 1000.0).abs() < 1e-9);
        c.reset();
        assert_eq!(c.snapshot(), RequestCounts::default());
    }
}
