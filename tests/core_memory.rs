//! The server admits a request by the core's own account of what a pass allocates
//! (`nn::workspace_bytes`, `Trainer::bytes`): that account must bound what the core really
//! holds at its peak, or admission lets through what the memory cap then refuses (an abort).
//! And it must not be a wild overestimate, or admission refuses what would fit.
//!
//! A tracking allocator wraps the system one and records, per thread, the live bytes and
//! their peak; each case measures the peak above what was live before the call.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use backprop_server::nn::{
    self, Control, Dataset, Init, Labels, NetConfig, Network, NumpyRandom, SampleSet, Trainer,
};

struct Tracking;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn add(bytes: i64) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + bytes;
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

// SAFETY: every call is forwarded unchanged to `System`; the counters only observe.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as i64);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as i64);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as i64 - layout.size() as i64);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as i64));
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// The most bytes live during `f` above those live before it, on a fresh thread (whose
/// kept batch buffers are none yet, so every buffer is allocated and counted).
fn peak_of<T: Send>(f: impl FnOnce() -> T + Send) -> (u64, T) {
    std::thread::scope(|s| {
        s.spawn(|| {
            let base = LIVE.with(Cell::get);
            PEAK.with(|p| p.set(base));
            let out = f();
            let peak = PEAK.with(Cell::get) - base;
            (peak.max(0) as u64, out)
        })
        .join()
        .unwrap()
    })
}

fn dataset(m: usize, n_in: usize, n_out: usize) -> Dataset {
    let mut rng = NumpyRandom::new(7);
    let x: Vec<f64> = (0..m * n_in).map(|_| rng.next_f64()).collect();
    let y = Labels::Indices((0..m).map(|j| (j % n_out) as i64).collect());
    Dataset::new(SampleSet::from_flat(x, n_in).unwrap(), y, n_in, n_out).unwrap()
}

/// Shapes from the notebook's to ones where the activations dominate and ones where the
/// parameters do.
const CASES: [(&[usize], usize, bool); 5] = [
    (&[4, 3], 6, false),
    (&[4, 4, 3], 150, true),
    (&[64, 128, 10], 3000, true),
    (&[4, 20_000, 3], 50, false),
    (&[8, 512, 256, 5], 700, true),
];

/// What the gemm crate may allocate per call beyond the account (its packing buffers,
/// bounded by the cache sizes it blocks for: `nn::THREAD_SCRATCH_BYTES` covers them).
const SLACK: u64 = nn::THREAD_SCRATCH_BYTES as u64;

fn check(what: &str, layers: &[usize], m: usize, estimate: u128, actual: u64) {
    let estimate = u64::try_from(estimate).unwrap();
    println!("{what} {layers:?} x {m}: estimate {estimate} bytes, peak {actual} bytes");
    assert!(
        actual <= estimate + SLACK,
        "{what} of {layers:?} on {m} samples held {actual} bytes at its peak, over the \
         estimate {estimate} (+{SLACK} for gemm's scratch)"
    );
    assert!(
        estimate <= 4 * actual + (1 << 20),
        "{what} of {layers:?} on {m} samples: estimate {estimate} bytes is far over the \
         {actual} it held"
    );
}

#[test]
fn the_admission_figures_bound_what_the_core_allocates() {
    for (layers, m, bias) in CASES {
        let mut config = NetConfig::new(layers.to_vec());
        config.bias = bias;
        let net = Network::new(config.clone(), &Init::Xavier { seed: 1 }).unwrap();
        let (n_in, n_out) = (layers[0], *layers.last().unwrap());
        let data = dataset(m, n_in, n_out);

        let (peak, grads) = peak_of(|| nn::gradients(&net, &data).unwrap());
        drop(grads);
        check(
            "gradients",
            layers,
            m,
            nn::workspace_bytes(&config, m, true, false),
            peak,
        );

        let (peak, trace) = peak_of(|| nn::trace(&net, &data).unwrap());
        drop(trace);
        check(
            "trace",
            layers,
            m,
            nn::workspace_bytes(&config, m, true, true),
            peak,
        );

        let x = data.x().clone();
        let (peak, p) = peak_of(|| nn::predict(&net, &x, None).unwrap());
        drop(p);
        check(
            "predict",
            layers,
            m,
            nn::workspace_bytes(&config, m, false, false),
            peak,
        );

        let mut trained = net.clone();
        let mut history = Vec::new();
        let (peak, ()) = peak_of(|| {
            let mut t = Trainer::new(&trained, &data);
            t.run(&mut trained, &data, 3, &mut history, |_| Control::Continue);
        });
        // The history is the caller's (the server counts it with the session).
        let history_bytes = (history.capacity() * 8) as u128;
        check(
            "train",
            layers,
            m,
            Trainer::bytes(&config, m) + history_bytes,
            peak,
        );
    }
}
