//! Injected faults for POST /mcp/: latency, 5xx answers (a share, the next N, or every request
//! until a moment) and dropped connections, applied before anything else so clients see them
//! exactly as a flaky portal would show them. Each portal of a sandbox has its own.

use serde::{Deserialize, Serialize};

/// Faults to inject; the default injects none.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Sleep this long before answering.
    pub latency_ms: u64,
    /// Share of requests answered 500 `{"error":"INTERNAL_SERVER_ERROR"}`.
    pub error_5xx_ratio: f64,
    /// Share of requests whose connection is closed without any answer.
    pub drop_ratio: f64,
    /// The next N requests are answered 500, before the ratios apply.
    pub fail_next_n_with_5xx: u32,
    /// Every request is answered 500 until this moment (milliseconds since the Unix epoch; 0 =
    /// off): an outage of a stretch of time, over by itself. See [`Faults::error_5xx_for`].
    pub error_5xx_until_unix_ms: u64,
}

/// What to do with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FaultAction {
    Pass,
    Error5xx,
    Drop,
}

impl Faults {
    /// Every request answered 500 for `stretch` from now, then the portal behaves again.
    pub fn error_5xx_for(stretch: std::time::Duration) -> Faults {
        let until =
            unix_ms().saturating_add(u64::try_from(stretch.as_millis()).unwrap_or(u64::MAX));
        Faults {
            error_5xx_until_unix_ms: until,
            ..Faults::default()
        }
    }

    /// Decides this request's fate, consuming one of `fail_next_n_with_5xx` if any is left.
    pub(crate) fn decide(&mut self) -> FaultAction {
        if self.error_5xx_until_unix_ms > 0 && unix_ms() < self.error_5xx_until_unix_ms {
            return FaultAction::Error5xx;
        }
        if self.fail_next_n_with_5xx > 0 {
            self.fail_next_n_with_5xx -= 1;
            return FaultAction::Error5xx;
        }
        if self.error_5xx_ratio > 0.0 && rand::random::<f64>() < self.error_5xx_ratio {
            return FaultAction::Error5xx;
        }
        if self.drop_ratio > 0.0 && rand::random::<f64>() < self.drop_ratio {
            return FaultAction::Drop;
        }
        FaultAction::Pass
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_next_n_counts_down_then_passes() {
        let mut f = Faults {
            fail_next_n_with_5xx: 2,
            ..Faults::default()
        };
        assert_eq!(f.decide(), FaultAction::Error5xx);
        assert_eq!(f.decide(), FaultAction::Error5xx);
        assert_eq!(f.decide(), FaultAction::Pass);
    }

    #[test]
    fn a_stretch_of_5xx_ends_by_itself() {
        let mut f = Faults::error_5xx_for(std::time::Duration::from_millis(150));
        assert_eq!(f.decide(), FaultAction::Error5xx);
        assert_eq!(f.decide(), FaultAction::Error5xx);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(f.decide(), FaultAction::Pass);
        assert_eq!(Faults::default().decide(), FaultAction::Pass);
    }

    #[test]
    fn ratio_one_always_fires() {
        let mut f = Faults {
            drop_ratio: 1.0,
            ..Faults::default()
        };
        assert!((0..20).all(|_| f.decide() == FaultAction::Drop));
        let mut f = Faults {
            error_5xx_ratio: 1.0,
            ..Faults::default()
        };
        assert!((0..20).all(|_| f.decide() == FaultAction::Error5xx));
    }
}
