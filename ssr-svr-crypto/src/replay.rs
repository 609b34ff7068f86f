//! Sliding anti-replay window (RFC 6479 style bitmap) over 64-bit sequence numbers.
//!
//! Use: [`ReplayWindow::check`] before authenticating (cheap reject), then
//! [`ReplayWindow::commit`] only after the packet authenticated, so forged packets
//! can never move the window.

use crate::Error;

/// Window width in packets.
pub const WINDOW_BITS: u64 = 2048;
const WORDS: usize = (WINDOW_BITS / 64) as usize;

/// Anti-replay state for one receiving key.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Highest sequence number accepted so far (`None` before the first).
    top: Option<u64>,
    bitmap: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window: every sequence number is acceptable.
    pub const fn new() -> Self {
        Self {
            top: None,
            bitmap: [0; WORDS],
        }
    }

    /// A window that rejects every sequence number up to and including `floor` (an HA
    /// node importing a peer's high-water mark plus a safety jump): as if all of them
    /// had been received.
    pub const fn after(floor: u64) -> Self {
        let mut bitmap = [u64::MAX; WORDS];
        let word = ((floor / 64) % WORDS as u64) as usize;
        let bit = floor % 64;
        // Bits above `floor` in its own word stand for newer, unseen numbers.
        bitmap[word] = if bit == 63 {
            u64::MAX
        } else {
            (1u64 << (bit + 1)) - 1
        };
        Self {
            top: Some(floor),
            bitmap,
        }
    }

    /// Highest committed sequence number.
    pub fn top(&self) -> Option<u64> {
        self.top
    }

    fn bit(seq: u64) -> (usize, u64) {
        (((seq / 64) % WORDS as u64) as usize, 1u64 << (seq % 64))
    }

    /// Is `seq` new and inside the window? Does not change state.
    pub fn check(&self, seq: u64) -> Result<(), Error> {
        let Some(top) = self.top else { return Ok(()) };
        if seq > top {
            return Ok(());
        }
        // The usable window is WINDOW_BITS - 64 (one word is the ring's slack).
        if top - seq >= WINDOW_BITS - 64 {
            return Err(Error::Replay { seq });
        }
        let (w, m) = Self::bit(seq);
        if self.bitmap.get(w).copied().unwrap_or(0) & m != 0 {
            return Err(Error::Replay { seq });
        }
        Ok(())
    }

    /// Records `seq` as received. Call only after the packet authenticated and after
    /// a successful [`ReplayWindow::check`].
    pub fn commit(&mut self, seq: u64) {
        match self.top {
            None => {
                self.top = Some(seq);
            }
            Some(top) if seq > top => {
                // Clear the words between the old top's word and the new one.
                let old_word = top / 64;
                let new_word = seq / 64;
                let steps = (new_word - old_word).min(WORDS as u64);
                for i in 1..=steps {
                    let idx = ((old_word + i) % WORDS as u64) as usize;
                    if let Some(w) = self.bitmap.get_mut(idx) {
                        *w = 0;
                    }
                }
                self.top = Some(seq);
            }
            Some(_) => {}
        }
        let (w, m) = Self::bit(seq);
        if let Some(word) = self.bitmap.get_mut(w) {
            *word |= m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_duplicates_and_old() {
        let mut w = ReplayWindow::new();
        for s in [5u64, 3, 10, 4] {
            w.check(s).unwrap();
            w.commit(s);
        }
        for s in [5u64, 3, 10, 4] {
            assert_eq!(w.check(s), Err(Error::Replay { seq: s }));
        }
        w.check(6).unwrap();
        w.commit(5000);
        assert!(w.check(10).is_err(), "far behind the window");
        w.check(5000 - 1024).unwrap();
        assert!(w.check(5000).is_err());
    }

    #[test]
    fn window_is_at_least_1024() {
        let mut w = ReplayWindow::new();
        w.commit(100_000);
        for back in 1..=1024u64 {
            w.check(100_000 - back).unwrap();
        }
        // Out of order arrivals inside the window are all accepted once.
        for back in (1..=1024u64).rev() {
            w.check(100_000 - back).unwrap();
            w.commit(100_000 - back);
            assert!(w.check(100_000 - back).is_err());
        }
    }

    #[test]
    fn after_floor_rejects_up_to_the_floor_and_accepts_above_in_any_order() {
        for floor in [0u64, 5, 63, 64, 1000, 1 << 40] {
            let mut w = ReplayWindow::after(floor);
            for back in 0..3000u64.min(floor + 1) {
                assert!(w.check(floor - back).is_err(), "{floor} - {back}");
            }
            for s in [floor + 3, floor + 1, floor + 2, floor + 70] {
                w.check(s).unwrap();
                w.commit(s);
                assert!(w.check(s).is_err());
            }
        }
    }

    #[test]
    fn big_jump_clears_bitmap() {
        let mut w = ReplayWindow::new();
        for s in 0..3000 {
            w.commit(s);
        }
        w.commit(1_000_000);
        w.check(1_000_000 - 10).unwrap();
    }
}
