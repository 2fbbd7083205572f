//! The core against NumPy: the fixtures in `tests/golden/` were written by
//! `tests/golden/generate.py`, which runs the course notebook's own code (and a vectorised
//! NumPy version of the same algebra for bias, sigmoid/tanh, mean reduction and deeper nets).
//!
//! Initial weights must agree bit for bit (same MT19937 stream, same double construction).
//! Everything computed after that agrees to a relative 1e-9: the last bits depend on the
//! summation order of each product, which NumPy's BLAS and our loops do not share.

use backprop_server::nn::{
    Activation, Control, Dataset, GradReduction, Init, Labels, NetConfig, Network, NumpyRandom,
    SampleSet, SampleSetBuilder, TrainStatus, Trainer, gradients, predict,
};
use ndarray::Array2;
use serde_json::Value;

const NOTEBOOK: &str = include_str!("golden/notebook.json");
const VARIANTS: &str = include_str!("golden/variants.json");
const INIT: &str = include_str!("golden/init.json");
const LARGE: &str = include_str!("golden/large.json");

const RTOL: f64 = 1e-9;

thread_local! {
    /// The worst relative difference seen, printed per case (`--nocapture`) to show the margin.
    static WORST: std::cell::RefCell<(f64, String)> = const { std::cell::RefCell::new((0.0, String::new())) };
}

fn report_worst(case: &str) {
    let (w, what) = WORST.with(|c| c.take());
    if what.is_empty() {
        println!("{case}: every value equals NumPy's exactly");
    } else {
        println!("{case}: worst relative difference from NumPy {w:.1e} ({what}), allowed {RTOL:e}");
    }
}

fn parse(text: &str, file: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{file} is not valid JSON: {e}"))
}

/// Every number in a nested JSON array, in row-major order.
fn flat(v: &Value) -> Vec<f64> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<f64>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Number(n) => out.push(n.as_f64().expect("a JSON number that fits f64")),
            other => panic!("expected a number or an array, found {other}"),
        }
    }
    walk(v, &mut out);
    out
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("an array of integers")
        .iter()
        .map(|n| n.as_u64().expect("a non-negative integer") as usize)
        .collect()
}

/// Elementwise `|a - b| <= RTOL * max(|a|, |b|)`; the message names case, what, index, both.
fn assert_close(case: &str, what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(
        got.len(),
        want.len(),
        "{case}: {what} has {} values, NumPy has {}",
        got.len(),
        want.len()
    );
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        if a != b {
            let rel = (a - b).abs() / a.abs().max(b.abs());
            WORST.with(|c| {
                let mut c = c.borrow_mut();
                if rel > c.0 {
                    *c = (rel, format!("{what}[{i}], {a:e} vs {b:e}"));
                }
            });
        }
        assert!(
            (a - b).abs() <= RTOL * a.abs().max(b.abs()),
            "{case}: {what}[{i}] is {a:e} here, {b:e} in NumPy (relative difference {:e}, allowed {RTOL:e})",
            (a - b).abs() / a.abs().max(b.abs())
        );
    }
}

fn assert_bits(case: &str, what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(
        got.len(),
        want.len(),
        "{case}: {what} has {} values, NumPy has {}",
        got.len(),
        want.len()
    );
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        assert!(
            a.to_bits() == b.to_bits(),
            "{case}: {what}[{i}] is {a:?} (bits {:#018x}) here, {b:?} (bits {:#018x}) in NumPy; \
             initial weights must agree bit for bit",
            a.to_bits(),
            b.to_bits()
        );
    }
}

fn flat_mats<'a, T: 'a + Clone + IntoIterator<Item = f64>>(
    ms: impl IntoIterator<Item = &'a T>,
) -> Vec<f64> {
    ms.into_iter().flat_map(|m| m.clone()).collect()
}

/// Feeds the nested JSON samples through the builder the server's parser uses.
fn dataset(doc: &Value, n_in: usize, n_out: usize) -> Dataset {
    fn feed(b: &mut SampleSetBuilder, v: &Value) {
        match v {
            Value::Array(items) => {
                b.open_list();
                items.iter().for_each(|i| feed(b, i));
                b.close_list();
            }
            Value::Number(n) => b.number(n.as_f64().expect("an f64")),
            other => panic!("a sample holds {other}"),
        }
    }
    let ds = &doc["dataset"];
    if let Some(g) = ds.get("generated") {
        return generated_dataset(g, n_in, n_out);
    }
    let mut b = SampleSetBuilder::new(1000);
    for sample in ds["x"].as_array().expect("dataset.x is an array") {
        b.begin_sample();
        feed(&mut b, sample);
        b.end_sample();
    }
    let samples = b.finish().expect("the fixture's samples are regular");
    assert_eq!(
        samples.sample_shape(),
        &[2, 2],
        "cat-dog-ship samples are 2x2"
    );
    let rows: Vec<Vec<f64>> = ds["y"]
        .as_array()
        .expect("dataset.y is an array")
        .iter()
        .map(flat)
        .collect();
    Dataset::new(samples, Labels::Rows(rows), n_in, n_out).expect("the fixture's dataset fits")
}

