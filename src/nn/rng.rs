//! NumPy's legacy `np.random.seed(S); np.random.rand(...)`, bit for bit.
//!
//! `np.random.seed(int)` seeds MT19937 with `init_genrand(S)` (not `init_by_array`), and
//! `random_sample` builds each double from two 32-bit draws `a`, `b` as
//! `((a >> 5) * 67108864.0 + (b >> 6)) / 9007199254740992.0` (53 random bits).
//! `rand_mt::Mt::new` is exactly `init_genrand`, so only the double
//! construction lives here.

use rand_mt::Mt;

/// The stream `np.random.seed(seed)` starts.
pub struct NumpyRandom {
    mt: Mt,
}

impl NumpyRandom {
    pub fn new(seed: u32) -> Self {
        Self { mt: Mt::new(seed) }
    }

    /// One `np.random.random_sample()`: uniform on [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        let a = self.mt.next_u32() >> 5;
        let b = self.mt.next_u32() >> 6;
        (f64::from(a) * 67_108_864.0 + f64::from(b)) / 9_007_199_254_740_992.0
    }

    /// One `np.random.uniform(low, high)`: NumPy computes `low + (high - low) * u`.
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.next_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_zero_matches_numpy() {
        // python3 -c "import numpy as np; np.random.seed(0); print(repr(np.random.rand(3)))"
        let mut r = NumpyRandom::new(0);
        let got: Vec<f64> = (0..3).map(|_| r.next_f64()).collect();
        assert_eq!(
            got,
            vec![0.5488135039273248, 0.7151893663724195, 0.6027633760716439]
        );
    }
}
