//! backprop-server: trains small neural networks by backpropagation over HTTP, with the
//! numbers of the course's NumPy notebook.

pub mod nn;
