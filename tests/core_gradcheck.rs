//! Analytic gradients against centered finite differences, the way the course checks a
//! `Backward`: `n = (L(w + h) - L(w - h)) / 2h` with h = 1e-5 in f64, and CS231n's relative
//! error `max |a - n| / max(1e-8, |a| + |n|)` over the elements of each layer, below 1e-6.
//!
//! Every activation, with and without bias, depths 1 to 4, both reductions. `L` is always
//! the mean loss, so with `sum` the analytic gradient is M times its gradient.

use backprop_server::nn::{
    Activation, Dataset, GradReduction, Init, Labels, NetConfig, Network, NumpyRandom, Params,
    SampleSet, gradients, predict, trace,
};

const H: f64 = 1e-5;
const TOL: f64 = 1e-6;
const M: usize = 5;
/// A ReLU input closer to 0 than this could cross its kink when a weight moves by h.
const KINK: f64 = 1e-4;

struct Case {
    net: Network,
    data: Dataset,
    label: String,
}

/// Weights ~ U(-1, 1) / sqrt(in) keep sigmoid and tanh away from saturation, where the
/// gradients would be too small for a relative error to mean anything.
fn draw(act: Activation, bias: bool, depth: usize, red: GradReduction, seed: u32) -> Case {
    let mut rng = NumpyRandom::new(seed);
    let mut layers: Vec<usize> = [4, 5, 6, 5][..depth].to_vec();
    layers.push(3);
    let mut config = NetConfig::new(layers.clone());
    config.activation = act;
    config.bias = bias;
    config.grad_reduction = red;
    let weights: Vec<Vec<Vec<f64>>> = config
        .shapes()
        .map(|(o, i)| {
            let s = 1.0 / (i as f64).sqrt();
            (0..o)
                .map(|_| (0..i).map(|_| rng.uniform(-s, s) * 1.5).collect())
                .collect()
        })
        .collect();
    let biases = bias.then(|| {
        config
            .shapes()
            .map(|(o, _)| (0..o).map(|_| rng.uniform(-0.5, 0.5)).collect())
            .collect()
    });
    let net = Network::new(config, &Init::Explicit { weights, biases }).expect("a valid net");
    let x: Vec<f64> = (0..M * 4).map(|_| rng.uniform(-1.5, 1.5)).collect();
    // Odd seeds get soft labels, even seeds class indices: both label paths feed the loss.
    let labels = if seed % 2 == 1 {
        Labels::Rows(
            (0..M)
                .map(|_| {
                    let r: Vec<f64> = (0..3).map(|_| rng.uniform(0.1, 1.0)).collect();
                    let s: f64 = r.iter().sum();
                    r.iter().map(|v| v / s).collect()
                })
                .collect(),
        )
    } else {
        Labels::Indices((0..M).map(|j| (j % 3) as i64).collect())
    };
    let data = Dataset::new(SampleSet::from_flat(x, 4).unwrap(), labels, 4, 3).unwrap();
    Case {
        net,
        data,
        label: format!(
            "{} bias={bias} layers={layers:?} {} seed={seed}",
            act.name(),
            red.name()
        ),
    }
}

/// The smallest |z| over the hidden pre-activations (ReLU's kink sits at 0).
fn closest_to_kink(c: &Case) -> f64 {
    let t = trace(&c.net, &c.data).expect("a finite trace");
    let hidden = t.layers.len() - 1;
    t.layers[..hidden]
        .iter()
        .flat_map(|l| l.pre_activation.iter().map(|z| z.abs()))
        .fold(f64::INFINITY, f64::min)
}

fn mean_loss(net: &Network, data: &Dataset) -> f64 {
    predict(net, data.x(), Some(data.y()))
        .expect("a finite forward pass")
        .loss
        .expect("a loss with labels")
}

/// The parameter groups, `W1..` then `b1..`, with their sizes.
fn groups(p: &Params) -> Vec<(String, usize)> {
    let mut g: Vec<(String, usize)> = p
        .weights
        .iter()
        .enumerate()
        .map(|(k, w)| (format!("W{}", k + 1), w.len()))
        .collect();
    if let Some(bs) = &p.biases {
        g.extend(
            bs.iter()
                .enumerate()
                .map(|(k, b)| (format!("b{}", k + 1), b.len())),
        );
    }
    g
}

fn element_mut<'a>(p: &'a mut Params, group: &str, i: usize) -> &'a mut f64 {
    let k: usize = group[1..].parse::<usize>().unwrap() - 1;
    if group.starts_with('W') {
        let w = &mut p.weights[k];
        let cols = w.ncols();
        &mut w[(i / cols, i % cols)]
    } else {
        &mut p.biases.as_mut().unwrap()[k][i]
    }
}

