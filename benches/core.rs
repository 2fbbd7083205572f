//! Criterion benchmarks of the core (issue 2's speed section); `bench/run.sh` runs them next to
//! `bench/numpy_baseline.py` and prints the ratios. `bench/README.md` has the figures.
//!
//! - `train/notebook_4-3_100ep`, `train/notebook_4-4-3_100ep`: the notebook problem
//!   (cat-dog-ship, numpy_rand seed 0, relu, sum, lr 1e-4), 100 epochs, as one request does
//!   it: a fresh `Trainer` and 100 updates with the loss after each.
//! - `train/blobs_64-128-10_5ep`: 10,000 seeded Gaussian blobs (the generator below is
//!   NumPy's legacy `randn`, bit for bit, so NumPy trains on the same numbers), he init,
//!   5 epochs per iteration; divide by 5 for the time per epoch. `..._5ep_2threads`: the
//!   same on a trainer with two threads (wall clock only), which must give the same bits.
//! - `gemm/*`: the five matrix products of one blobs epoch through `src/nn/linalg.rs` (the
//!   gemm crate), faer and ndarray's `dot` (matrixmultiply); and small products through
//!   linalg (its plain loop up to 512 multiply-adds) and gemm directly, to place the threshold.
//!
//! Before measuring, `main` prints the losses NumPy must reproduce (`check ...` lines), so a
//! reader (and `run.sh`) can see both sides did the same work.
//!
//! `BENCH_CLOCK=cpu` measures this thread's CPU time instead of wall-clock time (Linux), and
//! names the groups `train_cpu` and `gemm_cpu`: on a shared machine the time other
//! processes hold the core out of the measurement. NumPy's baseline measures both clocks.

use std::hint::black_box;

use backprop_server::nn::{
    Control, Dataset, GradReduction, Init, Labels, NetConfig, Network, NumpyRandom, SampleSet,
    TrainStatus, Trainer,
};
use criterion::measurement::Measurement;
use criterion::{BatchSize, Criterion, Throughput};
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

// The core's module is private to the library; compiling the same file here lets the
// benchmark time it alone and both sides of its small/packed threshold.
#[path = "../src/nn/linalg.rs"]
#[allow(dead_code)]
mod linalg;

/// The notebook's cat-dog-ship, flattened row-major, and its class indices.
const CAT_DOG_SHIP: [[f64; 4]; 6] = [
    [56.0, 231.0, 24.0, 1.0],
    [120.0, 30.0, 24.0, 0.0],
    [20.0, 31.0, 240.0, 100.0],
    [56.0, 201.0, 22.0, -10.0],
    [140.0, 27.0, 30.0, 10.0],
    [25.0, 30.0, 230.0, 110.0],
];
const CAT_DOG_SHIP_CLASSES: [i64; 6] = [0, 1, 2, 0, 1, 2];

const BLOBS_SAMPLES: usize = 10_000;
const BLOBS_LAYERS: [usize; 3] = [64, 128, 10];
const BLOBS_EPOCHS: u64 = 5;
const BLOBS_DATA_SEED: u32 = 7;
const BLOBS_INIT_SEED: u32 = 1;
const BLOBS_LR: f64 = 0.05;

fn notebook_data() -> Dataset {
    let flat = CAT_DOG_SHIP.iter().flatten().copied().collect();
    let samples = SampleSet::from_flat(flat, 4).expect("6 samples of 4");
    Dataset::new(
        samples,
        Labels::Indices(CAT_DOG_SHIP_CLASSES.to_vec()),
        4,
        3,
    )
    .expect("cat-dog-ship fits [4, ..., 3]")
}

fn notebook_net(layers: &[usize]) -> Network {
    Network::new(
        NetConfig::new(layers.to_vec()),
        &Init::NumpyRand { seed: 0 },
    )
    .expect("the notebook's net is valid")
}

/// NumPy's legacy `randn` (polar Box-Muller, the second value of each pair cached).
struct Gauss {
    u: NumpyRandom,
    cached: Option<f64>,
}

impl Gauss {
    fn new(seed: u32) -> Self {
        Self {
            u: NumpyRandom::new(seed),
            cached: None,
        }
    }

