//! Forward, backward, step: full-batch gradient descent on the whole `(M, n_in)` batch.
//!
//! Forward: `Z_k = A_{k-1} W_k^T (+ b_k)`, `A_k = f(Z_k)` for hidden layers, and for the last
//! layer softmax and cross-entropy fused through log-sum-exp with the row maximum subtracted,
//! so the loss is finite for any finite logits and `log(0)` never happens.
//! Backward: `D_L = (P - Y) * s` (`s` = 1 for `sum`, 1/M for `mean`), `dW_k = D_k^T A_{k-1}`,
//! `db_k = sum_rows D_k`, `D_{k-1} = (D_k W_k) * f'(A_{k-1})`.
//! Step: `W_k <- W_k - lr * dW_k`, exactly the notebook's `W -= lr * dW`.
//!
//! Everything but `dW_k` and `db_k` is row by row, so the forward pass and the deltas run on
//! chunks of [`CHUNK_ROWS`] samples, each chunk through every layer while its rows are in
//! cache. The weight gradients sum over the samples; they run after, as one product per
//! block of output units (see [`gradient_blocks`]). Chunks and blocks depend on the shapes
//! alone, and each is one product computed the same way on whichever thread takes it, so a
//! [`Trainer`] gives the same bits for any thread count: no sum is ever split by thread.
//! The loss is summed over the samples in order, after the chunks are done.
//!
//! Every buffer lives in a [`Workspace`] sized once for the batch (its large ones are kept
//! per thread for the next workspace, see `batch.rs`); single-threaded, the core allocates
//! nothing after its first epoch (the gemm crate allocates packing buffers on each call of
//! a product past the plain loop's limit).

use std::borrow::Cow;

use arrayvec::ArrayVec;
use ndarray::{Array1, Array2, ArrayView1};
use rayon::ThreadPool;
use rayon::prelude::*;

use super::batch::Batch;
use super::data::Dataset;
use super::error::{NnError, Result};
use super::linalg::{Strided, matmul_rows};
use super::network::{Activation, GradReduction, Grads, MAX_LAYERS, NetConfig, Network, Params};

/// Samples per chunk of the forward pass: a chunk's activations and deltas of a `[64, 128,
/// 10]` net (about 700 KiB) stay in a core's L2 cache from one layer to the next (256, 512
/// and 1024 measured alike). Part of the arithmetic: changing it changes the last bits.
const CHUNK_ROWS: usize = 256;
/// A weight gradient gets one block per this many multiply-adds...
const BLOCK_WORK: usize = 1 << 26;
/// ...of at least this many output units or inputs each...
const MIN_BLOCK: usize = 64;
/// ...and at most this many blocks.
const MAX_BLOCKS: usize = 8;

type PerLayer<T> = ArrayVec<T, MAX_LAYERS>;

/// Buffers for one batch of `m` samples, each row-major. `acts[k]` is layer k's activation
/// `(m, out_k)` (softmax probabilities for the last layer); `deltas[k]` is `dL/dZ_k`, empty
/// for a forward-only workspace; `grad_w[k]` is `(out_k, in_k)`.
struct Workspace {
    m: usize,
    acts: Vec<Batch>,
    deltas: Vec<Batch>,
    /// Each sample's term of the loss, summed in sample order once every chunk is done.
    row_loss: Batch,
    grad_w: Vec<Vec<f64>>,
    grad_b: Option<Vec<Vec<f64>>>,
    /// Filled only for a trace: each layer's `Z_k`, and `dL/dA_k` before `f'` is applied.
    record: Option<Recorded>,
}

struct Recorded {
    pre: Vec<Batch>,
    upstream: Vec<Batch>,
}

/// The parameters and settings one pass reads, shared by every chunk.
struct Pass<'a> {
    config: &'a NetConfig,
    params: &'a Params,
    /// `s` of `D_L = (P - Y) * s`.
    scale: f64,
}

/// An array's elements in row-major order: borrowed when they already are (every array
/// this crate makes), copied otherwise.
fn row_major<D: ndarray::Dimension>(a: &ndarray::Array<f64, D>) -> Cow<'_, [f64]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

fn rows(s: &[f64], rows: usize, cols: usize) -> Strided<'_> {
    Strided::rows(s, rows, cols)
}