/// `np.random.seed(S); x = np.random.rand(M, n_in)`, labels `j % n_out`: drawn again here
/// from the same stream instead of stored.
fn generated_dataset(g: &Value, n_in: usize, n_out: usize) -> Dataset {
    assert_eq!(g["method"], "numpy_rand", "generated dataset method");
    let seed = u32::try_from(g["seed"].as_u64().expect("seed")).expect("seed fits u32");
    let m = g["samples"].as_u64().expect("samples") as usize;
    assert_eq!(
        g["features"].as_u64(),
        Some(n_in as u64),
        "features vs the input layer"
    );
    assert_eq!(
        g["classes"].as_u64(),
        Some(n_out as u64),
        "classes vs the output layer"
    );
    let mut rng = NumpyRandom::new(seed);
    let x: Vec<f64> = (0..m * n_in).map(|_| rng.next_f64()).collect();
    let y = Labels::Indices((0..m).map(|j| (j % n_out) as i64).collect());
    Dataset::new(SampleSet::from_flat(x, n_in).unwrap(), y, n_in, n_out).expect("fits")
}

fn init_of(v: &Value) -> Init {
    let seed = u32::try_from(v["seed"].as_u64().expect("init.seed")).expect("seed fits u32");
    match v["method"].as_str().expect("init.method") {
        "numpy_rand" => Init::NumpyRand { seed },
        "xavier" => Init::Xavier { seed },
        "he" => Init::He { seed },
        m => panic!("unknown init method {m}"),
    }
}

fn config_of(case: &Value) -> NetConfig {
    let mut c = NetConfig::new(usizes(&case["layers"]));
    c.activation = match case["activation"].as_str().expect("activation") {
        "relu" => Activation::Relu,
        "sigmoid" => Activation::Sigmoid,
        "tanh" => Activation::Tanh,
        a => panic!("unknown activation {a}"),
    };
    c.bias = case["bias"].as_bool().expect("bias");
    c.grad_reduction = match case["grad_reduction"].as_str().expect("grad_reduction") {
        "sum" => GradReduction::Sum,
        "mean" => GradReduction::Mean,
        r => panic!("unknown reduction {r}"),
    };
    c.learning_rate = case["learning_rate"].as_f64().expect("learning_rate");
    c.validate(10_000_000)
        .expect("the fixture's config is valid");
    c
}

/// Runs every case of one fixture file; returns how many cases ran.
fn check_training_fixture(text: &str, file: &str) -> usize {
    let doc = parse(text, file);
    let cases = doc["cases"].as_array().expect("cases");
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let config = config_of(case);
        let data = dataset(&doc, config.n_in(), config.n_out());
        let mut net = Network::new(config.clone(), &init_of(&case["init"]))
            .unwrap_or_else(|e| panic!("{name}: building the network failed: {e}"));

        let p = net.params();
        assert_bits(
            name,
            "initial_weights",
            &flat_mats(&p.weights),
            &flat(&case["initial_weights"]),
        );
        match (&p.biases, &case["initial_biases"]) {
            (None, Value::Null) => {}
            (Some(b), want) if !want.is_null() => {
                assert_bits(name, "initial_biases", &flat_mats(b), &flat(want))
            }
            (got, want) => panic!("{name}: biases are {got:?} here, {want} in NumPy"),
        }

        let g = gradients(&net, &data).unwrap_or_else(|e| panic!("{name}: gradients: {e}"));
        let want_loss = case["initial_loss"].as_f64().expect("initial_loss");
        assert_close(name, "initial_loss", &[g.loss], &[want_loss]);
        let want_g = &case["initial_gradients"];
        assert_close(
            name,
            "initial_gradients.weights",
            &flat_mats(&g.weights),
            &flat(&want_g["weights"]),
        );
        match (&g.biases, &want_g["biases"]) {
            (None, Value::Null) => {}
            (Some(b), want) if !want.is_null() => {
                assert_close(name, "initial_gradients.biases", &flat_mats(b), &flat(want))
            }
            (got, want) => panic!("{name}: bias gradients are {got:?} here, {want} in NumPy"),
        }

        let epochs = case["epochs"].as_u64().expect("epochs");
        let mut history = Vec::new();
        let mut calls = 0;
        let mut seen = Vec::new();
        let out = Trainer::new(&net, &data).run(&mut net, &data, epochs, &mut history, |b| {
            assert_eq!(b.epoch, calls, "{name}: the control hook skipped an epoch");
            calls += 1;
            seen.push(b.loss);
            Control::Continue
        });
        // The hook sees the loss at the weights of its boundary: the starting loss, then each
        // history entry but the last (which no boundary follows).
        if let Some(start) = seen.first() {
            assert_eq!(
                seen[1..],
                history[..seen.len() - 1],
                "{name}: the control hook saw other losses than the history's"
            );
            assert!(start.is_finite(), "{name}: starting loss {start}");
        }
        assert_eq!(out.status, TrainStatus::Completed, "{name}: {out:?}");
        assert_eq!(out.epochs_run, epochs, "{name}: {out:?}");
        assert_eq!(
            calls, epochs,
            "{name}: the control hook runs once per epoch"
        );
        assert_close(
            name,
            "start_loss (= initial_loss)",
            &[out.start_loss.expect("a finite start loss")],
            &[want_loss],
        );
        assert_close(name, "loss_history", &history, &flat(&case["loss_history"]));

        let p = net.params();
        assert_close(
            name,
            "final_weights",
            &flat_mats(&p.weights),
            &flat(&case["final_weights"]),
        );
        match (&p.biases, &case["final_biases"]) {
            (None, Value::Null) => {}
            (Some(b), want) if !want.is_null() => {
                assert_close(name, "final_biases", &flat_mats(b), &flat(want))
            }
            (got, want) => panic!("{name}: final biases are {got:?} here, {want} in NumPy"),
        }

        let pred = predict(&net, data.x(), Some(data.y()))
            .unwrap_or_else(|e| panic!("{name}: predict: {e}"));
        let probs: Vec<f64> = pred.probabilities.iter().copied().collect();
        assert_close(
            name,
            "final_probabilities",
            &probs,
            &flat(&case["final_probabilities"]),
        );
        assert_eq!(
            pred.classes,
            usizes(&case["final_classes"]),
            "{name}: final_classes"
        );
        assert_close(
            name,
            "predict's loss (= last history entry)",
            &[pred.loss.expect("a loss with labels")],
            &[*history.last().expect("a history")],
        );
        report_worst(name);
    }
    cases.len()
}

