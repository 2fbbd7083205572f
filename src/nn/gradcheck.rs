//! Centered finite differences against the analytic gradients, per layer.
//!
//! For every parameter `θ_i`: `n_i = (L(θ + h e_i) - L(θ - h e_i)) / 2h`, with `L` the mean
//! cross-entropy over the dataset. The analytic gradient of a `sum` net is M times the
//! gradient of the mean loss (the notebook's `Backward`), so `n_i` is scaled by M there.
//! Per layer, over `W_k` and `b_k` together: `rel_error = max_i |a_i - n_i| / max(1e-8,
//! |a_i| + |n_i|)` (CS231n's). `near_kink` counts layer k's ReLU pre-activations `z` with
//! `|z| <= h` over the dataset: there a move of h can cross the kink, and a large
//! `rel_error` says nothing about the backward pass.
//!
//! Cost: two forward passes per parameter, about `2 * P * M * P` multiply-adds for P
//! parameters and M samples; [`MAX_WORK`] bounds it.

use ndarray::Array2;

use super::data::Dataset;
use super::error::{NnError, Result};
use super::linalg::matmul_into;
use super::network::{Activation, GradReduction, NetConfig, Network, Params};
use super::train::{gradients, predict};

/// The step used when the caller gives none (CS231n's and the course's).
pub const DEFAULT_H: f64 = 1e-5;

/// The most multiply-adds one check may cost (`2 * P * M * P`): about a second of CPU.
pub const MAX_WORK: u128 = 1_000_000_000;

/// The result for one weight layer (its `W_k` and `b_k`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerCheck {
    pub rel_error: f64,
    pub near_kink: u64,
}

/// Multiply-adds of a check of `config` on `samples` samples: `2 * P * M * P`.
pub fn work(config: &NetConfig, samples: usize) -> u128 {
    let p = config.parameter_count();
    (2 * p).saturating_mul(samples as u128).saturating_mul(p)
}

/// CS231n's relative error of one element; 0 when both are 0, never NaN for finite inputs.
pub fn rel_error(a: f64, b: f64) -> f64 {
    let r = (a - b).abs() / (a.abs() + b.abs()).max(1e-8);
    if r.is_finite() {
        return r;
    }
    // `a - b` or `|a| + |b|` overflowed: halving both is exact for normal numbers and scales
    // the numerator and the denominator alike.
    let (a, b) = (a / 2.0, b / 2.0);
    (a - b).abs() / (a.abs() + b.abs()).max(0.5e-8)
}

/// Checks the analytic gradients of `net` on `data` with step `h` (finite, in (0, 1]).
pub fn gradcheck(net: &Network, data: &Dataset, h: f64) -> Result<Vec<LayerCheck>> {
    if !(h.is_finite() && h > 0.0 && h <= 1.0) {
        return Err(NnError::InvalidValue(format!(
            "h is {h}; the finite-difference step must be a number in (0, 1], e.g. 1e-5"
        )));
    }
    let config = net.config();
    let cost = work(config, data.samples());
    if cost > MAX_WORK {
        return Err(NnError::TooLarge(format!(
            "a gradient check of layers {:?} on {} samples costs about {cost} multiply-adds \
             (2 * parameters * samples * parameters); the limit is {MAX_WORK}: check a smaller \
             network or a smaller dataset",
            config.layers,
            data.samples()
        )));
    }
    let analytic = gradients(net, data)?;
    let scale = match config.grad_reduction {
        GradReduction::Sum => data.samples() as f64,
        GradReduction::Mean => 1.0,
    };
    let kinks = near_kinks(net, data, h);
    let mut probe = net.clone();
    let mut out = Vec::with_capacity(analytic.weights.len());
    for (k, gw) in analytic.weights.iter().enumerate() {
        let mut worst = 0.0f64;
        for ((i, j), &a) in gw.indexed_iter() {
            let n = numerical(&mut probe, data, h, scale, |p| {
                p.weights.get_mut(k)?.get_mut((i, j))
            })?;
            worst = worst.max(rel_error(a, n));
        }
        if let Some(gb) = analytic.biases.as_ref().map(|b| &b[k]) {
            for (i, &a) in gb.iter().enumerate() {
                let n = numerical(&mut probe, data, h, scale, |p| {
                    p.biases.as_mut()?.get_mut(k)?.get_mut(i)
                })?;
                worst = worst.max(rel_error(a, n));
            }
        }
        out.push(LayerCheck {
            rel_error: worst,
            near_kink: kinks[k],
        });
    }
    Ok(out)
}

/// `scale * (L(θ + h) - L(θ - h)) / 2h` for the parameter `at` picks; leaves it as it was.
fn numerical(
    probe: &mut Network,
    data: &Dataset,
    h: f64,
    scale: f64,
    at: impl Fn(&mut Params) -> Option<&mut f64>,
) -> Result<f64> {
    let set = |probe: &mut Network, v: Option<f64>| -> Result<f64> {
        // The gradients come from this net, so every index they have exists in its params.
        let slot = at(probe.params_mut()).ok_or_else(|| {
            NnError::ShapeMismatch("the gradients do not have the parameters' shapes".into())
        })?;
        let old = *slot;
        if let Some(v) = v {
            *slot = v;
        }
        Ok(old)
    };
    let original = set(probe, None)?;
    set(probe, Some(original + h))?;
    let plus = mean_loss(probe, data);
    set(probe, Some(original - h))?;
    let minus = mean_loss(probe, data);
    set(probe, Some(original))?;
    let n = (plus? - minus?) / (2.0 * h) * scale;
    if !n.is_finite() {
        return Err(NnError::NonFinite(format!(
            "the numerical gradient overflowed with h = {h}; use a larger h, e.g. 1e-5"
        )));
    }
    Ok(n)
}