impl<'a> Pass<'a> {
    fn new(config: &'a NetConfig, params: &'a Params, scale: f64) -> Self {
        Self {
            config,
            params,
            scale,
        }
    }

    /// `(out, in)` of layer k.
    fn shape(&self, k: usize) -> (usize, usize) {
        (self.config.layers[k + 1], self.config.layers[k])
    }

    fn weights(&self, k: usize) -> Cow<'a, [f64]> {
        row_major(&self.params.weights[k])
    }
}

/// One chunk of `n` rows of every batch buffer: what one task of the forward pass owns.
#[derive(Default)]
struct Rows<'a> {
    n: usize,
    x: &'a [f64],
    y: Option<&'a [f64]>,
    acts: PerLayer<&'a mut [f64]>,
    /// Empty when the pass computes no deltas.
    deltas: PerLayer<&'a mut [f64]>,
    loss: &'a mut [f64],
    /// Empty unless tracing.
    pre: PerLayer<&'a mut [f64]>,
    upstream: PerLayer<&'a mut [f64]>,
}

/// One independent piece of the weight gradients.
enum Block<'a> {
    /// `dst = lhs · rhs`: a block of `dW_k = D_k^T A_{k-1}`.
    Product {
        dst: &'a mut [f64],
        lhs: Strided<'a>,
        rhs: Strided<'a>,
    },
    /// `dst = sum_rows d`, each column summed in sample order: `db_k`.
    ColumnSums { dst: &'a mut [f64], d: &'a [f64] },
}

impl Workspace {
    /// `backward`: room for the deltas and gradients; `record`: for a trace.
    fn new(config: &NetConfig, m: usize, backward: bool, record: bool) -> Self {
        let outs = || {
            config
                .shapes()
                .map(|(o, _)| Batch::new(m * o))
                .collect::<Vec<_>>()
        };
        let weights = || config.shapes().map(|(o, i)| vec![0.0; o * i]).collect();
        let biases = || config.shapes().map(|(o, _)| vec![0.0; o]).collect();
        Self {
            m,
            acts: outs(),
            deltas: if backward { outs() } else { Vec::new() },
            row_loss: Batch::new(m),
            grad_w: if backward { weights() } else { Vec::new() },
            grad_b: (backward && config.bias).then(biases),
            record: record.then(|| Recorded {
                pre: outs(),
                upstream: outs(),
            }),
        }
    }

    /// Calls `f` with each chunk of the buffers' rows, in order. With `backward`, each chunk
    /// gets its deltas too. (One `Rows` is refilled in place: moving a `Rows`, four arrays of
    /// up to eight slices, was 12% of a notebook-sized epoch.)
    fn for_each_chunk<'a>(
        &'a mut self,
        layers: &[usize],
        x: &'a [f64],
        y: Option<&'a [f64]>,
        backward: bool,
        mut f: impl FnMut(&mut Rows<'a>),
    ) {
        fn all(bufs: &mut [Batch]) -> PerLayer<&mut [f64]> {
            bufs.iter_mut().map(|b| &mut **b).collect()
        }
        let widths = &layers[1..];
        // Moves the first `n` rows of each buffer of `rest` into `head`.
        let cut = |rest: &mut PerLayer<&'a mut [f64]>, head: &mut PerLayer<&'a mut [f64]>, n| {
            head.clear();
            for (buf, w) in rest.iter_mut().zip(widths) {
                let (first, tail) = std::mem::take(buf).split_at_mut(n * w);
                *buf = tail;
                head.push(first);
            }
        };
        let Workspace {
            acts,
            deltas,
            row_loss,
            record,
            ..
        } = self;
        let mut acts = all(acts);
        let mut deltas = if backward {
            all(deltas)
        } else {
            PerLayer::new()
        };
        let (mut pre, mut upstream) = match record {
            Some(r) => (all(&mut r.pre), all(&mut r.upstream)),
            None => (PerLayer::new(), PerLayer::new()),
        };
        let (n_in, n_out) = (layers[0], layers[layers.len() - 1]);
        let mut rows = Rows::default();
        for (c, loss) in row_loss.chunks_mut(CHUNK_ROWS).enumerate() {
            let (r0, n) = (c * CHUNK_ROWS, loss.len());
            rows.n = n;
            rows.x = &x[r0 * n_in..(r0 + n) * n_in];
            rows.y = y.map(|y| &y[r0 * n_out..(r0 + n) * n_out]);
            rows.loss = loss;
            cut(&mut acts, &mut rows.acts, n);
            cut(&mut deltas, &mut rows.deltas, n);
            cut(&mut pre, &mut rows.pre, n);
            cut(&mut upstream, &mut rows.upstream, n);
            f(&mut rows);
        }
    }

