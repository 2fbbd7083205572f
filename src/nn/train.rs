//! Forward, backward, step: full-batch gradient descent on the whole `(M, n_in)` batch.
//!
//! Forward: `Z_k = A_{k-1} W_k^T (+ b_k)`, `A_k = f(Z_k)` for hidden layers, and for the last
//! layer softmax and cross-entropy fused through log-sum-exp with the row maximum subtracted,
//! so the loss is finite for any finite logits and `log(0)` never happens.
//! Backward: `D_L = (P - Y) * s` (`s` = 1 for `sum`, 1/M for `mean`), `dW_k = D_k^T A_{k-1}`,
//! `db_k = sum_rows D_k`, `D_{k-1} = (D_k W_k) * f'(A_{k-1})`.
//! Step: `W_k <- W_k - lr * dW_k`, exactly the notebook's `W -= lr * dW`.
//!
//! Every buffer lives in a [`Workspace`] sized once for the batch, so the training loop
//! allocates nothing after its first epoch.

use ndarray::{Array1, Array2, ArrayView2, Zip};

use super::data::Dataset;
use super::error::{NnError, Result};
use super::linalg::matmul_into;
use super::network::{GradReduction, Grads, NetConfig, Network, Params};

/// Buffers for one batch size. `acts[k]` holds layer k's activation (softmax probabilities
/// for the last layer); `deltas[k]` holds `dL/dZ_k`.
struct Workspace {
    acts: Vec<Array2<f64>>,
    deltas: Vec<Array2<f64>>,
    grad_w: Vec<Array2<f64>>,
    grad_b: Option<Vec<Array1<f64>>>,
    /// Filled only for a trace: each layer's `Z_k`, and `dL/dA_k` before `f'` is applied.
    record: Option<Recorded>,
}

struct Recorded {
    pre: Vec<Array2<f64>>,
    upstream: Vec<Array2<f64>>,
}

impl Workspace {
    fn new(config: &NetConfig, m: usize, record: bool) -> Self {
        let outs = || {
            config
                .shapes()
                .map(|(o, _)| Array2::zeros((m, o)))
                .collect::<Vec<_>>()
        };
        let zeros = Params::zeros(config);
        Self {
            acts: outs(),
            deltas: outs(),
            grad_w: zeros.weights,
            grad_b: zeros.biases,
            record: record.then(|| Recorded {
                pre: outs(),
                upstream: outs(),
            }),
        }
    }

    /// The bytes [`Workspace::new`] allocates: what a pass over `m` samples holds besides its
    /// inputs (the server admits requests by it before anything is allocated).
    fn bytes(config: &NetConfig, m: usize, record: bool) -> u128 {
        let outs: u128 = config.shapes().map(|(o, _)| o as u128).sum();
        let per_layer_buffers = if record { 4 } else { 2 };
        let activations = per_layer_buffers * (m as u128).saturating_mul(outs);
        8 * activations.saturating_add(config.parameter_count())
    }

    /// Fills `acts`; returns the mean cross-entropy against `y` (0 without labels), or NaN
    /// if any logit or pre-activation was not finite.
    fn forward(
        &mut self,
        config: &NetConfig,
        params: &Params,
        x: ArrayView2<'_, f64>,
        y: Option<ArrayView2<'_, f64>>,
    ) -> f64 {
        let last = params.weights.len() - 1;
        let act = config.activation;
        let mut finite = true;
        for k in 0..=last {
            let (done, rest) = self.acts.split_at_mut(k);
            let input = if k == 0 { x } else { done[k - 1].view() };
            let z = &mut rest[0];
            matmul_into(&mut z.view_mut(), input, params.weights[k].t());
            if let Some(bs) = &params.biases {
                *z += &bs[k];
            }
            if let Some(r) = &mut self.record {
                r.pre[k].assign(z);
            }
            if k < last {
                // Check while applying: ReLU would turn a NaN into 0 and hide an overflow.
                z.mapv_inplace(|v| {
                    finite &= v.is_finite();
                    act.apply(v)
                });
            }
        }
        let probs = &mut self.acts[last];
        let m = probs.nrows();
        let mut loss = 0.0;
        for (j, mut row) in probs.rows_mut().into_iter().enumerate() {
            let max = row.fold(f64::NEG_INFINITY, |a, &b| {
                finite &= b.is_finite();
                a.max(b)
            });
            // One exp per logit: p = e / sum(e), as the notebook's Softmax computes it; the
            // loss needs log p only where the label is nonzero.
            let (mut sum, mut tz, mut tsum) = (0.0, 0.0, 0.0);
            for (i, p) in row.iter_mut().enumerate() {
                let z = *p - max;
                if let Some(y) = &y {
                    let t = y[(j, i)];
                    // Skipping t == 0 keeps 0 * (-inf) out of the sum.
                    if t != 0.0 {
                        tz += t * z;
                        tsum += t;
                    }
                }
                let e = z.exp();
                sum += e;
                *p = e;
            }
            loss -= tz - tsum * sum.ln();
            row.mapv_inplace(|e| e / sum);
        }
        if !finite {
            return f64::NAN;
        }
        // log_p <= 0, so the loss is >= 0; `+ 0.0` turns a -0.0 into 0.0.
        loss / m as f64 + 0.0
    }