/// The worst relative error of each parameter group of one case.
fn check(c: &Case) -> Vec<(String, f64)> {
    let g = gradients(&c.net, &c.data).unwrap_or_else(|e| panic!("{}: {e}", c.label));
    let scale = match c.net.config().grad_reduction {
        GradReduction::Sum => M as f64,
        GradReduction::Mean => 1.0,
    };
    let mut out = Vec::new();
    for (name, len) in groups(c.net.params()) {
        let k: usize = name[1..].parse::<usize>().unwrap() - 1;
        let analytic: Vec<f64> = if name.starts_with('W') {
            g.weights[k].iter().copied().collect()
        } else {
            g.biases.as_ref().unwrap()[k].to_vec()
        };
        let mut worst: f64 = 0.0;
        assert_eq!(analytic.len(), len, "{}: {name}", c.label);
        for (i, &a) in analytic.iter().enumerate() {
            let at = |delta: f64| {
                let mut net = c.net.clone();
                let mut p = net.params().clone();
                *element_mut(&mut p, &name, i) += delta;
                net.set_params(p).unwrap();
                mean_loss(&net, &c.data)
            };
            let n = scale * (at(H) - at(-H)) / (2.0 * H);
            let rel = (a - n).abs() / (a.abs() + n.abs()).max(1e-8);
            assert!(
                rel < TOL,
                "{}: {name}[{i}] analytic {a:e}, numerical {n:e}: relative error {rel:e} >= {TOL:e}",
                c.label
            );
            worst = worst.max(rel);
        }
        out.push((name, worst));
    }
    out
}

fn all_cases(act: Activation) -> Vec<Case> {
    let mut cases = Vec::new();
    for bias in [false, true] {
        for depth in 1..=4 {
            for red in [GradReduction::Sum, GradReduction::Mean] {
                let mut seed = (depth * 10 + usize::from(bias) * 100) as u32;
                let mut c = draw(act, bias, depth, red, seed);
                // Re-draw rather than test where a finite difference straddles ReLU's kink.
                while act == Activation::Relu && closest_to_kink(&c) < KINK {
                    seed += 1000;
                    assert!(seed < 100_000, "no kink-free draw for {}", c.label);
                    c = draw(act, bias, depth, red, seed);
                }
                cases.push(c);
            }
        }
    }
    cases
}

fn run(act: Activation) {
    let mut worst = (0.0, String::new());
    let cases = all_cases(act);
    assert_eq!(cases.len(), 16, "2 bias settings x 4 depths x 2 reductions");
    for c in &cases {
        for (name, rel) in check(c) {
            if rel > worst.0 {
                worst = (rel, format!("{} {name}", c.label));
            }
        }
    }
    println!(
        "{}: worst relative error {:.1e} ({}), allowed {TOL:e}",
        act.name(),
        worst.0,
        worst.1
    );
}

#[test]
fn relu_gradients_match_finite_differences() {
    run(Activation::Relu);
}

#[test]
fn sigmoid_gradients_match_finite_differences() {
    run(Activation::Sigmoid);
}

#[test]
fn tanh_gradients_match_finite_differences() {
    run(Activation::Tanh);
}

/// `trace` shows the same backward pass `gradients` computes, and its parts fit together:
/// `weight_gradient = (upstream * local)^T input` per layer.
#[test]
fn trace_agrees_with_gradients() {
    for act in [Activation::Relu, Activation::Sigmoid, Activation::Tanh] {
        for c in all_cases(act) {
            let g = gradients(&c.net, &c.data).unwrap();
            let t = trace(&c.net, &c.data).unwrap();
            assert_eq!(t.loss.to_bits(), g.loss.to_bits(), "{}: loss", c.label);
            for (k, l) in t.layers.iter().enumerate() {
                assert_eq!(l.weight_gradient, g.weights[k], "{}: layer {k}", c.label);
                assert_eq!(
                    l.bias_gradient.as_ref(),
                    g.biases.as_ref().map(|b| &b[k]),
                    "{}: bias of layer {k}",
                    c.label
                );
                let d = &l.upstream_gradient * &l.local_gradient;
                let want = d.t().dot(&l.input);
                // Relative to the largest entry: the two sums may run in different orders.
                let big = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                for (i, (a, b)) in l.weight_gradient.iter().zip(want.iter()).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-12 * big,
                        "{}: layer {k} weight_gradient[{i}] {a:e}, (upstream*local)^T input {b:e}",
                        c.label
                    );
                }
            }
        }
    }
}
