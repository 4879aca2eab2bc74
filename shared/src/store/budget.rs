//! `TENANT#<id> / RATE#BITRIX`: the portal's request budget, shared by every consumer, so
//! concurrent Lambdas together stay under Bitrix24's leaky bucket (2 req/s with a burst of 50 by
//! default, 5/250 on Enterprise portals).
//!
//! It is a GCRA ("generic cell rate algorithm"), the token bucket kept as one number: the
//! theoretical arrival time `tat_ms` of the next request. Taking a token is ONE conditional
//! write, and consumers taking at the same time do not make each other retry: a budget in use
//! is moved by adding the interval to what is stored (allowed while the stored value leaves a
//! token), an idle one is set from now (allowed while it is idle). The value each write leaves is
//! remembered per container, so a take that must wait is known without a request, and a failed
//! condition returns the stored value (`ReturnValuesOnConditionCheckFailure`): no read, ever,
//! on DynamoDB. A container's first take assumes an idle budget, which its condition checks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use time::OffsetDateTime;

use super::error::{StoreError, from_sdk};
use super::item::{Item, key, n};
use super::{RateParams, Store};
use crate::tenant::TenantId;

const SK: &str = "RATE#BITRIX";
/// Write attempts before a contended take gives up with [`StoreError::Conflict`].
const TAKE_ATTEMPTS: usize = 8;
/// Upper bound of a reported wait, so a zero or broken refill rate cannot yield an absurd delay.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// What this container last saw of each tenant's `tat_ms` (the raw number, or `None` when the
/// item had none). Shared by clones of the store.
pub(super) type TatCache = Arc<Mutex<HashMap<String, Option<String>>>>;

/// The budget after a take attempt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketDecision {
    /// The `tat_ms` to store (only meaningful when `wait` is zero: nothing is written otherwise).
    pub tat_ms: i64,
    /// Zero when a token was taken; otherwise how long until one would be available.
    pub wait: Duration,
}

/// GCRA arithmetic: with emission interval `T = 1000 / per_sec` ms and tolerance
/// `(burst - 1) * T`, a request at `now` passes when `max(tat, now) - now` is within the
/// tolerance, and moves `tat` to `max(tat, now) + T`. An idle bucket holds `burst` tokens.
pub fn bucket_take(tat_ms: Option<i64>, now_ms: i64, rate: &RateParams) -> BucketDecision {
    let burst = if rate.burst.is_finite() && rate.burst >= 1.0 {
        rate.burst
    } else {
        1.0
    };
    if !(rate.per_sec.is_finite() && rate.per_sec > 0.0) {
        return BucketDecision {
            tat_ms: tat_ms.unwrap_or(now_ms),
            wait: MAX_WAIT,
        };
    }
    let interval = 1000.0 / rate.per_sec;
    let tolerance = (burst - 1.0) * interval;
    let tat = tat_ms.unwrap_or(now_ms).max(now_ms);
    let ahead = (tat - now_ms) as f64;
    if ahead > tolerance {
        let wait_ms = ahead - tolerance;
        let wait = Duration::try_from_secs_f64(wait_ms / 1000.0)
            .unwrap_or(MAX_WAIT)
            .min(MAX_WAIT)
            // A wait must be positive even when rounding makes it vanish.
            .max(Duration::from_millis(1));
        return BucketDecision { tat_ms: tat, wait };
    }
    let next = (tat as f64 + interval).min(i64::MAX as f64) as i64;
    BucketDecision {
        tat_ms: next,
        wait: Duration::ZERO,
    }
}

fn epoch_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn raw_tat(item: Option<&Item>) -> Option<String> {
    match item?.get("tat_ms") {
        Some(AttributeValue::N(v)) => Some(v.clone()),
        _ => None,
    }
}

impl Store {
    fn cached_tat(&self, t: &TenantId) -> Option<Option<String>> {
        self.tat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(t.as_str())
            .cloned()
    }

    /// Remembers a `tat_ms` seen in the table, unless a newer one is remembered already (tasks
    /// of one container share the cache, and the value only ever grows).
    fn remember_tat(&self, t: &TenantId, raw: Option<String>) {
        let num = |v: &Option<String>| v.as_deref().and_then(|v| v.parse::<f64>().ok());
        let mut cache = self
            .tat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let newer = match (cache.get(t.as_str()).map(num), num(&raw)) {
            (Some(Some(old)), Some(new)) => new > old,
            (Some(Some(_)), None) => false,
            _ => true,
        };
        if newer {
            cache.insert(t.as_str().to_owned(), raw);
        }
    }

