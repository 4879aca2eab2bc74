//! Injected faults for POST /mcp/: latency, 5xx answers and dropped connections,
//! applied before anything else so clients see them exactly as a flaky portal would show them.

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
}

/// What to do with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FaultAction {
    Pass,
    Error5xx,
    Drop,
}

impl Faults {
    /// Decides this request's fate, consuming one of `fail_next_n_with_5xx` if any is left.
    pub(crate) fn decide(&mut self) -> FaultAction {
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