    fn next(&mut self) -> f64 {
        if let Some(g) = self.cached.take() {
            return g;
        }
        loop {
            let x1 = 2.0 * self.u.next_f64() - 1.0;
            let x2 = 2.0 * self.u.next_f64() - 1.0;
            let r2 = x1 * x1 + x2 * x2;
            if r2 < 1.0 && r2 != 0.0 {
                let f = (-2.0 * r2.ln() / r2).sqrt();
                self.cached = Some(f * x1);
                return f * x2;
            }
        }
    }
}

/// `np.random.seed(7); centers = 3 * randn(10, 64); c = arange(10000) % 10;
/// x = centers[c] + randn(10000, 64)`, as in `bench/numpy_baseline.py`.
fn blobs_data() -> Dataset {
    let (n_in, n_out) = (BLOBS_LAYERS[0], BLOBS_LAYERS[2]);
    let mut g = Gauss::new(BLOBS_DATA_SEED);
    let centers: Vec<f64> = (0..n_out * n_in).map(|_| 3.0 * g.next()).collect();
    let classes: Vec<i64> = (0..BLOBS_SAMPLES).map(|j| (j % n_out) as i64).collect();
    let mut flat = Vec::with_capacity(BLOBS_SAMPLES * n_in);
    for &c in &classes {
        let center = &centers[c as usize * n_in..(c as usize + 1) * n_in];
        flat.extend(center.iter().map(|m| m + g.next()));
    }
    let samples = SampleSet::from_flat(flat, n_in).expect("rows of 64");
    Dataset::new(samples, Labels::Indices(classes), n_in, n_out).expect("blobs fit the net")
}

fn blobs_net() -> Network {
    let mut config = NetConfig::new(BLOBS_LAYERS.to_vec());
    config.grad_reduction = GradReduction::Mean;
    config.learning_rate = BLOBS_LR;
    Network::new(
        config,
        &Init::He {
            seed: BLOBS_INIT_SEED,
        },
    )
    .expect("the blobs net is valid")
}

/// Trains a fresh copy of `net` for `epochs` and returns the loss history; panics unless
/// every epoch ran, so a diverging benchmark cannot pass for a fast one.
fn train(net: &Network, data: &Dataset, epochs: u64, threads: usize) -> Vec<f64> {
    let mut net = net.clone();
    let mut history = Vec::new();
    let out = Trainer::new(&net, data).with_threads(threads).run(
        &mut net,
        data,
        epochs,
        &mut history,
        |_| Control::Continue,
    );
    assert_eq!(
        (out.status, out.epochs_run),
        (TrainStatus::Completed, epochs),
        "the benchmark run must complete"
    );
    history
}