    /// Takes one token from the portal's budget: `Ok(Duration::ZERO)` when taken, else
    /// `Ok(wait)` until one would be available (nothing taken). A missing budget starts full.
    /// [`Store::reserve_rate_token`] with no horizon.
    pub async fn take_rate_token(
        &self,
        t: &TenantId,
        rate: &RateParams,
        now: OffsetDateTime,
    ) -> Result<Duration, StoreError> {
        Ok(
            match self
                .reserve_rate_token(t, rate, now, Duration::ZERO)
                .await?
            {
                TokenTake::Taken { .. } => Duration::ZERO,
                TokenTake::Empty { wait } => wait,
            },
        )
    }

    /// Takes one token, possibly one that becomes due within `horizon`: then the caller must
    /// wait [`TokenTake::Taken::after`] before its call (the token is its own meanwhile, so the
    /// calls that reach the portal stay within the bucket). A token due later than `horizon`
    /// is not taken ([`TokenTake::Empty`]).
    ///
    /// One conditional write per take, and concurrent takers do not make each other retry:
    /// while the budget is in use (`tat_ms >= now`) the write adds the interval to whatever is
    /// stored (`SET tat_ms = tat_ms + :interval`, allowed while the stored value leaves a token
    /// within the horizon); an idle budget is set to `now + interval` (allowed while
    /// `tat_ms < now`). A failed condition returns the stored value
    /// (`ReturnValuesOnConditionCheckFailure`), from which the wait or the other form follows
    /// without a read; [`StoreError::Conflict`] only after several such turns.
    #[tracing::instrument(skip_all, fields(tenant_id = %t))]
    pub async fn reserve_rate_token(
        &self,
        t: &TenantId,
        rate: &RateParams,
        now: OffsetDateTime,
        horizon: Duration,
    ) -> Result<TokenTake, StoreError> {
        let now_ms = epoch_ms(now);
        let Some((interval, tolerance)) = gcra_params(rate) else {
            return Ok(TokenTake::Empty {
                wait: bucket_take(None, now_ms, rate).wait,
            });
        };
        let horizon_ms = i64::try_from(horizon.as_millis()).unwrap_or(i64::MAX / 4);
        let limit = now_ms.saturating_add(tolerance).saturating_add(horizon_ms);
        // `None`: this container has not seen the budget yet; it is taken as idle, which the
        // idle form's condition checks.
        let mut seen = self.cached_tat(t).map(|raw| parse_tat(raw.as_deref()));
        for _ in 0..TAKE_ATTEMPTS {
            let tat = seen.flatten();
            // The stored value only grows, so a wait this container computes is never too long.
            if let Some(tat) = tat
                && tat > limit
            {
                return Ok(TokenTake::Empty {
                    wait: ms_duration(tat - tolerance - now_ms),
                });
            }
            let busy = tat.is_some_and(|tat| tat >= now_ms);
            let req = self
                .ddb
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(t.partition_key(), SK.to_owned())))
                .return_values(ReturnValue::UpdatedNew)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .expression_attribute_values(":now", n(now_ms));
            let req = if busy {
                req.update_expression("SET tat_ms = tat_ms + :interval")
                    .condition_expression("tat_ms >= :now AND tat_ms <= :limit")
                    .expression_attribute_values(":interval", n(interval))
                    .expression_attribute_values(":limit", n(limit))
            } else {
                req.update_expression("SET tat_ms = :next")
                    .condition_expression("attribute_not_exists(tat_ms) OR tat_ms < :now")
                    .expression_attribute_values(":next", n(now_ms.saturating_add(interval)))
            };
            match req.send().await {
                Ok(out) => {
                    let new = raw_tat(out.attributes.as_ref());
                    let after = parse_tat(new.as_deref())
                        .map(|new| new - interval - tolerance - now_ms)
                        .filter(|ms| *ms > 0)
                        .map_or(Duration::ZERO, ms_duration);
                    self.remember_tat(t, new);
                    return Ok(TokenTake::Taken { after });
                }
                Err(e) => match e.into_service_error() {
                    UpdateItemError::ConditionalCheckFailedException(c) => {
                        tracing::debug!("rate budget moved on in another consumer");
                        // The failure carries the stored item where the service returns it;
                        // otherwise it is read.
                        let stored = match c.item() {
                            Some(item) => raw_tat(Some(item)),
                            None => raw_tat(
                                self.get(key(t.partition_key(), SK.to_owned()))
                                    .await?
                                    .as_ref(),
                            ),
                        };
                        self.remember_tat(t, stored.clone());
                        seen = Some(parse_tat(stored.as_deref()));
                    }
                    other => return Err(from_sdk(other)),
                },
            }
        }
        self.tat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(t.as_str());
        Err(StoreError::Conflict)
    }
}

