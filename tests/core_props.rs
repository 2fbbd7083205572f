//! Properties of the core over random shapes and values, tiny to huge: nothing panics, an
//! `Ok` never carries NaN or infinity (an overflow is `Err(NonFinite)`), probabilities are
//! distributions, the loss is >= 0, and training never leaves a non-finite weight.
//! The sample builder, fed any stream of events, never panics, and on well-formed streams
//! accepts exactly the regular arrays NumPy would.

use backprop_server::nn::{
    Activation, Control, Dataset, GradReduction, Init, Labels, NetConfig, Network, NnError,
    SampleSet, SampleSetBuilder, TrainStatus, Trainer, gradients, predict, trace,
};
use ndarray::Array2;
use proptest::prelude::*;

/// One random network with its data. Values are `u * scale` with `u` in [-1, 1] and a
/// scale per case, so a case is wholly ordinary, large (1e3), tiny (1e-300) or huge (1e150,
/// 1e200: products that overflow must come back as an error or a diverged run, not as NaN).
#[derive(Debug, Clone)]
struct Setup {
    layers: Vec<usize>,
    activation: Activation,
    bias: bool,
    reduction: GradReduction,
    learning_rate: f64,
    weights: Vec<Vec<Vec<f64>>>,
    biases: Option<Vec<Vec<f64>>>,
    x: Vec<f64>,
    labels: Labels,
    epochs: u64,
}

fn scale() -> impl Strategy<Value = f64> {
    prop::sample::select(vec![1e-300, 1e-3, 1.0, 1.0, 1.0, 30.0, 1e3, 1e150, 1e200])
}

fn values(n: usize, scale: f64) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(
        prop_oneof![8 => -1.0..=1.0f64, 1 => Just(0.0), 1 => Just(1.0), 1 => Just(-1.0)],
        n,
    )
    .prop_map(move |v| v.into_iter().map(|u| u * scale).collect())
}

fn rows(flat: Vec<f64>, width: usize) -> Vec<Vec<f64>> {
    flat.chunks(width).map(<[f64]>::to_vec).collect()
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop::collection::vec(1usize..=8, 2..=5),
        1usize..=10,
        prop::sample::select(vec![
            Activation::Relu,
            Activation::Sigmoid,
            Activation::Tanh,
        ]),
        any::<bool>(),
        prop::sample::select(vec![GradReduction::Sum, GradReduction::Mean]),
        prop::sample::select(vec![1e-4, 0.01, 0.5, 10.0, 1e6]),
        (scale(), scale()),
        1u64..=6,
        any::<bool>(),
    )
        .prop_flat_map(
            |(layers, m, activation, bias, reduction, lr, (ws, xs), epochs, soft)| {
                let shapes: Vec<(usize, usize)> = layers.windows(2).map(|w| (w[1], w[0])).collect();
                let n_in = layers[0];
                let n_out = *layers.last().unwrap();
                let weights: Vec<_> = shapes
                    .iter()
                    .map(|&(o, i)| values(o * i, ws).prop_map(move |v| rows(v, i)))
                    .collect();
                let biases: Vec<_> = shapes.iter().map(|&(o, _)| values(o, ws)).collect();
                let labels = if soft {
                    prop::collection::vec(prop::collection::vec(0.0..=1.0f64, n_out), m)
                        .prop_map(|rs| {
                            Labels::Rows(
                                rs.into_iter()
                                    .map(|r| {
                                        let s: f64 = r.iter().sum();
                                        if s > 0.0 {
                                            r.iter().map(|v| v / s).collect()
                                        } else {
                                            let mut one = vec![0.0; r.len()];
                                            one[0] = 1.0;
                                            one
                                        }
                                    })
                                    .collect(),
                            )
                        })
                        .boxed()
                } else {
                    prop::collection::vec(0..n_out as i64, m)
                        .prop_map(Labels::Indices)
                        .boxed()
                };
                (
                    Just((layers, activation, bias, reduction, lr, epochs)),
                    weights,
                    biases,
                    values(m * n_in, xs),
                    labels,
                )
            },
        )
        .prop_map(
            |(
                (layers, activation, bias, reduction, learning_rate, epochs),
                weights,
                biases,
                x,
                labels,
            )| {
                Setup {
                    layers,
                    activation,
                    bias,
                    reduction,
                    learning_rate,
                    weights,
                    biases: bias.then_some(biases),
                    x,
                    labels,
                    epochs,
                }
            },
        )
}