    /// Fills `acts` (and, with `backward`, the deltas) for the `(m, n_in)` batch `x`;
    /// returns the mean cross-entropy against `y` (0 without labels), or NaN if any logit or
    /// pre-activation was not finite.
    fn forward(
        &mut self,
        pass: &Pass<'_>,
        x: &[f64],
        y: Option<&[f64]>,
        backward: bool,
        pool: Option<&ThreadPool>,
    ) -> f64 {
        let backward = backward && y.is_some() && !self.deltas.is_empty();
        let m = self.m;
        let layers = &pass.config.layers;
        let finite = match pool {
            Some(pool) if m > CHUNK_ROWS => {
                let mut chunks = Vec::with_capacity(m.div_ceil(CHUNK_ROWS));
                self.for_each_chunk(layers, x, y, backward, |c| {
                    chunks.push(std::mem::take(c));
                });
                pool.install(|| {
                    chunks
                        .into_par_iter()
                        .map(|mut c| c.run(pass))
                        .reduce(|| true, |a, b| a & b)
                })
            }
            _ => {
                let mut finite = true;
                self.for_each_chunk(layers, x, y, backward, |c| finite &= c.run(pass));
                finite
            }
        };
        if !finite {
            return f64::NAN;
        }
        let mut loss = 0.0;
        for term in self.row_loss.iter() {
            loss -= term;
        }
        // log_p <= 0, so the loss is >= 0; `+ 0.0` turns a -0.0 into 0.0.
        loss / m as f64 + 0.0
    }

    /// Fills the gradients from the deltas of the last `forward` with `backward`; `x` must be
    /// the batch that pass ran on.
    fn gradients(&mut self, config: &NetConfig, x: &[f64], pool: Option<&ThreadPool>) {
        let m = self.m;
        let Workspace {
            acts,
            deltas,
            grad_w,
            grad_b,
            ..
        } = self;
        let mut blocks: ArrayVec<Block<'_>, { MAX_LAYERS * (MAX_BLOCKS + 1) }> = ArrayVec::new();
        let mut grad_b = grad_b.as_mut().map(|b| b.iter_mut());
        let shapes = config.shapes();
        for (k, ((g, d), (out, inp))) in
            grad_w.iter_mut().zip(deltas.iter()).zip(shapes).enumerate()
        {
            let input = if k == 0 { x } else { &acts[k - 1] };
            let (lhs, rhs) = (rows(d, m, out), rows(input, m, inp));
            // Rows [done, end) of dW are D[:, done..end]^T A: contiguous rows of `g`.
            let n = gradient_blocks(m, out, inp);
            let mut rest = &mut g[..];
            let mut done = 0;
            for b in 1..=n {
                let end = out * b / n;
                let (head, tail) = std::mem::take(&mut rest).split_at_mut((end - done) * inp);
                blocks.push(Block::Product {
                    dst: head,
                    lhs: lhs.cols(done, end - done).t(),
                    rhs,
                });
                (rest, done) = (tail, end);
            }
            if let Some(gb) = grad_b.as_mut().and_then(Iterator::next) {
                blocks.push(Block::ColumnSums { dst: gb, d });
            }
        }
        match pool {
            Some(pool) if blocks.len() > 1 => {
                pool.install(|| blocks.par_iter_mut().for_each(Block::run));
            }
            _ => blocks.iter_mut().for_each(Block::run),
        }
    }

    fn grads_finite(&self) -> bool {
        self.grad_w
            .iter()
            .chain(self.grad_b.iter().flatten())
            .all(|g| g.iter().all(|v| v.is_finite()))
    }
}