#[test]
fn notebook_cases_match_numpy() {
    let n = check_training_fixture(NOTEBOOK, "notebook.json");
    let doc = parse(NOTEBOOK, "notebook.json");
    let find = |name: &str| {
        doc["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| {
                panic!("notebook.json lacks the case {name}; rerun tests/golden/generate.py")
            })
    };
    // The notebook's own cell, run per seed, and the two-layer exercise at the same seeds.
    for seed in [0u64, 1, 7, 42, 123, 2024, 4_294_967_295] {
        let case = find(&format!("1layer_seed{seed}"));
        assert_eq!(case["implementation"], "notebook", "1layer_seed{seed}");
        assert_printed_is_history(case);
    }
    for seed in [0u64, 1, 42] {
        assert_printed_is_history(find(&format!("2layer_seed{seed}")));
    }
    assert!(n >= 16, "notebook.json has only {n} cases");
}

/// `printed` is what the notebook's code printed, `iteration: k, loss: v` for k = 1..; the
/// history the core was checked against above must be exactly those numbers.
fn assert_printed_is_history(case: &Value) {
    let name = case["name"].as_str().unwrap();
    let printed = case["printed"].as_array().expect("printed lines");
    let history = flat(&case["loss_history"]);
    assert_eq!(printed.len(), history.len(), "{name}: printed lines");
    for (k, (line, &h)) in printed.iter().zip(&history).enumerate() {
        let line = line.as_str().expect("a printed line");
        let prefix = format!("iteration: {}, loss: ", k + 1);
        let v: f64 = line
            .strip_prefix(&prefix)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name}: printed line {line:?}"));
        assert_eq!(
            v.to_bits(),
            h.to_bits(),
            "{name}: {line:?} vs history {h:e}"
        );
    }
}

/// The two-layer case must exercise the ReLU mask: from its initial weights (recomputed here,
/// not taken from the generator's word) some hidden pre-activation on the notebook's data is
/// negative, so a Backward without the ReLU derivative would give other numbers.
#[test]
fn the_relu_case_really_cuts_hidden_units() {
    let doc = parse(NOTEBOOK, "notebook.json");
    let case = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "2layer_xavier_seed3_relu_cut")
        .expect("notebook.json lacks 2layer_xavier_seed3_relu_cut");
    let config = config_of(case);
    let data = dataset(&doc, 4, 3);
    let net = Network::new(config.clone(), &init_of(&case["init"])).unwrap();
    let t = backprop_server::nn::trace(&net, &data).expect("a trace");
    let z = &t.layers[0].pre_activation;
    let cut = z.iter().filter(|&&v| v <= 0.0).count();
    assert!(
        cut > 0 && cut < z.len(),
        "{cut} of {} hidden pre-activations <= 0: the ReLU mask must cut some and not all",
        z.len()
    );
    assert_eq!(
        case["relu_inputs_cut"]["initial"].as_u64(),
        Some(cut as u64),
        "the generator's count of cut ReLU inputs"
    );
    assert!(case["relu_inputs_cut"]["min_over_training"].as_u64() > Some(0));
}