fn build(s: &Setup) -> (Network, Dataset) {
    let mut config = NetConfig::new(s.layers.clone());
    config.activation = s.activation;
    config.bias = s.bias;
    config.grad_reduction = s.reduction;
    config.learning_rate = s.learning_rate;
    config
        .validate(u64::MAX)
        .expect("generated configs are valid");
    let init = Init::Explicit {
        weights: s.weights.clone(),
        biases: s.biases.clone(),
    };
    let net = Network::new(config.clone(), &init).expect("generated weights fit");
    let samples = SampleSet::from_flat(s.x.clone(), config.n_in()).unwrap();
    let data = Dataset::new(samples, s.labels.clone(), config.n_in(), config.n_out())
        .expect("generated labels are valid");
    (net, data)
}

fn all_finite<'a>(arrays: impl IntoIterator<Item = &'a Array2<f64>>) -> bool {
    arrays.into_iter().all(|a| a.iter().all(|v| v.is_finite()))
}

/// The only error a valid network on valid data may give is an overflow.
fn overflow_only<T>(what: &str, r: &Result<T, NnError>) -> Result<(), TestCaseError> {
    if let Err(e) = r {
        prop_assert!(
            matches!(e, NnError::NonFinite(_)),
            "{what} failed with {e:?}; only NonFinite may happen on valid input"
        );
    }
    Ok(())
}