impl Store {
    /// How long until the tenant's next token is due, from what this container last saw of the
    /// budget (no request): `None` when it has not seen it or a token is due now. The stored
    /// value only grows, so the real wait is at least this long.
    pub fn known_budget_wait(
        &self,
        t: &TenantId,
        rate: &RateParams,
        now: OffsetDateTime,
    ) -> Option<Duration> {
        let (_, tolerance) = gcra_params(rate)?;
        let tat = parse_tat(self.cached_tat(t)?.as_deref())?;
        let ms = tat - tolerance - epoch_ms(now);
        (ms > 0).then(|| ms_duration(ms))
    }
}

/// What [`Store::reserve_rate_token`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenTake {
    /// A token is the caller's; its call may go `after` from now (zero: at once).
    Taken { after: Duration },
    /// No token within the horizon; one would be due in `wait`.
    Empty { wait: Duration },
}

/// A positive number of milliseconds as a wait (at least 1 ms, at most [`MAX_WAIT`]).
fn ms_duration(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
        .max(Duration::from_millis(1))
        .min(MAX_WAIT)
}

/// The emission interval and the tolerance in whole milliseconds (see [`bucket_take`]); `None`
/// for parameters that cannot pace anything (their take always waits).
fn gcra_params(rate: &RateParams) -> Option<(i64, i64)> {
    if !(rate.per_sec.is_finite() && rate.per_sec > 0.0) {
        return None;
    }
    let burst = if rate.burst.is_finite() && rate.burst >= 1.0 {
        rate.burst
    } else {
        1.0
    };
    let interval = (1000.0 / rate.per_sec).ceil();
    if interval >= i64::MAX as f64 / 2.0 {
        return None;
    }
    let tolerance = ((burst - 1.0) * interval).min(i64::MAX as f64 / 4.0);
    Some((interval as i64, tolerance as i64))
}

fn parse_tat(raw: Option<&str>) -> Option<i64> {
    raw.and_then(|v| v.parse::<f64>().ok()).map(|v| v as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: RateParams = RateParams {
        per_sec: 2.0,
        burst: 50.0,
    };

    fn take_all(mut tat: Option<i64>, now: i64, n: usize) -> Option<i64> {
        for i in 0..n {
            let d = bucket_take(tat, now, &RATE);
            assert_eq!(d.wait, Duration::ZERO, "take {i} should pass");
            tat = Some(d.tat_ms);
        }
        tat
    }

    #[test]
    fn an_idle_budget_gives_exactly_burst_tokens_then_waits() {
        let tat = take_all(None, 1_000, 50);
        let d = bucket_take(tat, 1_000, &RATE);
        assert_eq!(d.wait, Duration::from_millis(500), "one token every 1/2 s");
        // half a second later exactly one token is there
        let d = bucket_take(tat, 1_500, &RATE);
        assert_eq!(d.wait, Duration::ZERO);
        assert!(bucket_take(Some(d.tat_ms), 1_500, &RATE).wait > Duration::ZERO);
    }

    #[test]
    fn an_hour_idle_never_exceeds_the_burst() {
        let tat = take_all(None, 0, 50);
        let later = 3_600_000;
        let tat = take_all(tat, later, 50);
        assert!(bucket_take(tat, later, &RATE).wait > Duration::ZERO);
    }

    #[test]
    fn a_clock_behind_the_stored_time_only_waits() {
        let d = bucket_take(Some(100_000), 5_000, &RATE);
        assert!(d.wait > Duration::ZERO);
        assert_eq!(d.tat_ms, 100_000, "nothing moves backwards");
    }

    #[test]
    fn broken_parameters_do_not_panic_or_spin() {
        for rate in [
            RateParams {
                per_sec: 0.0,
                burst: 50.0,
            },
            RateParams {
                per_sec: f64::NAN,
                burst: f64::NAN,
            },
            RateParams {
                per_sec: -1.0,
                burst: 50.0,
            },
        ] {
            assert_eq!(bucket_take(None, 1_000, &rate).wait, MAX_WAIT, "{rate:?}");
        }
        // a tiny rate: an interval far beyond any Duration, never a panic
        let tiny = RateParams {
            per_sec: 1e-300,
            burst: 1.0,
        };
        let d = bucket_take(None, 1_000, &tiny);
        assert_eq!(d.wait, Duration::ZERO, "the first token of an idle budget");
        assert_eq!(bucket_take(Some(d.tat_ms), 1_000, &tiny).wait, MAX_WAIT);
    }
}
