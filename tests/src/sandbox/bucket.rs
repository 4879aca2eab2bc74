//! The portal's leaky bucket (2 requests/s, 50 deep on standard plans): one per portal, shared by every token; each
//! `tools/call` adds one, the level drains continuously, and a call that would overflow the
//! depth is refused (HTTP 503 QUERY_LIMIT_EXCEEDED) without being added.

use std::time::Instant;

#[derive(Debug)]
pub(crate) struct LeakyBucket {
    level: f64,
    last: Instant,
}

impl LeakyBucket {
    pub(crate) fn new() -> Self {
        Self {
            level: 0.0,
            last: Instant::now(),
        }
    }

    /// Drains for the time elapsed, then admits the call if one more fits under `depth`.
    pub(crate) fn try_add(&mut self, rate_per_sec: f64, depth: u32) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.level = (self.level - elapsed * rate_per_sec.max(0.0)).max(0.0);
        if self.level + 1.0 > f64::from(depth) {
            return false;
        }
        self.level += 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_depth_and_does_not_count_refusals() {
        let mut b = LeakyBucket::new();
        for i in 0..3 {
            assert!(b.try_add(0.0, 3), "call {i} fits");
        }
        assert!(!b.try_add(0.0, 3));
        assert!(!b.try_add(0.0, 3));
        assert!((b.level - 3.0).abs() < f64::EPSILON);
    }

    #[test]
    fn drains_over_time() {
        let mut b = LeakyBucket::new();
        assert!(b.try_add(1000.0, 1));
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(b.try_add(1000.0, 1), "a fast drain empties the bucket");
    }
}
