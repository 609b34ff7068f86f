//! A deterministic RNG for unit tests of code that takes its randomness as an argument.

/// A counter run through SHA-256: reproducible, and good enough to exercise key
/// generation in tests. Never use it outside tests.
#[derive(Debug, Clone)]
pub struct TestRng(pub u64);

impl rand_core::TryRng for TestRng {
    type Error = core::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.try_next_u64()? as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        use sha2::Digest;
        for chunk in dst.chunks_mut(32) {
            self.0 += 1;
            let h = sha2::Sha256::digest(self.0.to_le_bytes());
            chunk.copy_from_slice(&h[..chunk.len()]);
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for TestRng {}

#[cfg(test)]
mod tests {
    use rand_core::Rng;

    use super::TestRng;

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let (mut a, mut b, mut c) = ([0u8; 40], [0u8; 40], [0u8; 40]);
        TestRng(5).fill_bytes(&mut a);
        TestRng(5).fill_bytes(&mut b);
        TestRng(6).fill_bytes(&mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a[..32], a[8..40]);
    }
}