    /// Fills the gradients from the activations of the last `forward`.
    fn backward(
        &mut self,
        config: &NetConfig,
        params: &Params,
        x: ArrayView2<'_, f64>,
        y: ArrayView2<'_, f64>,
    ) {
        let last = params.weights.len() - 1;
        let scale = match config.grad_reduction {
            GradReduction::Sum => 1.0,
            GradReduction::Mean => 1.0 / y.nrows() as f64,
        };
        Zip::from(&mut self.deltas[last])
            .and(&self.acts[last])
            .and(y)
            .for_each(|d, &p, &t| *d = (p - t) * scale);
        if let Some(r) = &mut self.record {
            r.upstream[last].assign(&self.deltas[last]);
        }
        for k in (0..=last).rev() {
            let input = if k == 0 { x } else { self.acts[k - 1].view() };
            matmul_into(&mut self.grad_w[k].view_mut(), self.deltas[k].t(), input);
            if let Some(gb) = &mut self.grad_b {
                for (g, col) in gb[k].iter_mut().zip(self.deltas[k].columns()) {
                    *g = col.sum();
                }
            }
            if k > 0 {
                let (below, here) = self.deltas.split_at_mut(k);
                let d = &mut below[k - 1];
                matmul_into(&mut d.view_mut(), here[0].view(), params.weights[k].view());
                if let Some(r) = &mut self.record {
                    r.upstream[k - 1].assign(d);
                }
                let act = config.activation;
                Zip::from(d)
                    .and(&self.acts[k - 1])
                    .for_each(|d, &a| *d *= act.derivative(a));
            }
        }
    }

    fn grads_finite(&self) -> bool {
        self.grad_w.iter().all(|g| g.iter().all(|v| v.is_finite()))
            && self
                .grad_b
                .iter()
                .flatten()
                .all(|g| g.iter().all(|v| v.is_finite()))
    }
}

/// Bytes the buffers of one pass over `m` samples take, as [`predict`], [`gradients`] and
/// (with `record`) [`trace`] allocate them: every layer's activations and `dL/dZ` for all
/// `m` samples (and, for a trace, `Z` and `dL/dA` too), and a gradient for every parameter.
/// The products' packing buffers are per thread and bounded apart: [`GEMM_SCRATCH_BYTES`].
///
/// [`GEMM_SCRATCH_BYTES`]: super::GEMM_SCRATCH_BYTES
pub fn workspace_bytes(config: &NetConfig, m: usize, record: bool) -> u128 {
    Workspace::bytes(config, m, record)
}

/// What the control hook tells the loop at an epoch boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainStatus {
    /// All requested epochs ran.
    Completed,
    /// An update would have made a weight or the loss non-finite; it was not applied.
    Diverged,
    /// The control hook stopped the run at an epoch boundary.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainOutcome {
    pub status: TrainStatus,
    /// Updates applied (and losses appended to the history).
    pub epochs_run: u64,
    /// The loss at the weights the run started from; `None` if that forward pass overflowed.
    pub start_loss: Option<f64>,
}

/// Trains one network on one dataset, reusing its buffers across epochs and calls.
pub struct Trainer {
    ws: Workspace,
    next: Params,
}

impl Trainer {
    /// Bytes a trainer for `config` on `m` samples holds: one pass's buffers and the next
    /// parameters (the network it trains is the caller's).
    pub fn bytes(config: &NetConfig, m: usize) -> u128 {
        Workspace::bytes(config, m, false).saturating_add(8 * config.parameter_count())
    }

    pub fn new(net: &Network, data: &Dataset) -> Self {
        Self {
            ws: Workspace::new(net.config(), data.samples(), false),
            next: net.params().clone(),
        }
    }

    /// Whether the buffers were sized for this net's shapes and this many samples.
    fn fits(&self, net: &Network, data: &Dataset) -> bool {
        let p = net.params();
        self.ws
            .acts
            .first()
            .is_some_and(|a| a.nrows() == data.samples())
            && self.next.weights.len() == p.weights.len()
            && self
                .next
                .weights
                .iter()
                .zip(&p.weights)
                .all(|(a, b)| a.dim() == b.dim())
            && self.next.biases.is_some() == p.biases.is_some()
            && self.ws.grad_b.is_some() == p.biases.is_some()
    }