/// Into how many blocks of rows (output units) `dW` of shape `(out, inp)` over `m` samples
/// is cut, each an independent product. Every block re-reads the whole `A`, which a single
/// thread pays for too, so a gradient gets a block per [`BLOCK_WORK`] multiply-adds, of at
/// least [`MIN_BLOCK`] rows. For `[64, 128, 10]` on 10,000 samples both gradients stay whole
/// (82M and 13M multiply-adds; two blocks of `dW_1` cost 0.45 ms more of a 12 ms
/// single-threaded epoch), and two threads compute them side by side. (Rows only: blocks of
/// columns would interleave in memory, and no slice can hand them to two threads.)
/// Depends on the shapes alone: the blocks are part of the arithmetic.
fn gradient_blocks(m: usize, out: usize, inp: usize) -> usize {
    let work = m.saturating_mul(out).saturating_mul(inp);
    (work / BLOCK_WORK)
        .min(out / MIN_BLOCK)
        .clamp(1, MAX_BLOCKS)
}

impl Block<'_> {
    fn run(&mut self) {
        match self {
            Block::Product { dst, lhs, rhs } => matmul_rows(dst, *lhs, *rhs),
            Block::ColumnSums { dst, d } => {
                dst.fill(0.0);
                for row in d.chunks_exact(dst.len()) {
                    dst.iter_mut().zip(row).for_each(|(g, v)| *g += v);
                }
            }
        }
    }
}

impl Rows<'_> {
    /// The forward pass (and the deltas, if this chunk has them) for these rows; false if a
    /// pre-activation or logit was not finite.
    fn run(&mut self, pass: &Pass<'_>) -> bool {
        let (n, last) = (self.n, self.acts.len() - 1);
        let act = pass.config.activation;
        let mut finite = true;
        for k in 0..=last {
            let (out, inp) = pass.shape(k);
            let (done, rest) = self.acts.split_at_mut(k);
            let input = if k == 0 { self.x } else { &*done[k - 1] };
            let z = &mut *rest[0];
            matmul_rows(z, rows(input, n, inp), rows(&pass.weights(k), out, inp).t());
            if let Some(bs) = &pass.params.biases {
                let b = row_major(&bs[k]);
                for row in z.chunks_exact_mut(out) {
                    row.iter_mut().zip(b.iter()).for_each(|(v, b)| *v += b);
                }
            }
            if let Some(pre) = self.pre.get_mut(k) {
                pre.copy_from_slice(z);
            }
            if k < last {
                // Check while applying: ReLU would turn a NaN into 0 and hide an overflow.
                finite &= simd(|| activate(z, act));
            }
        }
        let n_out = pass.shape(last).0;
        finite &= simd(|| softmax(self.acts[last], n_out, self.y, self.loss));
        if let (Some(y), false) = (self.y, self.deltas.is_empty()) {
            let scale = pass.scale;
            let (d, p) = (&mut *self.deltas[last], &*self.acts[last]);
            simd(|| {
                for ((d, &p), &t) in d.iter_mut().zip(p).zip(y) {
                    *d = (p - t) * scale;
                }
            });
            if let Some(u) = self.upstream.get_mut(last) {
                u.copy_from_slice(self.deltas[last]);
            }
            for k in (1..=last).rev() {
                let (out, inp) = pass.shape(k);
                let (below, here) = self.deltas.split_at_mut(k);
                let d = &mut *below[k - 1];
                matmul_rows(d, rows(here[0], n, out), rows(&pass.weights(k), out, inp));
                if let Some(u) = self.upstream.get_mut(k - 1) {
                    u.copy_from_slice(d);
                }
                simd(|| derive(d, self.acts[k - 1], act));
            }
        }
        finite
    }
}

/// Runs `f` compiled for the widest vector instructions this CPU has (AVX-512 or AVX2 on
/// x86-64, via pulp's runtime dispatch): the element-wise loops below vectorise 8 or 4 wide
/// instead of SSE2's 2. Element-wise arithmetic rounds the same at any width (Rust never contracts to FMA), so
/// the bits do not depend on it; the sums in `softmax` stay in index order.
#[inline(always)]
fn simd<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

