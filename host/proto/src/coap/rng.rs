//! Deterministic random source for MIDs, tokens and retransmission jitter.
//!
//! The sans-IO core never reads the OS: the driver seeds it (from getrandom in
//! production, a constant in tests) so every run is reproducible. SplitMix64
//! is enough here: tokens are not a security boundary on plain CoAP (RFC 7252
//! §5.3.1 asks only for unpredictability by off-path attackers; the seed is
//! secret).

/// A seeded 64-bit generator (SplitMix64 finaliser over a Weyl sequence).
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// Creates a generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..=max` (tiny modulo bias is irrelevant for jitter).
    pub fn below_inclusive(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(m) => self.next_u64() % m,
            None => self.next_u64(),
        }
    }

    /// Eight random bytes for a token.
    pub fn token(&mut self) -> Vec<u8> {
        self.next_u64().to_be_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        assert_ne!(a.token(), Rng::new(8).token());
        for _ in 0..100 {
            assert!(a.below_inclusive(1000) <= 1000);
        }
    }
}