    /// Runs up to `epochs` updates, appending the loss after each to `history`.
    ///
    /// `control(e)` is called before epoch `e` (0-based) and may stop the run there. The
    /// loss after update k comes from epoch k+1's forward pass, so a run of N epochs costs
    /// N + 1 forward passes: one more than the updates, once per call.
    ///
    /// `data` must have the net's `n_in` features and `n_out` classes, as a [`Dataset`] built
    /// for it does. It need not be the dataset the trainer was made for: the buffers are
    /// resized when the sample count or the net's shapes changed.
    pub fn run(
        &mut self,
        net: &mut Network,
        data: &Dataset,
        epochs: u64,
        history: &mut Vec<f64>,
        mut control: impl FnMut(u64) -> Control,
    ) -> TrainOutcome {
        // A trainer kept across calls may meet another dataset size or network: resize
        // rather than hand the products buffers of the wrong shape.
        if !self.fits(net, data) {
            *self = Self::new(net, data);
        }
        let config = net.config().clone();
        let (x, y) = (data.x().view(), data.y().view());
        let start = self.ws.forward(&config, net.params(), x, Some(y));
        if !start.is_finite() {
            return TrainOutcome {
                status: TrainStatus::Diverged,
                epochs_run: 0,
                start_loss: None,
            };
        }
        // Reserve up front so pushing never reallocates mid-run (bounded for absurd requests).
        history.reserve(usize::try_from(epochs).unwrap_or(usize::MAX).min(1 << 24));
        let lr = config.learning_rate;
        let mut status = TrainStatus::Completed;
        let mut run = 0;
        while run < epochs {
            if control(run) == Control::Stop {
                status = TrainStatus::Stopped;
                break;
            }
            self.ws.backward(&config, net.params(), x, y);
            if !step(&mut self.next, net.params(), &self.ws, lr) {
                status = TrainStatus::Diverged;
                break;
            }
            let loss = self.ws.forward(&config, &self.next, x, Some(y));
            if !loss.is_finite() {
                status = TrainStatus::Diverged;
                break;
            }
            std::mem::swap(net.params_mut(), &mut self.next);
            history.push(loss);
            run += 1;
        }
        TrainOutcome {
            status,
            epochs_run: run,
            start_loss: Some(start),
        }
    }
}

/// `next = params - lr * grads`; false if any result is not finite.
fn step(next: &mut Params, params: &Params, ws: &Workspace, lr: f64) -> bool {
    let mut finite = true;
    for ((n, w), g) in next.weights.iter_mut().zip(&params.weights).zip(&ws.grad_w) {
        match (n.as_slice_mut(), w.as_slice(), g.as_slice()) {
            (Some(n), Some(w), Some(g)) => {
                for ((n, &w), &g) in n.iter_mut().zip(w).zip(g) {
                    *n = w - lr * g;
                    finite &= n.is_finite();
                }
            }
            _ => Zip::from(n).and(w).and(g).for_each(|n, &w, &g| {
                *n = w - lr * g;
                finite &= n.is_finite();
            }),
        }
    }
    if let (Some(nb), Some(pb), Some(gb)) = (&mut next.biases, &params.biases, &ws.grad_b) {
        for ((n, b), g) in nb.iter_mut().zip(pb).zip(gb) {
            Zip::from(n).and(b).and(g).for_each(|n, &b, &g| {
                *n = b - lr * g;
                finite &= n.is_finite();
            });
        }
    }
    finite
}

fn overflow(what: &str) -> NnError {
    NnError::NonFinite(format!(
        "{what} overflowed: a value left the range of f64 (are the inputs near 1e308?); \
         scale the inputs or the weights down"
    ))
}

/// A dataset of another width than the net's layers would reach the products with the
/// wrong shapes; [`Dataset::new`] for this net rules that out, this says so for any other.
fn check_fits(config: &NetConfig, data: &Dataset) -> Result<()> {
    if data.features() != config.n_in() || data.classes() != config.n_out() {
        return Err(NnError::ShapeMismatch(format!(
            "the dataset has {} features and {} classes; layers {:?} take {} and {}",
            data.features(),
            data.classes(),
            config.layers,
            config.n_in(),
            config.n_out()
        )));
    }
    Ok(())
}