/// `z = f(z)`; false if any `z` was not finite. The match is outside the loop so each
/// activation gets a loop of its own.
#[inline(always)]
fn activate(z: &mut [f64], act: Activation) -> bool {
    #[inline(always)]
    fn map(z: &mut [f64], f: impl Fn(f64) -> f64) -> bool {
        let mut finite = true;
        for v in z {
            finite &= v.is_finite();
            *v = f(*v);
        }
        finite
    }
    match act {
        Activation::Relu => map(z, |v| Activation::Relu.apply(v)),
        Activation::Sigmoid => map(z, |v| Activation::Sigmoid.apply(v)),
        Activation::Tanh => map(z, |v| Activation::Tanh.apply(v)),
    }
}

/// `d *= f'(a)`, with `f'` from the activation `a = f(z)`.
#[inline(always)]
fn derive(d: &mut [f64], a: &[f64], act: Activation) {
    #[inline(always)]
    fn map(d: &mut [f64], a: &[f64], f: impl Fn(f64) -> f64) {
        d.iter_mut().zip(a).for_each(|(d, &a)| *d *= f(a));
    }
    match act {
        Activation::Relu => map(d, a, |a| Activation::Relu.derivative(a)),
        Activation::Sigmoid => map(d, a, |a| Activation::Sigmoid.derivative(a)),
        Activation::Tanh => map(d, a, |a| Activation::Tanh.derivative(a)),
    }
}

