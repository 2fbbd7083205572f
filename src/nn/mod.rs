//! The backprop core: dense networks, softmax cross-entropy, full-batch gradient descent.
//!
//! Nothing here knows about HTTP, JSON or async: the server parses requests into these
//! types, calls them on a blocking worker, and shapes the answer. Every failure is an
//! [`NnError`] value; nothing in here panics on any input.
//!
//! Conventions are the course notebook's: weights `W_k` have shape `(out, in)` and compute
//! `W_k x` per sample; the loss is the mean cross-entropy over the samples; the gradient is
//! the notebook's `Backward`, the **sum** over samples (or the mean, on request).

mod batch;
mod data;
mod error;
pub mod gradcheck;
mod init;
mod linalg;
mod network;
mod rng;
mod train;

pub use data::{Dataset, Labels, MAX_SAMPLE_DEPTH, SampleSet, SampleSetBuilder};
pub use error::{NnError, Result};
pub use init::Init;
pub use network::{Activation, GradReduction, Grads, MAX_LAYERS, NetConfig, Network, Params};
pub use rng::NumpyRandom;
pub use train::{
    Boundary, Control, LayerTrace, Prediction, Trace, TrainOutcome, TrainStatus, Trainer,
    gradients, predict, trace,
};
