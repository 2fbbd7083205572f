//! Initial parameters, reproducible against NumPy bit for bit.
//!
//! `numpy_rand`: `np.random.seed(S)` then `np.random.rand(out, in)` for layer 1, layer 2, ...
//! from one stream, row-major. `xavier` / `he`: the same stream through
//! `np.random.uniform(-a, a, (out, in))`, with `a = sqrt(6 / (in + out))` or `sqrt(6 / in)`.
//! Biases start at zero unless given.

use super::error::Result;
use super::network::{NetConfig, Params};
use super::rng::NumpyRandom;

/// The uniform bound `a` of a layer from its `(out, in)`; `None` draws `rand` on [0, 1).
type Bound = fn(usize, usize) -> Option<f64>;

#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    NumpyRand {
        seed: u32,
    },
    Xavier {
        seed: u32,
    },
    He {
        seed: u32,
    },
    /// Given values, as nested rows; checked against the config's shapes.
    Explicit {
        weights: Vec<Vec<Vec<f64>>>,
        biases: Option<Vec<Vec<f64>>>,
    },
}

impl Init {
    pub fn method(&self) -> &'static str {
        match self {
            Self::NumpyRand { .. } => "numpy_rand",
            Self::Xavier { .. } => "xavier",
            Self::He { .. } => "he",
            Self::Explicit { .. } => "explicit",
        }
    }

    pub fn seed(&self) -> Option<u32> {
        match *self {
            Self::NumpyRand { seed } | Self::Xavier { seed } | Self::He { seed } => Some(seed),
            Self::Explicit { .. } => None,
        }
    }

    /// The parameters this init gives for `config`.
    pub fn params(&self, config: &NetConfig) -> Result<Params> {
        let (seed, bound): (u32, Bound) = match self {
            Self::Explicit { weights, biases } => {
                return Params::from_rows(config, weights.clone(), biases.clone());
            }
            Self::NumpyRand { seed } => (*seed, |_, _| None),
            Self::Xavier { seed } => (*seed, |o, i| Some((6.0 / (i + o) as f64).sqrt())),
            Self::He { seed } => (*seed, |_, i| Some((6.0 / i as f64).sqrt())),
        };
        let mut rng = NumpyRandom::new(seed);
        let mut params = Params::zeros(config);
        for (w, (o, i)) in params.weights.iter_mut().zip(config.shapes()) {
            // `iter_mut` visits elements in logical (row-major) order, as NumPy fills them.
            let a = bound(o, i);
            for v in w.iter_mut() {
                *v = match a {
                    None => rng.next_f64(),
                    Some(a) => rng.uniform(-a, a),
                };
            }
        }
        Ok(params)
    }
}