/// Logits to probabilities in place, row by row (`width` to a row); each row's loss term
/// `sum_i t_i log p_i` (0 without labels) into `loss`. False if a logit was not finite.
#[inline(always)]
fn softmax(probs: &mut [f64], width: usize, y: Option<&[f64]>, loss: &mut [f64]) -> bool {
    let mut finite = true;
    for (j, (row, term)) in probs.chunks_exact_mut(width).zip(loss).enumerate() {
        let labels = y.map(|y| &y[j * width..(j + 1) * width]);
        let max = row.iter().fold(f64::NEG_INFINITY, |a, &b| {
            finite &= b.is_finite();
            a.max(b)
        });
        // One exp per logit: p = e / sum(e), as the notebook's Softmax computes it; the
        // loss needs log p only where the label is nonzero.
        let (mut sum, mut tz, mut tsum) = (0.0, 0.0, 0.0);
        for (i, p) in row.iter_mut().enumerate() {
            let z = *p - max;
            if let Some(t) = labels.map(|t| t[i]) {
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
        *term = tz - tsum * sum.ln();
        row.iter_mut().for_each(|e| *e /= sum);
    }
    finite
}

/// Where a run stands at an epoch boundary, as the control hook sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Boundary {
    /// Updates this run has applied so far (0-based index of the epoch about to run).
    pub epoch: u64,
    /// The loss at the current weights: the last one appended, or the run's starting loss.
    pub loss: f64,
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
///
/// With [`Trainer::with_threads`] an epoch runs on several threads; the numbers are the same
/// bits for every thread count (see the module doc), so a caller may pick the count from the
/// load alone. The threads are a pool the trainer starts on its first run that has two
/// chunks or more of samples; they inherit the scheduling priority (the `nice` value) of the
/// thread that calls [`Trainer::run`] then, and end with the trainer.
pub struct Trainer {
    ws: Workspace,
    next: Params,
    threads: usize,
    pool: Option<ThreadPool>,
}

impl Trainer {
    /// A single-threaded trainer for this net and dataset.
    pub fn new(net: &Network, data: &Dataset) -> Self {
        Self {
            ws: Workspace::new(net.config(), data.samples(), true, false),
            next: Params::zeros(net.config()),
            threads: 1,
            pool: None,
        }
    }

    /// Runs epochs on up to `threads` threads (0 counts as 1). Changes speed, never results.
    pub fn with_threads(mut self, threads: usize) -> Self {
        let threads = threads.max(1);
        if threads != self.threads {
            self.threads = threads;
            self.pool = None;
        }
        self
    }

    /// The thread count [`Trainer::with_threads`] set.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Starts the pool if this batch is worth more than one thread and there is none yet.
    /// A pool the OS refuses (no threads left) leaves the trainer single-threaded, which
    /// gives the same numbers.
    fn start_pool(&mut self, samples: usize) {
        if self.threads > 1 && samples > CHUNK_ROWS && self.pool.is_none() {
            self.pool = rayon::ThreadPoolBuilder::new()
                .num_threads(self.threads)
                .thread_name(|i| format!("backprop-train-{i}"))
                .build()
                .ok();
        }
    }

    /// Whether the buffers were sized for this net's shapes and this many samples.
    fn fits(&self, net: &Network, data: &Dataset) -> bool {
        let p = net.params();
        self.ws.m == data.samples()
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
    /// `control` is called before each epoch (with the epoch's 0-based index and the loss at
    /// the current weights, so a caller can report progress) and may stop the run there. The
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
        mut control: impl FnMut(Boundary) -> Control,
    ) -> TrainOutcome {
        // A trainer kept across calls may meet another dataset size or network: resize
        // rather than hand the products buffers of the wrong shape.
        if !self.fits(net, data) {
            let (threads, pool) = (self.threads, self.pool.take());
            *self = Self::new(net, data);
            (self.threads, self.pool) = (threads, pool);
        }
        self.start_pool(data.samples());
        let pool = self.pool.as_ref();
        let config = net.config().clone();
        let (x, y) = (row_major(data.x()), row_major(data.y()));
        let scale = reduction_scale(&config, data.samples());
        // Each forward pass also computes the deltas of the update that follows it, if one does.
        let start = self.ws.forward(
            &Pass::new(&config, net.params(), scale),
            &x,
            Some(&y),
            epochs > 0,
            pool,
        );
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
        let mut current = start;
        while run < epochs {
            if control(Boundary {
                epoch: run,
                loss: current,
            }) == Control::Stop
            {
                status = TrainStatus::Stopped;
                break;
            }
            self.ws.gradients(&config, &x, pool);
            if !step(&mut self.next, net.params(), &self.ws, lr) {
                status = TrainStatus::Diverged;
                break;
            }
            let loss = self.ws.forward(
                &Pass::new(&config, &self.next, scale),
                &x,
                Some(&y),
                run + 1 < epochs,
                pool,
            );
            if !loss.is_finite() {
                status = TrainStatus::Diverged;
                break;
            }
            std::mem::swap(net.params_mut(), &mut self.next);
            history.push(loss);
            current = loss;
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
    fn update<D: ndarray::Dimension>(
        next: &mut ndarray::Array<f64, D>,
        now: &ndarray::Array<f64, D>,
        grad: &[f64],
        lr: f64,
    ) -> bool {
        let mut finite = true;
        let mut apply = |n: &mut f64, w: f64, g: f64| {
            *n = w - lr * g;
            finite &= n.is_finite();
        };
        match (next.as_slice_mut(), now.as_slice()) {
            (Some(n), Some(w)) => n
                .iter_mut()
                .zip(w)
                .zip(grad)
                .for_each(|((n, &w), &g)| apply(n, w, g)),
            // Arrays of another layout (built by hand): logical order is the gradient's order.
            _ => next
                .iter_mut()
                .zip(now.iter())
                .zip(grad)
                .for_each(|((n, &w), &g)| apply(n, w, g)),
        }
        finite
    }
    let mut finite = true;
    for ((n, w), g) in next.weights.iter_mut().zip(&params.weights).zip(&ws.grad_w) {
        finite &= update(n, w, g, lr);
    }
    if let (Some(nb), Some(pb), Some(gb)) = (&mut next.biases, &params.biases, &ws.grad_b) {
        for ((n, b), g) in nb.iter_mut().zip(pb).zip(gb) {
            finite &= update(n, b, g, lr);
        }
    }
    finite
}

/// `s` of `D_L = (P - Y) * s`.
fn reduction_scale(config: &NetConfig, samples: usize) -> f64 {
    match config.grad_reduction {
        GradReduction::Sum => 1.0,
        GradReduction::Mean => 1.0 / samples as f64,
    }
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

/// One forward and backward pass at the net's parameters, single-threaded; the workspace
/// holds the gradients (and, with `record`, every intermediate), and the loss comes back.
fn one_pass(net: &Network, data: &Dataset, record: bool) -> Result<(Workspace, f64)> {
    let config = net.config();
    check_fits(config, data)?;
    let mut ws = Workspace::new(config, data.samples(), true, record);
    let (x, y) = (row_major(data.x()), row_major(data.y()));
    let pass = Pass::new(
        config,
        net.params(),
        reduction_scale(config, data.samples()),
    );
    let loss = ws.forward(&pass, &x, Some(&y), true, None);
    if !loss.is_finite() {
        return Err(overflow("the forward pass"));
    }
    ws.gradients(config, &x, None);
    if !ws.grads_finite() {
        return Err(overflow("the backward pass"));
    }
    Ok((ws, loss))
}

/// The loss and gradients at the current parameters, changing nothing.
pub fn gradients(net: &Network, data: &Dataset) -> Result<Grads> {
    let (ws, loss) = one_pass(net, data, false)?;
    let shapes = net.config().shapes();
    Ok(Grads {
        loss,
        weights: ws
            .grad_w
            .into_iter()
            .zip(shapes)
            .map(|(g, shape)| matrix(g, shape))
            .collect::<Result<_>>()?,
        biases: ws
            .grad_b
            .map(|bs| bs.into_iter().map(Array1::from).collect()),
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

/// A row-major buffer of the workspace as an array of its shape.
fn matrix(values: Vec<f64>, shape: (usize, usize)) -> Result<Array2<f64>> {
    Array2::from_shape_vec(shape, values)
        .map_err(|e| NnError::ShapeMismatch(format!("a buffer of shape {shape:?}: {e}")))
}

fn argmax(row: ArrayView1<'_, f64>) -> usize {
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
    let mut ws = Workspace::new(config, x.nrows(), false, false);
    let pass = Pass::new(config, net.params(), 1.0);
    let (xs, ys) = (row_major(x), y.map(row_major));
    let loss = ws.forward(&pass, &xs, ys.as_deref(), false, None);
    if !loss.is_finite() {
        return Err(overflow("the forward pass"));
    }
    let probabilities = matrix(
        ws.acts.pop().map(Batch::into_vec).unwrap_or_default(),
        (x.nrows(), config.n_out()),
    )?;
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
    let (ws, loss) = one_pass(net, data, true)?;
    let Workspace {
        m,
        acts,
        grad_w,
        grad_b,
        record,
        ..
    } = ws;
    let Some(Recorded { pre, upstream }) = record else {
        return Err(NnError::NonFinite("trace buffers missing".into()));
    };
    let config = net.config();
    let batch = |values: Batch, (out, _): (usize, usize)| matrix(values.into_vec(), (m, out));
    let acts: Vec<Array2<f64>> = acts
        .into_iter()
        .zip(config.shapes())
        .map(|(a, shape)| batch(a, shape))
        .collect::<Result<_>>()?;
    let last = acts.len() - 1;
    let mut grad_b = grad_b.map(|bs| bs.into_iter().map(Array1::from));
    let mut layers = Vec::with_capacity(acts.len());
    let per_layer = pre
        .into_iter()
        .zip(upstream)
        .zip(grad_w)
        .zip(config.shapes());
    for (k, (((z, up), gw), shape)) in per_layer.enumerate() {
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
            pre_activation: batch(z, shape)?,
            activation: a.clone(),
            upstream_gradient: batch(up, shape)?,
            local_gradient: local,
            weight_gradient: matrix(gw, shape)?,
            bias_gradient: grad_b.as_mut().and_then(Iterator::next),
        });
    }
    Ok(Trace {
        layers,
        probabilities: acts[last].clone(),
        loss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_blocks_depend_on_size() {
        // The blobs benchmark's two gradients, and the shapes tests/core_threads.rs relies on
        // to exercise both kinds of split.
        assert_eq!(gradient_blocks(10_000, 128, 64), 1);
        assert_eq!(gradient_blocks(10_000, 10, 128), 1);
        assert_eq!(gradient_blocks(16_411, 128, 64), 2);
        assert_eq!(gradient_blocks(16_411, 256, 32), 2);
        // The notebook's nets: one block.
        assert_eq!(gradient_blocks(6, 3, 4), 1);
        // Never more than MAX_BLOCKS, never a block under MIN_BLOCK units.
        assert_eq!(gradient_blocks(1_000_000, 4096, 4096), MAX_BLOCKS);
        assert_eq!(gradient_blocks(1_000_000, 100, 10), 1);
        // A wide input does not make blocks: they are cut along the output units.
        assert_eq!(gradient_blocks(1_000_000, 32, 4096), 1);
    }
}
