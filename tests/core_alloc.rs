//! Single-threaded, the core allocates nothing after its first epoch: every buffer lives in
//! the trainer's workspace, the per-layer views of a chunk live on the stack, and the history
//! is reserved up front. The gemm crate, which runs the products past the plain loop's limit,
//! allocates its packing buffers on each call: those are counted and bounded, not zero.
//!
//! A counting allocator wraps the system one. Counts are per thread, so the tests in this
//! file may run in parallel without seeing each other's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use backprop_server::nn::{
    Control, Dataset, Init, Labels, NetConfig, Network, NumpyRandom, SampleSet, TrainStatus,
    Trainer,
};

struct Counting;

thread_local! {
    // Const-initialised and without a destructor: reading it never allocates itself.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    // Bytes asked for in allocations of 1 MiB or more: fresh pages, not malloc's free lists.
    static LARGE_BYTES: Cell<u64> = const { Cell::new(0) };
}

const LARGE: usize = 1 << 20;

fn bump(size: usize) {
    // `try_with`: during thread teardown the slot may be gone; those allocations are not ours.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
    if size >= LARGE {
        let _ = LARGE_BYTES.try_with(|c| c.set(c.get() + size as u64));
    }
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the GlobalAlloc
// contract; the counter only observes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.with(Cell::get)
}

fn large_bytes() -> u64 {
    LARGE_BYTES.with(Cell::get)
}

fn cat_dog_ship() -> Dataset {
    // The notebook's X, each 2x2 image flattened row-major.
    let x = vec![
        56.0, 231.0, 24.0, 1.0, 120.0, 30.0, 24.0, 0.0, 20.0, 31.0, 240.0, 100.0, 56.0, 201.0,
        22.0, -10.0, 140.0, 27.0, 30.0, 10.0, 25.0, 30.0, 230.0, 110.0,
    ];
    let y = Labels::Indices(vec![0, 1, 2, 0, 1, 2]);
    Dataset::new(SampleSet::from_flat(x, 4).unwrap(), y, 4, 3).unwrap()
}

fn random_dataset(m: usize, n_in: usize, n_out: usize) -> Dataset {
    let mut rng = NumpyRandom::new(7);
    let x: Vec<f64> = (0..m * n_in).map(|_| rng.next_f64()).collect();
    let y = Labels::Indices((0..m).map(|j| (j % n_out) as i64).collect());
    Dataset::new(SampleSet::from_flat(x, n_in).unwrap(), y, n_in, n_out).unwrap()
}

/// Trains `epochs` epochs; returns the allocations of each epoch after the first, counted
/// between the control hook's calls (the last one up to the return of `run`).
fn allocations_per_epoch_after_the_first(
    mut net: Network,
    data: &Dataset,
    epochs: u64,
) -> Vec<u64> {
    let label = format!("{:?} on {} samples", net.config().layers, data.samples());
    let mut history = Vec::new();
    let mut trainer = Trainer::new(&net, data);
    let mut marks = Vec::with_capacity(epochs as usize + 1);
    let out = trainer.run(&mut net, data, epochs, &mut history, |b| {
        if b.epoch >= 1 {
            marks.push(allocations());
        }
        Control::Continue
    });
    marks.push(allocations());
    assert_eq!(out.status, TrainStatus::Completed, "{label}: {out:?}");
    assert_eq!(out.epochs_run, epochs, "{label}");
    marks.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn the_counter_sees_allocations() {
    // Without this the other tests could pass on a counter that counts nothing.
    let before = allocations();
    let v: Vec<u64> = std::hint::black_box(Vec::with_capacity(16));
    let after = allocations();
    drop(v);
    assert_eq!(
        after - before,
        1,
        "one Vec::with_capacity is one allocation"
    );
}

#[test]
fn notebook_training_allocates_nothing_after_epoch_1() {
    let net = Network::new(NetConfig::new(vec![4, 3]), &Init::NumpyRand { seed: 0 }).unwrap();
    let n: u64 = allocations_per_epoch_after_the_first(net, &cat_dog_ship(), 100)
        .iter()
        .sum();
    assert_eq!(
        n, 0,
        "[4, 3] on cat-dog-ship: {n} allocations after epoch 1"
    );
}

#[test]
fn two_layer_training_allocates_nothing_after_epoch_1() {
    let net = Network::new(NetConfig::new(vec![4, 4, 3]), &Init::NumpyRand { seed: 0 }).unwrap();
    let n: u64 = allocations_per_epoch_after_the_first(net, &cat_dog_ship(), 100)
        .iter()
        .sum();
    assert_eq!(
        n, 0,
        "[4, 4, 3] on cat-dog-ship: {n} allocations after epoch 1"
    );
}

/// `[64, 128, 10]` with biases on 300 samples: two chunks of the forward pass, and every
/// product past the plain loop's limit, so through the gemm crate, which allocates its
/// packing buffers on each call (at most two allocations; measured cheaper than what it
/// saves, see bench/README.md). The core itself allocates nothing per epoch: every epoch
/// after the first makes the same allocations, two at most per gemm call (the last one
/// fewer: after the last update no deltas are computed).
#[test]
fn gemm_sized_training_allocates_only_gemms_scratch_after_epoch_1() {
    let mut config = NetConfig::new(vec![64, 128, 10]);
    config.bias = true;
    let net = Network::new(config, &Init::Xavier { seed: 1 }).unwrap();
    let per_epoch = allocations_per_epoch_after_the_first(net, &random_dataset(300, 64, 10), 6);
    // Per chunk of rows: X W1^T, A1 W2^T and D2 W2; then dW1 and dW2 over all rows.
    let gemm_calls = 2 * 3 + 2;
    let (last, steady) = per_epoch.split_last().expect("five epochs after the first");
    assert!(
        steady
            .iter()
            .all(|&n| n == steady[0] && n <= 2 * gemm_calls)
            && *last <= steady[0],
        "[64, 128, 10] on 300 samples: allocations per epoch after the first {per_epoch:?}; \
         expected the same each epoch (the last no more) and at most {} (two per gemm call)",
        2 * gemm_calls
    );
}

/// A trainer per request must not page in a fresh workspace each time: the batch buffers
/// of a dropped trainer are kept for the next one on the same thread.
#[test]
fn a_second_trainer_on_a_thread_reuses_the_first_ones_batch_buffers() {
    let data = random_dataset(2000, 64, 10);
    let net = Network::new(NetConfig::new(vec![64, 128, 10]), &Init::He { seed: 1 }).unwrap();
    let train = || {
        let before = large_bytes();
        let mut net = net.clone();
        let mut history = Vec::new();
        let mut trainer = Trainer::new(&net, &data);
        let out = trainer.run(&mut net, &data, 2, &mut history, |_| Control::Continue);
        assert_eq!(out.status, TrainStatus::Completed);
        large_bytes() - before
    };
    // 2,000 x 128 activations and as many deltas: two buffers of 2 MiB.
    let first = train();
    assert!(
        first >= 2 * 2000 * 128 * 8,
        "the first trainer asked for {first} bytes in large allocations"
    );
    let second = train();
    assert_eq!(
        second, 0,
        "the second trainer asked for {second} bytes in large allocations"
    );
}