fn mean_loss(net: &Network, data: &Dataset) -> Result<f64> {
    predict(net, data.x(), Some(data.y()))?
        .loss
        .ok_or_else(|| NnError::NonFinite("a forward pass with labels gave no loss".into()))
}

/// Per weight layer, how many of its pre-activations over the dataset lie within `h` of
/// ReLU's kink at 0 (always 0 for the output layer and for sigmoid or tanh).
fn near_kinks(net: &Network, data: &Dataset, h: f64) -> Vec<u64> {
    let config = net.config();
    let params = net.params();
    let layers = params.weights.len();
    let mut counts = vec![0u64; layers];
    if config.activation != Activation::Relu {
        return counts;
    }
    let mut input: Array2<f64> = data.x().clone();
    for k in 0..layers - 1 {
        let w = &params.weights[k];
        let mut z = Array2::zeros((input.nrows(), w.nrows()));
        matmul_into(&mut z.view_mut(), input.view(), w.t());
        if let Some(bs) = &params.biases {
            z += &bs[k];
        }
        counts[k] = z.iter().filter(|v| v.abs() <= h).count() as u64;
        z.mapv_inplace(|v| Activation::Relu.apply(v));
        input = z;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Init, Labels, SampleSet};

    fn net(activation: Activation, bias: bool, red: GradReduction, w1: Vec<Vec<f64>>) -> Network {
        let mut config = NetConfig::new(vec![3, 2, 2]);
        config.activation = activation;
        config.bias = bias;
        config.grad_reduction = red;
        let weights = vec![w1, vec![vec![0.7, -0.4], vec![-0.2, 0.9]]];
        let biases = bias.then(|| vec![vec![0.1, -0.2], vec![0.05, 0.0]]);
        Network::new(config, &Init::Explicit { weights, biases }).unwrap()
    }

    fn data() -> Dataset {
        let x = vec![0.5, -1.0, 2.0, 1.5, 0.25, -0.75, -0.3, 0.8, 0.1];
        Dataset::new(
            SampleSet::from_flat(x, 3).unwrap(),
            Labels::Indices(vec![0, 1, 1]),
            3,
            2,
        )
        .unwrap()
    }

    #[test]
    fn analytic_gradients_agree_away_from_kinks() {
        let w1 = vec![vec![0.3, -0.6, 0.2], vec![-0.5, 0.4, 0.8]];
        for act in [Activation::Relu, Activation::Sigmoid, Activation::Tanh] {
            for bias in [false, true] {
                for red in [GradReduction::Sum, GradReduction::Mean] {
                    let n = net(act, bias, red, w1.clone());
                    let checks = gradcheck(&n, &data(), DEFAULT_H).unwrap();
                    assert_eq!(checks.len(), 2);
                    for (k, c) in checks.iter().enumerate() {
                        assert!(
                            c.rel_error < 1e-6,
                            "{act:?} bias={bias} {red:?} layer {k}: rel_error {}",
                            c.rel_error
                        );
                        assert_eq!(c.near_kink, 0, "{act:?} layer {k}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_unit_sitting_on_the_kink_is_counted_and_fails() {
        // Unit 0's weights are all zero, so z = 0 for every sample: the one-sided slopes
        // differ, and the centered difference lands between them.
        let w1 = vec![vec![0.0, 0.0, 0.0], vec![-0.5, 0.4, 0.8]];
        let n = net(Activation::Relu, false, GradReduction::Mean, w1);
        let checks = gradcheck(&n, &data(), DEFAULT_H).unwrap();
        assert_eq!(checks[0].near_kink, 3, "{checks:?}");
        assert!(checks[0].rel_error > 0.1, "{checks:?}");
        assert_eq!(checks[1].near_kink, 0);
    }

    #[test]
    fn h_out_of_range_and_too_much_work_are_refused() {
        let n = net(
            Activation::Tanh,
            false,
            GradReduction::Sum,
            vec![vec![0.1; 3]; 2],
        );
        for h in [0.0, -1e-5, 1.5, f64::NAN, f64::INFINITY] {
            assert!(
                matches!(gradcheck(&n, &data(), h), Err(NnError::InvalidValue(_))),
                "h = {h}"
            );
        }
        let big = NetConfig::new(vec![100, 100, 10]);
        assert!(work(&big, 10) > MAX_WORK);
        assert!(work(&NetConfig::new(vec![4, 3]), 6) == 2 * 12 * 6 * 12);
    }

    #[test]
    fn rel_error_is_finite_and_symmetric() {
        assert_eq!(rel_error(0.0, 0.0), 0.0);
        assert_eq!(rel_error(1.0, 3.0), 0.5);
        assert_eq!(rel_error(3.0, 1.0), 0.5);
        assert_eq!(rel_error(1e-9, 0.0), 1e-9 / 1e-8);
        assert_eq!(rel_error(f64::MAX, -f64::MAX), 1.0);
        assert_eq!(rel_error(f64::MAX, f64::MAX), 0.0);
    }
}
