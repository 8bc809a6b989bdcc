//! Fault injection in a real mount, switched on by an environment variable.

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use s3block_core::{Error, Result};

use crate::fault::{FaultConfig, FaultStore};

/// The environment variable that switches fault injection on.
pub const INJECT_FAULTS_ENV: &str = "S3BLOCK_INJECT_FAULTS";

/// A parsed [`INJECT_FAULTS_ENV`] value: what to inject and the seed.
///
/// Fault injection in a real mount, switched on by an environment variable.
///
/// When [`INJECT_FAULTS_ENV`] (`S3BLOCK_INJECT_FAULTS`) is set,
/// [`StoreConfig::open`](crate::StoreConfig::open) puts a seeded
/// [`FaultStore`] right above the backend, below request counting and the
/// retry loop, so injected faults are counted and retried exactly like real
/// ones. It exists for s3block's reliability tests and for soaks by hand:
///
/// ```text
/// S3BLOCK_INJECT_FAULTS=seed=7,error_rate=0.1,timeout_rate=0.02,reset_rate=0.02,spike_rate=0.05,spike_ms=500,latency_ms=1 \
///     s3block-fuse -f file:///tmp/vol /mnt/s3block
/// ```
///
/// The spec is comma-separated `name=value` pairs:
///
/// | name | meaning | default |
/// |---|---|---|
/// | `seed` | seed of the fault RNG (same seed, same request order: same faults) | 0 |
/// | `error_rate` | probability of a 503-like server error | 0 |
/// | `timeout_rate` | probability of a timeout | 0 |
/// | `reset_rate` | probability of a dropped connection | 0 |
/// | `permanent_rate` | probability of a 400-like error that is not retried | 0 |
/// | `spike_rate` | probability of an extra delay of `spike_ms` | 0 |
/// | `spike_ms` | length of a latency spike, in milliseconds | 0 |
/// | `latency_ms` | delay added to every request, in milliseconds | 0 |
///
/// A malformed spec is refused with an error naming the variable and the
/// pair at fault: a test that meant to inject faults must not silently run
/// without them. A set variable is logged as a warning, loudly, since nobody
/// wants it on a volume that matters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultSpec {
    /// Seed of the fault RNG.
    pub seed: u64,
    /// What to inject.
    pub config: FaultConfig,
}

impl FaultSpec {
    /// Parses a spec such as `seed=7,error_rate=0.1,spike_ms=500`; see the
    /// [`FaultSpec`] docs for the names.
    pub fn parse(spec: &str) -> Result<FaultSpec> {
        let bad = |why: String| Error::Config(format!("{INJECT_FAULTS_ENV}={spec:?}: {why}"));
        let mut out = FaultSpec::default();
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) =
                pair.split_once('=').ok_or_else(|| bad(format!("{pair:?} is not name=value")))?;
            let (name, value) = (name.trim(), value.trim());
            let rate = || -> Result<f64> {
                match value.parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                    _ => Err(bad(format!("{name} must be a probability from 0 to 1, not {value:?}"))),
                }
            };
            let millis = || -> Result<Duration> {
                value
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| bad(format!("{name} must be a whole number of milliseconds, not {value:?}")))
            };
            let c = &mut out.config;
            match name {
                "seed" => {
                    out.seed = value
                        .parse()
                        .map_err(|_| bad(format!("seed must be a whole number, not {value:?}")))?
                }
                "error_rate" => c.error_rate = rate()?,
                "timeout_rate" => c.timeout_rate = rate()?,
                "reset_rate" => c.reset_rate = rate()?,
                "permanent_rate" => c.permanent_rate = rate()?,
                "spike_rate" => c.spike_rate = rate()?,
                "spike_ms" => c.spike = millis()?,
                "latency_ms" => c.latency = millis()?,
                other => {
                    return Err(bad(format!(
                        "unknown name {other:?} (known: seed, error_rate, timeout_rate, reset_rate, \
                         permanent_rate, spike_rate, spike_ms, latency_ms)"
                    )));
                }
            }
        }
        let c = &out.config;
        let total = c.error_rate + c.timeout_rate + c.reset_rate + c.permanent_rate;
        if total > 1.0 {
            return Err(bad(format!("the failure rates add up to {total}, more than 1")));
        }
        Ok(out)
    }
}

/// Wraps `base` in a [`FaultStore`] when `spec` (the value of
/// [`INJECT_FAULTS_ENV`]) is set and not empty; returns `base` otherwise.
pub(crate) fn wrap(base: Arc<dyn ObjectStore>, spec: Option<&str>) -> Result<Arc<dyn ObjectStore>> {
    let Some(text) = spec.filter(|s| !s.trim().is_empty()) else { return Ok(base) };
    let FaultSpec { seed, config } = FaultSpec::parse(text)?;
    tracing::warn!(
        "{INJECT_FAULTS_ENV} is set: INJECTING FAULTS into every store request (seed {seed}, {config:?}); \
         this is for testing only"
    );
    Ok(Arc::new(FaultStore::new(base, config, seed)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{ObjectStoreExt, PutPayload};

    #[test]
    fn full_spec_parses() {
        let spec = FaultSpec::parse(
            "seed=7, error_rate=0.1,timeout_rate=0.02,reset_rate=0.03,permanent_rate=0.001,\
             spike_rate=0.05,spike_ms=500,latency_ms=1",
        )
        .expect("valid spec");
        assert_eq!(spec.seed, 7);
        let c = &spec.config;
        assert_eq!((c.error_rate, c.timeout_rate, c.reset_rate), (0.1, 0.02, 0.03));
        assert_eq!((c.permanent_rate, c.spike_rate), (0.001, 0.05));
        assert_eq!((c.spike, c.latency), (Duration::from_millis(500), Duration::from_millis(1)));
        assert_eq!(FaultSpec::parse("").expect("empty"), FaultSpec::default());
    }

    #[test]
    fn errors_name_the_variable_and_the_pair() {
        for (spec, expect) in [
            ("error_rate", "\"error_rate\" is not name=value"),
            ("error_rate=1.5", "error_rate must be a probability from 0 to 1, not \"1.5\""),
            ("timeout_rate=x", "timeout_rate must be a probability"),
            ("spike_ms=-3", "spike_ms must be a whole number of milliseconds, not \"-3\""),
            ("seed=abc", "seed must be a whole number, not \"abc\""),
            ("eror_rate=0.1", "unknown name \"eror_rate\""),
            ("error_rate=0.6,reset_rate=0.6", "add up to 1.2, more than 1"),
        ] {
            let msg = FaultSpec::parse(spec).expect_err(spec).to_string();
            assert!(msg.contains(INJECT_FAULTS_ENV) && msg.contains(expect), "{spec}: {msg}");
        }
    }

    #[tokio::test]
    async fn wrap_injects_only_when_set() {
        let base: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let key = Path::from("k");
        let plain = wrap(base.clone(), None).expect("unset");
        plain.put(&key, PutPayload::from_static(b"x")).await.expect("no faults when unset");
        let plain = wrap(base.clone(), Some("  ")).expect("blank");
        plain.put(&key, PutPayload::from_static(b"x")).await.expect("no faults when blank");

        let faulty = wrap(base, Some("seed=1,reset_rate=1")).expect("set");
        let err = faulty.put(&key, PutPayload::from_static(b"y")).await.expect_err("every request fails");
        assert_eq!(crate::classify(&err), s3block_core::StoreErrorKind::Transient, "{err:?}");
        assert!(format!("{err:?}").contains("ConnectionReset"), "{err:?}");
        assert!(wrap(Arc::new(InMemory::new()), Some("nonsense")).is_err());
    }
}