#[test]
fn sigmoid_tanh_variants_match_numpy() {
    let n = check_training_fixture(VARIANTS, "variants.json");
    assert!(n >= 5, "variants.json has only {n} cases");
}

/// Nets whose every product is large enough for linalg's gemm path, which the notebook's
/// 6x4 by 4x3 products never reach.
#[test]
fn gemm_sized_cases_match_numpy() {
    let n = check_training_fixture(LARGE, "large.json");
    assert!(n >= 2, "large.json has only {n} cases");
}

#[test]
fn initial_weights_match_numpy_bit_for_bit() {
    let doc = parse(INIT, "init.json");
    let cases = doc["cases"].as_array().expect("cases");
    let mut seen_max_seed = false;
    let mut seen_long_stream = false;
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let layers = usizes(&case["layers"]);
        let init = init_of(case);
        seen_max_seed |= init.seed() == Some(u32::MAX);
        let values: usize = layers.windows(2).map(|w| w[0] * w[1]).sum();
        // Two 32-bit draws per double; 624 words is one MT19937 state.
        seen_long_stream |= 2 * values > 624;
        let net = Network::new(NetConfig::new(layers.clone()), &init)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_bits(
            name,
            "weights",
            &flat_mats(&net.params().weights),
            &flat(&case["weights"]),
        );
        for (k, (w, (o, i))) in net
            .params()
            .weights
            .iter()
            .zip(NetConfig::new(layers.clone()).shapes())
            .enumerate()
        {
            assert_eq!(w.dim(), (o, i), "{name}: layer {k} is not (out, in)");
        }
    }
    assert!(seen_max_seed, "init.json has no case with seed 4294967295");
    assert!(
        seen_long_stream,
        "init.json has no case that draws past one MT state"
    );
    for method in ["numpy_rand", "xavier", "he"] {
        assert!(
            cases.iter().any(|c| c["method"] == method),
            "init.json has no {method} case"
        );
    }
}

/// Two runs of 50 epochs on one trainer give exactly what one run of 100 gives: the contract
/// promises this for two 50-epoch requests, and the notebook's history must not depend on
/// how the epochs were split.
#[test]
fn split_runs_equal_one_run_bit_for_bit() {
    let doc = parse(NOTEBOOK, "notebook.json");
    for layers in [vec![4, 3], vec![4, 4, 3]] {
        let config = NetConfig::new(layers.clone());
        let data = dataset(&doc, 4, 3);
        let init = Init::NumpyRand { seed: 42 };
        let mut one = Network::new(config.clone(), &init).unwrap();
        let mut h1 = Vec::new();
        Trainer::new(&one, &data).run(&mut one, &data, 100, &mut h1, |_| Control::Continue);

        let mut two = Network::new(config, &init).unwrap();
        let mut h2 = Vec::new();
        let mut t = Trainer::new(&two, &data);
        let a = t.run(&mut two, &data, 50, &mut h2, |_| Control::Continue);
        let b = t.run(&mut two, &data, 50, &mut h2, |_| Control::Continue);
        assert_eq!((a.epochs_run, b.epochs_run), (50, 50), "{layers:?}");
        assert_eq!(
            b.start_loss,
            Some(h2[49]),
            "{layers:?}: the second run starts at the loss the first ended with"
        );
        assert_bits(&format!("{layers:?}"), "split history", &h2, &h1);
        assert_bits(
            &format!("{layers:?}"),
            "split final weights",
            &flat_mats(&two.params().weights),
            &flat_mats(&one.params().weights),
        );
    }
}

/// The fixture's own consistency: a stale or hand-edited file would make every other test
/// here meaningless, so check the notebook's numbers hang together.
#[test]
fn fixture_is_self_consistent() {
    let doc = parse(NOTEBOOK, "notebook.json");
    assert_eq!(doc["generator"], "tests/golden/generate.py");
    assert!(doc["numpy_version"].is_string());
    for case in doc["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let probs = Array2::from_shape_vec((6, 3), flat(&case["final_probabilities"]))
            .unwrap_or_else(|e| panic!("{name}: final_probabilities is not 6x3: {e}"));
        for (j, row) in probs.rows().into_iter().enumerate() {
            let s: f64 = row.sum();
            assert!((s - 1.0).abs() < 1e-12, "{name}: row {j} sums to {s}");
        }
        let h = flat(&case["loss_history"]);
        assert_eq!(h.len() as u64, case["epochs"].as_u64().unwrap(), "{name}");
    }
}
