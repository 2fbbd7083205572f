//! A trainer gives the same bits for every thread count: the same net trained with 1, 2, 3
//! and 4 threads ends with the same weights, biases and loss history, compared bit for bit.
//!
//! The sizes make every kind of split happen: 16,411 samples are 65 chunks of the forward
//! pass (64 of 256 rows and one of 27), which no thread count here divides; the first weight
//! gradient of `[64, 128, 10]` and of `[64, 128, 3]` is cut into two blocks of output rows
//! (train.rs's unit tests pin those splits), and the other gradients and the bias sums run
//! beside them.

use backprop_server::nn::{
    Activation, Control, Dataset, GradReduction, Init, Labels, NetConfig, Network, NumpyRandom,
    SampleSet, TrainStatus, Trainer,
};

const SAMPLES: usize = 16_411;

fn dataset(n_in: usize, n_out: usize, seed: u32) -> Dataset {
    let mut rng = NumpyRandom::new(seed);
    let x: Vec<f64> = (0..SAMPLES * n_in)
        .map(|_| rng.uniform(-2.0, 2.0))
        .collect();
    let y = Labels::Indices((0..SAMPLES).map(|j| (j * 7 % n_out) as i64).collect());
    Dataset::new(SampleSet::from_flat(x, n_in).unwrap(), y, n_in, n_out).unwrap()
}

/// Every weight and bias, then the history, as bits.
fn train(net: &Network, data: &Dataset, epochs: u64, threads: usize) -> Vec<u64> {
    let mut net = net.clone();
    let mut history = Vec::new();
    let mut trainer = Trainer::new(&net, data).with_threads(threads);
    assert_eq!(trainer.threads(), threads);
    // Two calls: the second reuses the trainer's pool and buffers.
    for _ in 0..2 {
        let out = trainer.run(&mut net, data, epochs, &mut history, |_| Control::Continue);
        assert_eq!(
            (out.status, out.epochs_run),
            (TrainStatus::Completed, epochs),
            "{threads} threads"
        );
    }
    let p = net.params();
    p.weights
        .iter()
        .flatten()
        .chain(p.biases.iter().flatten().flatten())
        .chain(&history)
        .map(|v| v.to_bits())
        .collect()
}

fn assert_same_for_every_thread_count(name: &str, net: &Network, data: &Dataset) {
    let one = train(net, data, 1, 1);
    assert!(one.len() > 4, "{name}: nothing to compare");
    for threads in 2..=4 {
        let many = train(net, data, 1, threads);
        assert_eq!(one.len(), many.len(), "{name}: {threads} threads");
        if let Some(i) = (0..one.len()).find(|&i| one[i] != many[i]) {
            panic!(
                "{name}: value {i} of {} (weights, then biases, then the history) is {} with \
                 {threads} threads and {} with 1",
                one.len(),
                f64::from_bits(many[i]),
                f64::from_bits(one[i])
            );
        }
    }
}

#[test]
fn relu_mean_net_trains_to_the_same_bits_on_1_to_4_threads() {
    let mut config = NetConfig::new(vec![64, 128, 10]);
    config.grad_reduction = GradReduction::Mean;
    config.learning_rate = 0.05;
    let net = Network::new(config, &Init::He { seed: 1 }).unwrap();
    assert_same_for_every_thread_count("[64, 128, 10]", &net, &dataset(64, 10, 7));
}

#[test]
fn tanh_bias_sum_net_trains_to_the_same_bits_on_1_to_4_threads() {
    let mut config = NetConfig::new(vec![64, 128, 3]);
    config.activation = Activation::Tanh;
    config.bias = true;
    config.learning_rate = 1e-4;
    let net = Network::new(config, &Init::Xavier { seed: 3 }).unwrap();
    assert_same_for_every_thread_count("[64, 128, 3]", &net, &dataset(64, 3, 11));
}

#[test]
fn threads_are_at_least_one() {
    let net = Network::new(NetConfig::new(vec![4, 3]), &Init::NumpyRand { seed: 0 }).unwrap();
    let data = dataset(4, 3, 1);
    assert_eq!(Trainer::new(&net, &data).threads(), 1);
    assert_eq!(Trainer::new(&net, &data).with_threads(0).threads(), 1);
}
