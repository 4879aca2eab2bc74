//! `TENANT#<id> / RATE#BITRIX`: the portal's request budget (token bucket), shared by every
//! consumer through conditional updates, so concurrent Lambdas together stay under Bitrix24's
//! 2 req/s, burst 50 (design.md §4 "Rate budget"). The arithmetic is a pure function below.

use std::time::Duration;

use time::OffsetDateTime;

use super::error::{StoreError, from_sdk};
use super::item::{Reader, key, n, time_av};
use super::{RateParams, Store};
use crate::tenant::TenantId;

const SK: &str = "RATE#BITRIX";
/// Read-modify-write attempts before a contended take gives up with [`StoreError::Conflict`].
const TAKE_ATTEMPTS: usize = 8;
/// Upper bound of a reported wait, so a zero or broken refill rate cannot yield an absurd delay.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// The bucket after a take attempt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketDecision {
    /// The level to store (only meaningful when `wait` is zero: nothing is written otherwise).
    pub level: f64,
    /// The refill time to store: never earlier than the stored one, so a consumer whose clock
    /// lags cannot make the next one refill the same interval twice.
    pub updated_at_ms: i64,
    /// Zero when a token was taken; otherwise how long until one would be available.
    pub wait: Duration,
}

/// Token-bucket arithmetic: refill `per_sec` since `updated_at_ms` up to `burst`, then take one
/// token if a whole one is there.
pub fn bucket_take(
    level: f64,
    updated_at_ms: i64,
    now_ms: i64,
    rate: &RateParams,
) -> BucketDecision {
    let burst = if rate.burst.is_finite() && rate.burst >= 1.0 {
        rate.burst
    } else {
        1.0
    };
    let elapsed = (now_ms.saturating_sub(updated_at_ms)).max(0) as f64 / 1000.0;
    let refill = if rate.per_sec.is_finite() && rate.per_sec > 0.0 {
        rate.per_sec
    } else {
        0.0
    };
    let level = if level.is_finite() { level } else { 0.0 };
    let filled = (level + elapsed * refill).clamp(0.0, burst);
    let updated_at_ms = now_ms.max(updated_at_ms);
    if filled >= 1.0 {
        return BucketDecision {
            level: filled - 1.0,
            updated_at_ms,
            wait: Duration::ZERO,
        };
    }
    let wait = if refill > 0.0 {
        Duration::from_secs_f64((1.0 - filled) / refill).min(MAX_WAIT)
    } else {
        MAX_WAIT
    };
    // A wait must be positive even when rounding makes it vanish.
    let wait = wait.max(Duration::from_millis(1));
    BucketDecision {
        level: filled,
        updated_at_ms,
        wait,
    }
}

fn epoch_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