fn train_benches<M: Measurement>(c: &mut Criterion<M>, suffix: &str) {
    let mut group = c.benchmark_group(format!("train{suffix}"));
    let data = notebook_data();
    for (name, layers) in [
        ("notebook_4-3_100ep", &[4, 3][..]),
        ("notebook_4-4-3_100ep", &[4, 4, 3][..]),
    ] {
        let net = notebook_net(layers);
        group.bench_function(name, |b| {
            // The clone is setup, not measured: a request starts from weights it already has.
            b.iter_batched_ref(
                || (net.clone(), Vec::new()),
                |(net, history)| {
                    let mut t = Trainer::new(net, &data);
                    let out = t.run(net, &data, 100, history, |_| Control::Continue);
                    black_box(out)
                },
                BatchSize::SmallInput,
            );
        });
    }

    let data = blobs_data();
    let net = blobs_net();
    group.throughput(Throughput::Elements(BLOBS_EPOCHS));
    // Two threads only on the wall clock: the CPU clock sees the calling thread, which waits.
    let threads: &[usize] = if suffix.is_empty() { &[1, 2] } else { &[1] };
    for &threads in threads {
        let name = match threads {
            1 => format!("blobs_64-128-10_{BLOBS_EPOCHS}ep"),
            t => format!("blobs_64-128-10_{BLOBS_EPOCHS}ep_{t}threads"),
        };
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || (net.clone(), Vec::new()),
                |(net, history)| {
                    // A fresh trainer (and, with threads, its pool) per run, as per request.
                    let mut t = Trainer::new(net, &data).with_threads(threads);
                    let out = t.run(net, &data, BLOBS_EPOCHS, history, |_| Control::Continue);
                    black_box(out)
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

/// `c = a · b` through faer 0.24 (what `src/nn/linalg.rs` ran before the gemm crate), then
/// `vzeroupper`, as the core needed after each faer call (its kernels leave the upper
/// vector state dirty and every later SSE instruction slow).
fn faer_view_into(c: &mut ArrayViewMut2<'_, f64>, a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) {
    let (m, k) = a.dim();
    let n = b.dim().1;
    assert_eq!((a.ncols(), c.dim()), (b.nrows(), (m, n)));
    let (c_rs, c_cs) = (c.strides()[0], c.strides()[1]);
    // SAFETY: the shapes agree (asserted), the pointers and strides come from live views,
    // `c` is a unique borrow, and the AVX check guards vzeroupper.
    unsafe {
        let c = faer::MatMut::from_raw_parts_mut(c.as_mut_ptr(), m, n, c_rs, c_cs);
        let a = faer::MatRef::from_raw_parts(a.as_ptr(), m, k, a.strides()[0], a.strides()[1]);
        let b = faer::MatRef::from_raw_parts(b.as_ptr(), k, n, b.strides()[0], b.strides()[1]);
        faer::linalg::matmul::matmul(c, faer::Accum::Replace, a, b, 1.0, faer::Par::Seq);
        if std::arch::is_x86_feature_detected!("avx") {
            std::arch::x86_64::_mm256_zeroupper();
        }
    }
}

fn filled(rows: usize, cols: usize, salt: usize) -> Array2<f64> {
    Array2::from_shape_fn((rows, cols), |(i, j)| {
        ((i * 31 + j * 17 + salt) % 97) as f64 / 97.0 - 0.5
    })
}

fn gemm_benches<M: Measurement>(c: &mut Criterion<M>, suffix: &str) {
    let m = BLOBS_SAMPLES;
    let (n_in, hidden, n_out) = (BLOBS_LAYERS[0], BLOBS_LAYERS[1], BLOBS_LAYERS[2]);
    // Operands laid out as train.rs has them: activations (M, width) row-major, weights
    // (out, in) row-major, used transposed where the algebra says so.
    let x = filled(m, n_in, 1);
    let a1 = filled(m, hidden, 2);
    let d2 = filled(m, n_out, 3);
    let d1 = filled(m, hidden, 4);
    let w1 = filled(hidden, n_in, 5);
    let w2 = filled(n_out, hidden, 6);
    type Case<'a> = (&'a str, ArrayView2<'a, f64>, ArrayView2<'a, f64>);
    let cases: [Case<'_>; 5] = [
        ("fwd1_X.W1t", x.view(), w1.t()),
        ("fwd2_A1.W2t", a1.view(), w2.t()),
        ("dW2_D2t.A1", d2.t(), a1.view()),
        ("dA1_D2.W2", d2.view(), w2.view()),
        ("dW1_D1t.X", d1.t(), x.view()),
    ];
    let mut group = c.benchmark_group(format!("gemm{suffix}"));
    for (name, a, b) in cases {
        let (mm, k) = a.dim();
        let n = b.dim().1;
        let mut out = Array2::<f64>::zeros((mm, n));
        group.throughput(Throughput::Elements((2 * mm * n * k) as u64));
        group.bench_function(format!("{name}/linalg"), |bench| {
            bench.iter(|| linalg::matmul_into(&mut out.view_mut(), black_box(a), black_box(b)));
        });
        group.bench_function(format!("{name}/faer"), |bench| {
            bench.iter(|| faer_view_into(&mut out.view_mut(), black_box(a), black_box(b)));
        });
        group.bench_function(format!("{name}/matrixmultiply"), |bench| {
            bench.iter(|| black_box(black_box(a).dot(&black_box(b))));
        });
    }
    // Around the loop/gemm threshold in linalg.rs: products of the notebook's sizes and a
    // few larger ones, through linalg (the plain loop up to 512 multiply-adds) and through
    // gemm directly.
    for (mm, k, n) in [
        (6, 4, 3),
        (3, 6, 4),
        (8, 8, 8),
        (10, 10, 10),
        (12, 12, 12),
        (16, 16, 16),
        (24, 24, 24),
    ] {
        let (a_own, b_own) = (filled(mm, k, 7), filled(n, k, 8));
        let (a, b) = (a_own.view(), b_own.t());
        let (a_s, b_s) = (
            linalg::Strided::rows(a_own.as_slice().expect("row-major"), mm, k),
            linalg::Strided::rows(b_own.as_slice().expect("row-major"), n, k).t(),
        );
        let mut out = Array2::<f64>::zeros((mm, n));
        group.throughput(Throughput::Elements((2 * mm * n * k) as u64));
        let tag = format!("small_{mm}x{k}x{n}");
        group.bench_function(format!("{tag}/linalg"), |bench| {
            bench.iter(|| linalg::matmul_into(&mut out.view_mut(), black_box(a), black_box(b)));
        });
        group.bench_function(format!("{tag}/gemm"), |bench| {
            let out = out.as_slice_mut().expect("row-major");
            bench.iter(|| linalg::gemm_rows(out, black_box(a_s), black_box(b_s)));
        });
    }
    group.finish();
}

/// The numbers NumPy must reproduce, printed once so `run.sh` can compare them.
fn print_checks() {
    let data = notebook_data();
    for layers in [&[4, 3][..], &[4, 4, 3][..]] {
        let h = train(&notebook_net(layers), &data, 100, 1);
        println!(
            "check notebook {layers:?} loss after 100 epochs: {:.17e}",
            h[99]
        );
    }
    let (net, data) = (blobs_net(), blobs_data());
    let h = train(&net, &data, BLOBS_EPOCHS, 1);
    // What the two-thread benchmark computes must be what the one-thread one does.
    let h2 = train(&net, &data, BLOBS_EPOCHS, 2);
    assert!(
        h.iter().zip(&h2).all(|(a, b)| a.to_bits() == b.to_bits()),
        "blobs: 2 threads gave {h2:?}, 1 thread {h:?}"
    );
    println!(
        "check blobs {BLOBS_LAYERS:?} loss after {BLOBS_EPOCHS} epochs: {:.17e}",
        h[h.len() - 1]
    );
}

/// The calling thread's CPU time, from `clock_gettime(CLOCK_THREAD_CPUTIME_ID)`.
#[cfg(target_os = "linux")]
mod cpu_clock {
    use criterion::Throughput;
    use criterion::measurement::{Measurement, ValueFormatter};

    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }

    unsafe extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }

    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;

    fn now_ns() -> u64 {
        let mut t = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid timespec for the call to fill; the clock id is Linux's.
        let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    }

    pub struct CpuTime;

    impl Measurement for CpuTime {
        type Intermediate = u64;
        type Value = u64;

        fn start(&self) -> u64 {
            now_ns()
        }
        fn end(&self, start: u64) -> u64 {
            now_ns() - start
        }
        fn add(&self, a: &u64, b: &u64) -> u64 {
            a + b
        }
        fn zero(&self) -> u64 {
            0
        }
        fn to_f64(&self, v: &u64) -> f64 {
            *v as f64
        }
        fn formatter(&self) -> &dyn ValueFormatter {
            &Nanos
        }
    }

    struct Nanos;

    impl ValueFormatter for Nanos {
        fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
            let (div, unit) = match typical {
                t if t < 1e3 => (1.0, "ns (cpu)"),
                t if t < 1e6 => (1e3, "µs (cpu)"),
                t if t < 1e9 => (1e6, "ms (cpu)"),
                _ => (1e9, "s (cpu)"),
            };
            values.iter_mut().for_each(|v| *v /= div);
            unit
        }
        fn scale_throughputs(
            &self,
            _typical: f64,
            t: &Throughput,
            values: &mut [f64],
        ) -> &'static str {
            let per = match t {
                Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => {
                    *n as f64
                }
            };
            // Elements per second of CPU time, in units of 1e9 (GFLOP/s for the products).
            values.iter_mut().for_each(|v| *v = per / *v);
            "G/s (cpu)"
        }
        fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
            "ns"
        }
    }
}

fn run<M: Measurement>(mut c: Criterion<M>, suffix: &str) {
    train_benches(&mut c, suffix);
    gemm_benches(&mut c, suffix);
    c.final_summary();
}

fn main() {
    print_checks();
    match std::env::var("BENCH_CLOCK").as_deref() {
        Ok("wall") | Err(_) => run(Criterion::default().configure_from_args(), ""),
        #[cfg(target_os = "linux")]
        Ok("cpu") => run(
            Criterion::default()
                .with_measurement(cpu_clock::CpuTime)
                .configure_from_args(),
            "_cpu",
        ),
        Ok(other) => {
            panic!("BENCH_CLOCK is {other:?}; use \"wall\" (the default) or \"cpu\" (Linux)")
        }
    }
}