fn check_distribution(p: &Array2<f64>) -> Result<(), TestCaseError> {
    for (j, row) in p.rows().into_iter().enumerate() {
        for (i, &v) in row.iter().enumerate() {
            prop_assert!((0.0..=1.0).contains(&v), "p[{j}][{i}] = {v}, not in [0, 1]");
        }
        let s: f64 = row.sum();
        prop_assert!(
            (s - 1.0).abs() <= 1e-12,
            "row {j} sums to {s}, not 1 within 1e-12"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn forward_backward_are_finite_or_an_overflow_error(s in setup()) {
        let (net, data) = build(&s);

        let g = gradients(&net, &data);
        overflow_only("gradients", &g)?;
        if let Ok(g) = &g {
            prop_assert!(g.loss.is_finite() && g.loss >= 0.0, "loss {}", g.loss);
            prop_assert!(g.loss.to_bits() != (-0.0f64).to_bits(), "a loss of -0.0");
            prop_assert!(all_finite(&g.weights), "non-finite weight gradient in an Ok");
            for b in g.biases.iter().flatten() {
                prop_assert!(b.iter().all(|v| v.is_finite()), "non-finite bias gradient");
            }
        }

        let p = predict(&net, data.x(), Some(data.y()));
        overflow_only("predict", &p)?;
        if let Ok(p) = &p {
            check_distribution(&p.probabilities)?;
            let loss = p.loss.expect("a loss with labels");
            prop_assert!(loss.is_finite() && loss >= 0.0, "predict loss {loss}");
            let acc = p.accuracy.expect("an accuracy with labels");
            prop_assert!((0.0..=1.0).contains(&acc), "accuracy {acc}");
            prop_assert_eq!(p.classes.len(), data.samples());
            prop_assert!(p.classes.iter().all(|&c| c < data.classes()));
            // Same forward pass, same numbers, whichever entry point ran it.
            if let Ok(g) = &g {
                prop_assert_eq!(g.loss.to_bits(), loss.to_bits());
            }
        }
        prop_assert!(!(g.is_ok() && p.is_err()), "predict failed where gradients succeeded");

        let t = trace(&net, &data);
        overflow_only("trace", &t)?;
        if let Ok(t) = &t {
            check_distribution(&t.probabilities)?;
            for l in &t.layers {
                prop_assert!(all_finite([
                    &l.input, &l.pre_activation, &l.activation, &l.upstream_gradient,
                    &l.local_gradient, &l.weight_gradient,
                ]), "non-finite intermediate in an Ok trace");
            }
        }
        prop_assert_eq!(t.is_ok(), g.is_ok(), "trace and gradients disagree on overflow");
    }

    #[test]
    fn training_never_leaves_non_finite_weights(s in setup()) {
        let (start, data) = build(&s);
        let mut net = start.clone();
        let mut history = Vec::new();
        let out = Trainer::new(&net, &data)
            .run(&mut net, &data, s.epochs, &mut history, |_| Control::Continue);

        prop_assert!(net.params().all_finite(), "non-finite weights after {out:?}");
        prop_assert_eq!(history.len() as u64, out.epochs_run);
        prop_assert!(
            history.iter().all(|l| l.is_finite() && *l >= 0.0 && l.is_sign_positive()),
            "history {history:?}"
        );
        match out.status {
            TrainStatus::Completed => prop_assert_eq!(out.epochs_run, s.epochs),
            TrainStatus::Diverged => prop_assert!(out.epochs_run < s.epochs),
            TrainStatus::Stopped => prop_assert!(false, "nothing asked to stop"),
        }
        match out.start_loss {
            Some(l) => prop_assert!(l.is_finite() && l >= 0.0, "start loss {l}"),
            None => {
                prop_assert_eq!(out.epochs_run, 0);
                prop_assert_eq!(&net, &start, "an overflow at the start changed the weights");
            }
        }
        // A diverged run keeps exactly the weights of its last applied epoch: a fresh run of
        // that many epochs ends on the same bits.
        if out.status == TrainStatus::Diverged && out.start_loss.is_some() {
            let mut again = start.clone();
            let mut h2 = Vec::new();
            let o2 = Trainer::new(&again, &data)
                .run(&mut again, &data, out.epochs_run, &mut h2, |_| Control::Continue);
            prop_assert_eq!(o2.status, TrainStatus::Completed);
            prop_assert_eq!(&again, &net);
            prop_assert_eq!(h2, history);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The sample builder.

#[derive(Debug, Clone)]
enum Event {
    Begin,
    Open,
    Close,
    Number(f64),
    End,
}

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => -1e3..1e3f64,
        1 => prop::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -0.0]),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        1 => Just(Event::Begin),
        3 => Just(Event::Open),
        3 => Just(Event::Close),
        3 => number().prop_map(Event::Number),
        1 => Just(Event::End),
    ]
}

/// A sample as sent: a number or a (possibly ragged, possibly empty) list.
#[derive(Debug, Clone)]
enum Tree {
    Num(f64),
    List(Vec<Tree>),
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        20 => (-5.0..5.0f64).prop_map(Tree::Num),
        1 => Just(Tree::Num(f64::NAN)),
        1 => Just(Tree::Num(f64::INFINITY)),
    ];
    leaf.prop_recursive(11, 64, 3, |inner| {
        prop_oneof![
            // Mostly regular: copies of one subtree keep the sample's shape consistent.
            4 => (inner.clone(), 0usize..=3).prop_map(|(t, n)| Tree::List(vec![t; n])),
            1 => prop::collection::vec(inner, 0..=3).prop_map(Tree::List),
        ]
    })
}

fn feed(b: &mut SampleSetBuilder, t: &Tree) {
    match t {
        Tree::Num(v) => b.number(*v),
        Tree::List(items) => {
            b.open_list();
            items.iter().for_each(|i| feed(b, i));
            b.close_list();
        }
    }
}

/// NumPy's view of one sample: its shape if it is a regular array, else None.
fn shape_of(t: &Tree) -> Option<Vec<usize>> {
    match t {
        Tree::Num(_) => Some(vec![]),
        Tree::List(items) => {
            let mut shapes = items.iter().map(shape_of);
            let first = match shapes.next() {
                None => return Some(vec![0]),
                Some(s) => s?,
            };
            for s in shapes {
                if s? != first {
                    return None;
                }
            }
            let mut out = vec![items.len()];
            out.extend(first);
            Some(out)
        }
    }
}

