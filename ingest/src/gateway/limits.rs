//! Rate limits at the door: requests per device, and readings per tenant (its ingest quota).
//! A request over either is answered 429 with `Retry-After`, before anything is produced.
//!
//! Both are token buckets ([`governor`], GCRA) keyed by device or tenant. Keys that have not
//! been seen for a while are dropped by [`Limits::forget_idle`], so a churning fleet does not
//! grow them without bound.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::IngestError;

/// Limits of the gateway's intake; `None` disables one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitsConfig {
    /// Requests per second one device may make, on average.
    pub device_requests_per_sec: Option<NonZeroU32>,
    /// Requests a device may make at once after being quiet.
    pub device_burst: NonZeroU32,
    /// Readings per second one tenant's devices may send together.
    pub tenant_readings_per_sec: Option<NonZeroU32>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            // A Fabrikam device reports once a minute; 10 requests/s leaves room for
            // catching up after an outage without letting one device flood the gateway.
            device_requests_per_sec: NonZeroU32::new(10),
            device_burst: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
            tenant_readings_per_sec: None,
        }
    }
}

pub struct Limits {
    devices: Option<DefaultKeyedRateLimiter<String>>,
    tenants: Option<DefaultKeyedRateLimiter<String>>,
    /// A tenant's quota per second, which is also the most readings one check can take.
    tenant_quota: u32,
    clock: DefaultClock,
}

impl Limits {
    pub fn new(config: LimitsConfig) -> Self {
        let devices = config.device_requests_per_sec.map(|rate| {
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(config.device_burst))
        });
        let tenants = config
            .tenant_readings_per_sec
            .map(|rate| RateLimiter::keyed(Quota::per_second(rate)));
        Self {
            devices,
            tenants,
            tenant_quota: config.tenant_readings_per_sec.map_or(0, NonZeroU32::get),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one request of `device`.
    pub fn device_request(&self, device: &str) -> Result<(), IngestError> {
        let Some(limiter) = &self.devices else {
            return Ok(());
        };
        // The map is keyed by owned strings; allocate only for a key not seen yet.
        let key = device.to_owned();
        limiter
            .check_key(&key)
            .map_err(|not_until| IngestError::RateLimited {
                what: format!("device `{device}` is over its request rate"),
                retry_after: not_until.wait_time_from(self.clock.now()),
            })
    }

    /// Counts `readings` against `tenant`'s quota.
    pub fn tenant_readings(&self, tenant: &str, readings: usize) -> Result<(), IngestError> {
        let Some(limiter) = &self.tenants else {
            return Ok(());
        };
        let over = |retry_after| IngestError::RateLimited {
            what: format!(
                "tenant `{tenant}` is over its quota of {} readings/s",
                self.tenant_quota
            ),
            retry_after,
        };
        let Some(n) = u32::try_from(readings).ok().and_then(NonZeroU32::new) else {
            return Ok(());
        };
        match limiter.check_key_n(&tenant.to_owned(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(over(not_until.wait_time_from(self.clock.now()))),
            // More readings in one request than a whole second of quota: waiting cannot help.
            Err(_) => Err(IngestError::OverQuota {
                tenant: tenant.to_owned(),
                readings,
                quota: self.tenant_quota,
            }),
        }
    }

    /// Drops the state of devices and tenants that are back to a full bucket.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.devices {
            limiter.retain_recent();
        }
        if let Some(limiter) = &self.tenants {
            limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_device_over_its_rate_is_told_when_to_retry() {
        let limits = Limits::new(LimitsConfig {
            device_requests_per_sec: NonZeroU32::new(1),
            device_burst: NonZeroU32::new(3).unwrap(),
            tenant_readings_per_sec: None,
        });
        for _ in 0..3 {
            limits.device_request("d1").unwrap();
        }
        match limits.device_request("d1") {
            Err(IngestError::RateLimited { retry_after, .. }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1))
            }
            other => panic!("expected a rate limit, got {other:?}"),
        }
        // Another device has its own bucket.
        limits.device_request("d2").unwrap();
    }

    #[test]
    fn a_tenant_quota_counts_readings() {
        let limits = Limits::new(LimitsConfig {
            device_requests_per_sec: None,
            device_burst: NonZeroU32::MIN,
            tenant_readings_per_sec: NonZeroU32::new(100),
        });
        limits.tenant_readings("fabrikam", 60).unwrap();
        assert!(limits.tenant_readings("fabrikam", 60).is_err());
        limits.tenant_readings("contoso", 100).unwrap();
        assert!(matches!(
            limits.tenant_readings("contoso", 101),
            Err(IngestError::OverQuota {
                readings: 101,
                quota: 100,
                ..
            })
        ));
    }
}
