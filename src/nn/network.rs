//! Dense networks: `layers: [n_in, h_1, ..., n_out]`, weights `W_k` of shape `(out, in)`.
//!
//! Layer k computes `z_k = W_k a_{k-1} (+ b_k)` per sample; hidden layers apply the
//! activation, the last layer feeds softmax. With the whole batch as an `(M, n_in)` matrix
//! that is `Z_k = A_{k-1} W_k^T`.

use ndarray::{Array1, Array2};

use super::error::{NnError, Result};

/// At most this many weight layers (so at most `MAX_LAYERS + 1` sizes).
pub const MAX_LAYERS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    #[default]
    Relu,
    Sigmoid,
    Tanh,
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Self::Relu => "relu",
            Self::Sigmoid => "sigmoid",
            Self::Tanh => "tanh",
        }
    }

    #[inline]
    pub fn apply(self, z: f64) -> f64 {
        match self {
            Self::Relu => z.max(0.0),
            Self::Sigmoid => 1.0 / (1.0 + (-z).exp()),
            Self::Tanh => z.tanh(),
        }
    }

    /// `d activation / d z`, from the activation `a = f(z)` alone, so the forward pass need
    /// not keep `z`. ReLU's derivative at exactly 0 is 0, as the notebook's `z > 0` gives
    /// (and `relu(z) > 0` exactly when `z > 0`).
    #[inline]
    pub fn derivative(self, a: f64) -> f64 {
        match self {
            Self::Relu => {
                if a > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Self::Sigmoid => a * (1.0 - a),
            Self::Tanh => 1.0 - a * a,
        }
    }
}

/// How the per-sample gradients are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GradReduction {
    /// The notebook's `Backward`: `(P - Y)^T X`, summed over the samples.
    #[default]
    Sum,
    /// Divided by M: the true gradient of the mean loss.
    Mean,
}

impl GradReduction {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sum => "sum",
            Self::Mean => "mean",
        }
    }
}

/// Everything about a network but its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
    pub layers: Vec<usize>,
    pub activation: Activation,
    pub bias: bool,
    pub grad_reduction: GradReduction,
    pub learning_rate: f64,
}

impl NetConfig {
    /// The notebook's defaults around the given layer sizes.
    pub fn new(layers: Vec<usize>) -> Self {
        Self {
            layers,
            activation: Activation::Relu,
            bias: false,
            grad_reduction: GradReduction::Sum,
            learning_rate: 0.0001,
        }
    }

    /// Checks sizes and the learning rate; `max_parameters` bounds weights plus biases.
    /// Runs before anything is allocated, so `[100000, 100000]` costs nothing to refuse.
    pub fn validate(&self, max_parameters: u64) -> Result<()> {
        let n = self.layers.len();
        if !(2..=MAX_LAYERS + 1).contains(&n) {
            return Err(NnError::InvalidValue(format!(
                "layers has {n} sizes; it takes 2 to {} sizes ([n_in, ..., n_out]), \
                 that is 1 to {MAX_LAYERS} weight layers",
                MAX_LAYERS + 1
            )));
        }
        if let Some(k) = self.layers.iter().position(|&s| s == 0) {
            return Err(NnError::InvalidValue(format!(
                "layers[{k}] is 0; every layer size must be at least 1"
            )));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(NnError::InvalidValue(format!(
                "learning_rate is {}; it must be a finite number greater than 0",
                self.learning_rate
            )));
        }
        let count = self.parameter_count();
        if count > u128::from(max_parameters) {
            return Err(NnError::TooLarge(format!(
                "layers {:?} have {count} parameters (weights and biases); \
                 this server allows at most {max_parameters}",
                self.layers
            )));
        }
        Ok(())
    }

    /// Weights plus biases; saturates rather than wrapping, so no sizes can sneak under a limit.
    pub fn parameter_count(&self) -> u128 {
        self.layers.windows(2).fold(0u128, |total, w| {
            let (i, o) = (w[0] as u128, w[1] as u128);
            let layer = o
                .saturating_mul(i)
                .saturating_add(if self.bias { o } else { 0 });
            total.saturating_add(layer)
        })
    }

    /// `(out, in)` of each weight layer.
    pub fn shapes(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.layers.windows(2).map(|w| (w[1], w[0]))
    }

    pub fn n_in(&self) -> usize {
        self.layers[0]
    }

    pub fn n_out(&self) -> usize {
        self.layers[self.layers.len() - 1]
    }
}

/// Weights `W_k` of shape `(out, in)`, and biases `b_k` of shape `(out,)` when the net has them.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub weights: Vec<Array2<f64>>,
    pub biases: Option<Vec<Array1<f64>>>,
}

impl Params {
    /// All zeros in the config's shapes.
    pub fn zeros(config: &NetConfig) -> Self {
        Self {
            weights: config.shapes().map(Array2::zeros).collect(),
            biases: config
                .bias
                .then(|| config.shapes().map(|(o, _)| Array1::zeros(o)).collect()),
        }
    }