impl Store {
    /// Takes one token from the portal's bucket: `Ok(Duration::ZERO)` when taken, else
    /// `Ok(wait)` until one would be available (nothing taken). A missing bucket starts full.
    /// Each attempt is a consistent read plus an update conditioned on the values read; a lost
    /// race is re-read and retried, [`StoreError::Conflict`] after several losses.
    #[tracing::instrument(skip_all, fields(tenant_id = %t))]
    pub async fn take_rate_token(
        &self,
        t: &TenantId,
        rate: &RateParams,
        now: OffsetDateTime,
    ) -> Result<Duration, StoreError> {
        let now_ms = epoch_ms(now);
        for _ in 0..TAKE_ATTEMPTS {
            let stored = self.get(key(t.partition_key(), SK.to_owned())).await?;
            // The raw stored numbers, so the condition compares exactly what was read.
            let read = match &stored {
                Some(item) => {
                    let r = Reader::new(item, "rate bucket");
                    Some((
                        r.raw_n("level")?.to_owned(),
                        r.raw_n("updated_at_ms")?.to_owned(),
                        r.n::<f64>("level")?,
                        r.n::<i64>("updated_at_ms")?,
                    ))
                }
                None => None,
            };
            let decision = match &read {
                Some((_, _, level, at)) => bucket_take(*level, *at, now_ms, rate),
                None => bucket_take(rate.burst, now_ms, now_ms, rate),
            };
            if !decision.wait.is_zero() {
                return Ok(decision.wait);
            }
            let req = self
                .ddb
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(t.partition_key(), SK.to_owned())))
                .update_expression("SET #lvl = :lvl, updated_at_ms = :at, updated_at = :atext")
                .expression_attribute_names("#lvl", "level")
                .expression_attribute_values(":lvl", n(decision.level))
                .expression_attribute_values(":at", n(decision.updated_at_ms))
                .expression_attribute_values(":atext", time_av(now)?);
            let req = match &read {
                Some((raw_level, raw_at, _, _)) => req
                    .condition_expression("#lvl = :old_lvl AND updated_at_ms = :old_at")
                    .expression_attribute_values(
                        ":old_lvl",
                        aws_sdk_dynamodb::types::AttributeValue::N(raw_level.clone()),
                    )
                    .expression_attribute_values(
                        ":old_at",
                        aws_sdk_dynamodb::types::AttributeValue::N(raw_at.clone()),
                    ),
                None => req.condition_expression("attribute_not_exists(pk)"),
            };
            match req.send().await.map_err(from_sdk) {
                Ok(_) => return Ok(Duration::ZERO),
                Err(StoreError::Conflict) => {
                    tracing::debug!("rate bucket changed concurrently; re-reading");
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: RateParams = RateParams {
        per_sec: 2.0,
        burst: 50.0,
    };

    #[test]
    fn full_bucket_gives_exactly_burst_tokens_then_waits() {
        let (mut level, mut at) = (50.0, 1_000);
        for i in 0..50 {
            let d = bucket_take(level, at, 1_000, &RATE);
            assert_eq!(d.wait, Duration::ZERO, "take {i} should pass");
            (level, at) = (d.level, d.updated_at_ms);
        }
        let d = bucket_take(level, at, 1_000, &RATE);
        assert_eq!(
            d.wait,
            Duration::from_millis(500),
            "one token refills in 1/2 s"
        );
    }

    #[test]
    fn refills_at_rate_and_caps_at_burst() {
        // Half a token left, 250 ms later: 1.0 -> take.
        let d = bucket_take(0.5, 0, 250, &RATE);
        assert_eq!(d.wait, Duration::ZERO);
        assert!((d.level - 0.0).abs() < 1e-9);
        // 0.25 left, 100 ms later: 0.45, needs 0.55 more = 275 ms.
        let d = bucket_take(0.25, 0, 100, &RATE);
        assert_eq!(d.wait.as_millis(), 275);
        assert!(
            (d.level - 0.45).abs() < 1e-9,
            "a wait keeps the refilled level"
        );
        // An hour idle never exceeds the burst.
        let d = bucket_take(0.0, 0, 3_600_000, &RATE);
        assert!((d.level - 49.0).abs() < 1e-9);
    }

    #[test]
    fn clock_going_backwards_neither_refills_nor_rewinds() {
        let d = bucket_take(0.0, 10_000, 5_000, &RATE);
        assert!(d.wait > Duration::ZERO);
        assert_eq!(d.updated_at_ms, 10_000);
        assert!((d.level - 0.0).abs() < 1e-9);
    }

    #[test]
    fn broken_parameters_do_not_panic_or_spin() {
        let zero = RateParams {
            per_sec: 0.0,
            burst: 50.0,
        };
        assert_eq!(bucket_take(0.0, 0, 1_000, &zero).wait, MAX_WAIT);
        let nan = RateParams {
            per_sec: f64::NAN,
            burst: f64::NAN,
        };
        let d = bucket_take(f64::NAN, 0, 1_000, &nan);
        assert_eq!(d.wait, MAX_WAIT);
    }
}
