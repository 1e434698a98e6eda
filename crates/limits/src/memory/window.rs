//! Sliding one-minute window of tokens and requests in one-second buckets.
//!
//! 61 buckets hold the charges of the seconds `head − 60 ..= head`. A charge made during second
//! `s` counts until second `s + 61` begins, i.e. for between 60 and 61 seconds. Hence any two
//! charges at most 60 s apart are both counted when the later one is checked, and **the tokens
//! charged in any 60-second interval never exceed the per-minute budget** (overruns of a settled
//! request beyond its reservation aside). The error is one-sided: capacity comes back up to one
//! second later than an exact 60-second window would return it.

/// Buckets: the current second and the 60 before it.
pub(crate) const SLOTS: u64 = 61;

/// Per-scope window.
#[derive(Debug)]
pub(crate) struct Window {
    /// The newest second represented (Unix seconds).
    head: u64,
    tokens: [u64; SLOTS as usize],
    requests: [u32; SLOTS as usize],
    total_tokens: u64,
    total_requests: u64,
}

fn slot(sec: u64) -> usize {
    (sec % SLOTS) as usize
}

impl Window {
    /// An empty window at `now_sec`.
    pub(crate) fn new(now_sec: u64) -> Self {
        Self {
            head: now_sec,
            tokens: [0; SLOTS as usize],
            requests: [0; SLOTS as usize],
            total_tokens: 0,
            total_requests: 0,
        }
    }

    /// Moves to `now_sec`, dropping buckets older than 60 s. A clock that went backwards leaves
    /// the window where it is (charges then land in the newest bucket).
    pub(crate) fn advance(&mut self, now_sec: u64) {
        if now_sec <= self.head {
            return;
        }
        if now_sec - self.head >= SLOTS {
            self.tokens = [0; SLOTS as usize];
            self.requests = [0; SLOTS as usize];
            self.total_tokens = 0;
            self.total_requests = 0;
        } else {
            for sec in self.head + 1..=now_sec {
                let i = slot(sec);
                self.total_tokens -= self.tokens[i];
                self.total_requests -= u64::from(self.requests[i]);
                self.tokens[i] = 0;
                self.requests[i] = 0;
            }
        }
        self.head = now_sec;
    }

    /// The second charges land in.
    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    /// Tokens charged in the window.
    pub(crate) fn tokens(&self) -> u64 {
        self.total_tokens
    }

    /// Requests charged in the window.
    pub(crate) fn requests(&self) -> u64 {
        self.total_requests
    }

    /// Charges `tokens` and `requests` to the current second.
    pub(crate) fn charge(&mut self, tokens: u64, requests: u32) {
        let i = slot(self.head);
        // The total is the exact sum of the buckets; capping the charge so the total cannot
        // overflow also keeps every bucket (≤ total) from overflowing.
        let added = tokens.min(u64::MAX - self.total_tokens);
        self.tokens[i] += added;
        self.total_tokens += added;
        let added = self.requests[i].saturating_add(requests) - self.requests[i];
        self.requests[i] += added;
        self.total_requests += u64::from(added);
    }

    /// Gives back up to `tokens` charged during second `sec`, if that second is still in the
    /// window.
    pub(crate) fn refund(&mut self, sec: u64, tokens: u64) {
        if sec > self.head || self.head - sec >= SLOTS {
            return;
        }
        let i = slot(sec);
        let back = tokens.min(self.tokens[i]);
        self.tokens[i] -= back;
        self.total_tokens -= back;
    }

    /// The first second at which at least `excess` of the charged tokens have expired, or
    /// `None` if `excess` exceeds everything charged.
    pub(crate) fn freed_at(&self, excess: u64) -> Option<u64> {
        let mut freed = 0u64;
        for sec in self.head.saturating_sub(SLOTS - 1)..=self.head {
            freed = freed.saturating_add(self.tokens[slot(sec)]);
            if freed >= excess {
                return Some(sec + SLOTS);
            }
        }
        None
    }

    /// The second at which every charged token has expired (`head` when none are charged).
    pub(crate) fn empty_at(&self) -> u64 {
        (self.head.saturating_sub(SLOTS - 1)..=self.head)
            .rev()
            .find(|&sec| self.tokens[slot(sec)] > 0)
            .map_or(self.head, |sec| sec + SLOTS)
    }

    /// `true` when nothing is charged.
    pub(crate) fn is_empty(&self) -> bool {
        self.total_tokens == 0 && self.total_requests == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_expire_after_61_buckets() {
        let mut w = Window::new(1000);
        w.charge(100, 1);
        w.advance(1030);
        w.charge(50, 1);
        assert_eq!((w.tokens(), w.requests()), (150, 2));
        assert_eq!(w.freed_at(100), Some(1061));
        assert_eq!(w.freed_at(101), Some(1091));
        assert_eq!(w.freed_at(151), None);
        assert_eq!(w.empty_at(), 1091);
        w.advance(1060);
        assert_eq!(w.tokens(), 150, "second 1000 still counts at 1060");
        w.advance(1061);
        assert_eq!((w.tokens(), w.requests()), (50, 1));
        w.advance(5000);
        assert!(w.is_empty());
        assert_eq!(w.empty_at(), 5000);
    }

    #[test]
    fn refunds_only_inside_the_window_and_never_below_zero() {
        let mut w = Window::new(1000);
        w.charge(100, 1);
        w.refund(1000, 30);
        assert_eq!(w.tokens(), 70);
        w.refund(1000, 1_000);
        assert_eq!(w.tokens(), 0);
        w.charge(10, 0);
        w.refund(999, 10);
        w.refund(1001, 10);
        assert_eq!(w.tokens(), 10, "other seconds are untouched");
        w.advance(1061);
        w.charge(5, 0);
        w.refund(1000, 5);
        assert_eq!(w.tokens(), 5, "an expired second refunds nothing");
    }

    #[test]
    fn backwards_clock_and_saturation() {
        let mut w = Window::new(1000);
        w.advance(900);
        assert_eq!(w.head(), 1000);
        w.charge(u64::MAX, u32::MAX);
        w.charge(5, 5);
        assert_eq!(w.tokens(), u64::MAX);
        assert_eq!(w.requests(), u64::from(u32::MAX));
        w.advance(1001);
        w.charge(5, 1);
        assert_eq!(w.tokens(), u64::MAX, "totals saturate");
    }
}