    /// Parameters from nested rows (as JSON gives them), checked against the config's shapes.
    /// Omitted biases on a bias net are zeros; biases on a net without bias are an error.
    pub fn from_rows(
        config: &NetConfig,
        weights: Vec<Vec<Vec<f64>>>,
        biases: Option<Vec<Vec<f64>>>,
    ) -> Result<Self> {
        let shapes: Vec<(usize, usize)> = config.shapes().collect();
        if weights.len() != shapes.len() {
            return Err(NnError::ShapeMismatch(format!(
                "weights has {} matrices; layers {:?} need {} (one (out, in) matrix per layer)",
                weights.len(),
                config.layers,
                shapes.len()
            )));
        }
        let mut ws = Vec::with_capacity(shapes.len());
        for (k, (rows, &(o, i))) in weights.into_iter().zip(&shapes).enumerate() {
            if rows.len() != o || rows.iter().any(|r| r.len() != i) {
                let got = match rows.iter().position(|r| r.len() != rows[0].len()) {
                    Some(r) => format!(
                        "ragged rows (row 0 has {} values, row {r} has {})",
                        rows[0].len(),
                        rows[r].len()
                    ),
                    None => format!(
                        "shape ({}, {})",
                        rows.len(),
                        rows.first().map_or(0, Vec::len)
                    ),
                };
                return Err(NnError::ShapeMismatch(format!(
                    "weights[{k}] has {got}; layer {k} takes shape ({o}, {i}) as (out, in)"
                )));
            }
            let flat: Vec<f64> = rows.into_iter().flatten().collect();
            check_finite(&flat, || format!("weights[{k}]"))?;
            ws.push(
                Array2::from_shape_vec((o, i), flat)
                    .map_err(|e| NnError::ShapeMismatch(format!("weights[{k}]: {e}")))?,
            );
        }
        let bs = match (config.bias, biases) {
            (false, Some(_)) => {
                return Err(NnError::ShapeMismatch(
                    "biases were given, but this network has no bias; \
                     create it with \"bias\": true or leave biases out"
                        .into(),
                ));
            }
            (false, None) => None,
            (true, None) => Some(shapes.iter().map(|&(o, _)| Array1::zeros(o)).collect()),
            (true, Some(bs)) => {
                if bs.len() != shapes.len() {
                    return Err(NnError::ShapeMismatch(format!(
                        "biases has {} vectors; layers {:?} need {}",
                        bs.len(),
                        config.layers,
                        shapes.len()
                    )));
                }
                let mut out = Vec::with_capacity(bs.len());
                for (k, (b, &(o, _))) in bs.into_iter().zip(&shapes).enumerate() {
                    if b.len() != o {
                        return Err(NnError::ShapeMismatch(format!(
                            "biases[{k}] has {} values; layer {k} has {o} outputs",
                            b.len()
                        )));
                    }
                    check_finite(&b, || format!("biases[{k}]"))?;
                    out.push(Array1::from(b));
                }
                Some(out)
            }
        };
        Ok(Self {
            weights: ws,
            biases: bs,
        })
    }

    pub fn all_finite(&self) -> bool {
        self.weights.iter().all(|w| w.iter().all(|v| v.is_finite()))
            && self
                .biases
                .iter()
                .flatten()
                .all(|b| b.iter().all(|v| v.is_finite()))
    }
}

fn check_finite(values: &[f64], what: impl Fn() -> String) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(NnError::InvalidValue(format!(
            "{} holds a non-finite value at flat index {i}; every value must be finite",
            what()
        ))),
        None => Ok(()),
    }
}

/// A network: its config and its current parameters, always of the config's shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    config: NetConfig,
    params: Params,
}

impl Network {
    /// Builds the network. The caller checks the parameter limit with
    /// [`NetConfig::validate`]; the rest is checked again here, because a net with fewer than
    /// two sizes would have no layer to run.
    pub fn new(config: NetConfig, init: &super::Init) -> Result<Self> {
        config.validate(u64::MAX)?;
        let params = init.params(&config)?;
        Ok(Self { config, params })
    }

    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Replaces the parameters; the new ones must have this net's shapes.
    pub fn set_params(&mut self, params: Params) -> Result<()> {
        let shapes_ok = params.weights.len() == self.params.weights.len()
            && params
                .weights
                .iter()
                .zip(&self.params.weights)
                .all(|(a, b)| a.dim() == b.dim())
            && match (&params.biases, &self.params.biases) {
                (None, None) => true,
                (Some(a), Some(b)) => {
                    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.len() == y.len())
                }
                _ => false,
            };
        if !shapes_ok {
            return Err(NnError::ShapeMismatch(format!(
                "the new parameters do not have the shapes of layers {:?}",
                self.config.layers
            )));
        }
        self.params = params;
        Ok(())
    }

    pub(crate) fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }
}

/// Gradients of the mean cross-entropy loss, reduced as the net's config says.
#[derive(Debug, Clone, PartialEq)]
pub struct Grads {
    /// The loss at the parameters the gradients were taken at.
    pub loss: f64,
    pub weights: Vec<Array2<f64>>,
    pub biases: Option<Vec<Array1<f64>>>,
}
