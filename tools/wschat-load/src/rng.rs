//! A xorshift64* generator: cheap, good enough for masking keys and
//! handshake nonces, and needing no crate. Not cryptographic; RFC 6455
//! only asks that the masking key be unpredictable to scripts in a
//! browser, which a load tool does not host.

use std::time::{SystemTime, UNIX_EPOCH};

pub struct XorShift64(u64);

impl XorShift64 {
    /// Seeds from the clock and the process id; a zero seed is replaced
    /// because xorshift would stay at zero forever.
    pub fn from_entropy() -> XorShift64 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        XorShift64::new(nanos ^ (u64::from(std::process::id()) << 32))
    }

    pub fn new(seed: u64) -> XorShift64 {
        XorShift64(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn mask(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let bytes = self.next_u64().to_ne_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_seed_does_not_stick() {
        let mut rng = XorShift64::new(0);
        assert_ne!(rng.next_u64(), 0);
        assert_ne!(rng.next_u64(), rng.next_u64());
    }

    #[test]
    fn fill_covers_odd_lengths() {
        let mut rng = XorShift64::new(42);
        let mut buf = [0u8; 13];
        rng.fill(&mut buf);
        assert!(buf.iter().any(|&b| b != 0));
    }
}