fn numbers(t: &Tree, out: &mut Vec<f64>) {
    match t {
        Tree::Num(v) => out.push(*v),
        Tree::List(items) => items.iter().for_each(|i| numbers(i, out)),
    }
}

/// How many lists deep the sample goes (a bare number is 0, the notebook's 2x2 is 2).
fn depth(t: &Tree) -> usize {
    match t {
        Tree::Num(_) => 0,
        Tree::List(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
    }
}

/// A sample set as (shape of one sample, all values flat), or (error kind, sample index).
type Verdict = Result<(Vec<usize>, Vec<f64>), (&'static str, usize)>;

/// What the builder must answer: the first fault in sample order, or the flat values.
fn oracle(samples: &[Tree], max: usize) -> Verdict {
    let mut first: Option<Vec<usize>> = None;
    let mut flat = Vec::new();
    for (i, t) in samples.iter().enumerate() {
        if i == max {
            return Err(("TooLarge", i));
        }
        let mut vs = Vec::new();
        numbers(t, &mut vs);
        if vs.iter().any(|v| !v.is_finite()) {
            return Err(("InvalidValue", i));
        }
        if depth(t) > 8 {
            return Err(("ShapeMismatch", i));
        }
        let Some(shape) = shape_of(t) else {
            return Err(("ShapeMismatch", i));
        };
        match &first {
            None => first = Some(shape),
            Some(f) if *f != shape => return Err(("ShapeMismatch", i)),
            Some(_) => {}
        }
        flat.extend(vs);
    }
    Ok((first.unwrap_or_default(), flat))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any order of events, including nonsense (closing what was never opened, numbers
    /// outside a sample): no panic, and a result that can be turned into a matrix or an error.
    #[test]
    fn builder_survives_any_event_stream(
        events in prop::collection::vec(event(), 0..80),
        max in 0usize..6,
        n_in in 1usize..6,
    ) {
        let mut b = SampleSetBuilder::new(max);
        for e in &events {
            match e {
                Event::Begin => b.begin_sample(),
                Event::Open => b.open_list(),
                Event::Close => b.close_list(),
                Event::Number(v) => b.number(*v),
                Event::End => b.end_sample(),
            }
        }
        if let Ok(set) = b.finish() {
            let count = set.len();
            prop_assert!(count <= max, "{count} samples kept past a limit of {max}");
            if let Ok(x) = set.into_matrix(n_in) {
                prop_assert_eq!(x.dim(), (count, n_in));
                prop_assert!(x.iter().all(|v| v.is_finite()));
            }
        }
    }

    /// Well-formed streams: the builder accepts exactly what NumPy would take as one regular
    /// array of samples, flattens it row-major, and otherwise names the first bad sample.
    #[test]
    fn builder_accepts_exactly_regular_samples(
        samples in prop::collection::vec(tree(), 1..6),
        max in 1usize..8,
    ) {
        let mut b = SampleSetBuilder::new(max);
        for t in &samples {
            b.begin_sample();
            feed(&mut b, t);
            b.end_sample();
        }
        let got = b.finish();
        match (oracle(&samples, max), got) {
            (Ok((shape, flat)), Ok(set)) => {
                prop_assert_eq!(set.sample_shape(), &shape[..]);
                prop_assert_eq!(set.len(), samples.len());
                let width: usize = shape.iter().product();
                if width > 0 {
                    let x = set.into_matrix(width).expect("a regular set fits its own width");
                    prop_assert_eq!(x.iter().copied().collect::<Vec<_>>(), flat);
                }
            }
            (Err((kind, i)), Err(e)) => {
                let (got_kind, msg) = match &e {
                    NnError::TooLarge(m) => ("TooLarge", m),
                    NnError::InvalidValue(m) => ("InvalidValue", m),
                    NnError::ShapeMismatch(m) => ("ShapeMismatch", m),
                    other => {
                        return Err(TestCaseError::fail(format!("unexpected error {other:?}")));
                    }
                };
                prop_assert_eq!(got_kind, kind, "{}", msg);
                if kind != "TooLarge" {
                    prop_assert!(msg.contains(&format!("sample {i}")),
                        "the error should name sample {i}: {msg}");
                }
            }
            (want, got) => prop_assert!(false, "oracle says {want:?}, builder says {got:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Misuse of the public API: errors, never panics.

fn net_and_data(layers: &[usize], m: usize) -> (Network, Dataset) {
    let n_in = layers[0];
    let n_out = *layers.last().unwrap();
    let net = Network::new(
        NetConfig::new(layers.to_vec()),
        &Init::NumpyRand { seed: 3 },
    )
    .unwrap();
    let x: Vec<f64> = (0..m * n_in).map(|i| (i % 7) as f64 - 3.0).collect();
    let y = Labels::Indices((0..m).map(|j| (j % n_out) as i64).collect());
    let data = Dataset::new(SampleSet::from_flat(x, n_in).unwrap(), y, n_in, n_out).unwrap();
    (net, data)
}

/// A `Trainer` sized for one dataset (or network) and run on another must still train, and
/// exactly as a fresh one would.
#[test]
fn a_trainer_reused_on_other_shapes_trains_like_a_fresh_one() {
    let (net6, data6) = net_and_data(&[4, 5, 3], 6);
    let (_, data2) = net_and_data(&[4, 5, 3], 2);
    let (net_other, data_other) = net_and_data(&[2, 3], 4);
    for (label, net, data) in [
        ("fewer samples", &net6, &data2),
        ("another network", &net_other, &data_other),
    ] {
        let mut reused = net.clone();
        let mut h1 = Vec::new();
        let mut trainer = Trainer::new(&net6, &data6);
        let o1 = trainer.run(&mut reused, data, 5, &mut h1, |_| Control::Continue);

        let mut fresh = net.clone();
        let mut h2 = Vec::new();
        let o2 =
            Trainer::new(&fresh, data).run(&mut fresh, data, 5, &mut h2, |_| Control::Continue);
        assert_eq!(o1, o2, "{label}");
        assert_eq!(h1, h2, "{label}");
        assert_eq!(reused, fresh, "{label}");
    }
}

#[test]
fn predict_on_no_samples_is_a_shape_error() {
    let (net, _) = net_and_data(&[4, 3], 1);
    let x = Array2::zeros((0, 4));
    let r = predict(&net, &x, None);
    assert!(
        matches!(&r, Err(NnError::ShapeMismatch(m)) if m.contains("no samples")),
        "predict on an empty x gave {r:?}; want a shape mismatch saying there are no samples"
    );
}

#[test]
fn invalid_configs_are_errors_not_panics() {
    for layers in [vec![], vec![4], vec![4, 0, 3], vec![0, 3]] {
        let r = Network::new(NetConfig::new(layers.clone()), &Init::NumpyRand { seed: 0 });
        assert!(
            matches!(r, Err(NnError::InvalidValue(_))),
            "layers {layers:?} gave {r:?}; want InvalidValue"
        );
    }
    let mut c = NetConfig::new(vec![4, 3]);
    c.learning_rate = f64::NAN;
    assert!(matches!(
        Network::new(c, &Init::NumpyRand { seed: 0 }),
        Err(NnError::InvalidValue(_))
    ));
    // Labels against an output layer of 0 units: an error, not an underflow in the message.
    let r = Labels::Indices(vec![0]).into_matrix(0);
    assert!(matches!(r, Err(NnError::InvalidLabels(_))), "{r:?}");
}

#[test]
fn data_that_does_not_fit_the_net_is_a_shape_error() {
    let (net, _) = net_and_data(&[4, 3], 1);
    let (_, narrow) = net_and_data(&[2, 3], 3);
    let (_, two_classes) = net_and_data(&[4, 2], 3);
    for (label, data) in [("2 features", &narrow), ("2 classes", &two_classes)] {
        let g = gradients(&net, data);
        assert!(
            matches!(g, Err(NnError::ShapeMismatch(_))),
            "gradients, {label}: {g:?}"
        );
        let t = trace(&net, data);
        assert!(
            matches!(t, Err(NnError::ShapeMismatch(_))),
            "trace, {label}: {t:?}"
        );
    }
}