/// The loss and gradients at the current parameters, changing nothing.
pub fn gradients(net: &Network, data: &Dataset) -> Result<Grads> {
    let config = net.config();
    check_fits(config, data)?;
    let mut ws = Workspace::new(config, data.samples(), false);
    let (x, y) = (data.x().view(), data.y().view());
    let loss = ws.forward(config, net.params(), x, Some(y));
    if !loss.is_finite() {
        return Err(overflow("the forward pass"));
    }
    ws.backward(config, net.params(), x, y);
    if !ws.grads_finite() {
        return Err(overflow("the backward pass"));
    }
    Ok(Grads {
        loss,
        weights: ws.grad_w,
        biases: ws.grad_b,
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// `(M, n_out)`, each row a softmax distribution.
    pub probabilities: Array2<f64>,
    /// The argmax of each row; the first index wins a tie.
    pub classes: Vec<usize>,
    /// With labels: the mean cross-entropy, and the fraction of samples whose argmaxes agree.
    pub loss: Option<f64>,
    pub accuracy: Option<f64>,
}

fn argmax(row: ndarray::ArrayView1<'_, f64>) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// A forward pass on `x` (`(M, n_in)`), with loss and accuracy when `y` is given.
pub fn predict(net: &Network, x: &Array2<f64>, y: Option<&Array2<f64>>) -> Result<Prediction> {
    let config = net.config();
    if x.ncols() != config.n_in() || y.is_some_and(|y| y.dim() != (x.nrows(), config.n_out())) {
        return Err(NnError::ShapeMismatch(format!(
            "x is {:?}; the network takes (M, {}) with labels (M, {})",
            x.dim(),
            config.n_in(),
            config.n_out()
        )));
    }
    // With no rows the mean loss would be 0/0, reported as an overflow.
    if x.nrows() == 0 {
        return Err(NnError::ShapeMismatch(
            "x holds no samples; send at least one".into(),
        ));
    }
    let mut ws = Workspace::new(config, x.nrows(), false);
    let loss = ws.forward(config, net.params(), x.view(), y.map(|y| y.view()));
    if !loss.is_finite() {
        return Err(overflow("the forward pass"));
    }
    let probabilities = ws.acts.pop().unwrap_or_default();
    let classes: Vec<usize> = probabilities.rows().into_iter().map(argmax).collect();
    let accuracy = y.map(|y| {
        let hits = y
            .rows()
            .into_iter()
            .zip(&classes)
            .filter(|(t, c)| argmax(t.view()) == **c)
            .count();
        hits as f64 / classes.len().max(1) as f64
    });
    Ok(Prediction {
        probabilities,
        classes,
        loss: y.map(|_| loss),
        accuracy,
    })
}

/// Every intermediate of one forward and backward pass, per layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerTrace {
    pub input: Array2<f64>,
    pub pre_activation: Array2<f64>,
    pub activation: Array2<f64>,
    /// `dL/dA_k`; for the last layer `P - Y` (scaled by 1/M for `mean`).
    pub upstream_gradient: Array2<f64>,
    /// `f'(Z_k)`; ones for the last layer, whose softmax is fused into the loss.
    pub local_gradient: Array2<f64>,
    pub weight_gradient: Array2<f64>,
    pub bias_gradient: Option<Array1<f64>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub layers: Vec<LayerTrace>,
    pub probabilities: Array2<f64>,
    pub loss: f64,
}

/// One forward and backward pass on `data`, keeping every intermediate.
pub fn trace(net: &Network, data: &Dataset) -> Result<Trace> {
    let config = net.config();
    check_fits(config, data)?;
    let mut ws = Workspace::new(config, data.samples(), true);
    let (x, y) = (data.x().view(), data.y().view());
    let loss = ws.forward(config, net.params(), x, Some(y));
    if !loss.is_finite() {
        return Err(overflow("the forward pass"));
    }
    ws.backward(config, net.params(), x, y);
    if !ws.grads_finite() {
        return Err(overflow("the backward pass"));
    }
    let Workspace {
        acts,
        grad_w,
        grad_b,
        record,
        ..
    } = ws;
    let Some(Recorded { pre, upstream }) = record else {
        return Err(NnError::NonFinite("trace buffers missing".into()));
    };
    let last = acts.len() - 1;
    let mut grad_b = grad_b.map(Vec::into_iter);
    let mut layers = Vec::with_capacity(acts.len());
    for (k, ((z, up), gw)) in pre.into_iter().zip(upstream).zip(grad_w).enumerate() {
        let a = &acts[k];
        let local = if k == last {
            Array2::ones(a.dim())
        } else {
            a.mapv(|v| config.activation.derivative(v))
        };
        layers.push(LayerTrace {
            input: if k == 0 {
                data.x().clone()
            } else {
                acts[k - 1].clone()
            },
            pre_activation: z,
            activation: a.clone(),
            upstream_gradient: up,
            local_gradient: local,
            weight_gradient: gw,
            bias_gradient: grad_b.as_mut().and_then(Iterator::next),
        });
    }
    Ok(Trace {
        layers,
        probabilities: acts[last].clone(),
        loss,
    })
}
