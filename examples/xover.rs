use backprop_server::nn::*;
use std::time::Instant;
fn main() {
    let cases: &[(&[usize], usize)] = &[
        (&[4, 3], 300), (&[4, 3], 1000), (&[4, 8, 3], 2000),
        (&[16, 32, 4], 300), (&[16, 32, 4], 1000), (&[16, 32, 4], 4000),
        (&[32, 64, 64, 10], 300), (&[32, 64, 64, 10], 1000), (&[32,64,64,10], 4000),
        (&[64, 128, 10], 300),(&[64, 128, 10], 600), (&[64, 128, 10], 1000), (&[64, 128, 10], 4000),
    ];
    for (layers, m) in cases {
        let mut cfg = NetConfig::new(layers.to_vec());
        cfg.grad_reduction = GradReduction::Mean;
        cfg.learning_rate = 0.01;
        let net0 = Network::new(cfg.clone(), &Init::He { seed: 1 }).unwrap();
        let n = layers[0];
        let mut s = 12345u64;
        let flat: Vec<f64> = (0..m * n).map(|_| { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s >> 11) as f64 / (1u64 << 53) as f64 }).collect();
        let y: Vec<i64> = (0..*m as i64).map(|i| i % *layers.last().unwrap() as i64).collect();
        let data = Dataset::new(SampleSet::from_flat(flat, n).unwrap(), Labels::Indices(y), n, *layers.last().unwrap()).unwrap();
        let work = cfg.parameter_count() * *m as u128;
        let mut res = vec![];
        for threads in [1usize, 2] {
            let epochs = (200_000_000 / (work as u64 * 3)).clamp(5, 2000);
            let mut best = f64::MAX;
            for _ in 0..7 {
                let mut net = net0.clone();
                let mut t = Trainer::new(&net, &data).with_threads(threads);
                let mut h = vec![];
                let st = Instant::now();
                t.run(&mut net, &data, epochs, &mut h, |_| Control::Continue);
                best = best.min(st.elapsed().as_secs_f64() / epochs as f64);
            }
            res.push(best);
        }
        println!("{layers:?} m={m} work={work}: 1t {:.1} us, 2t {:.1} us, ratio {:.2}", res[0]*1e6, res[1]*1e6, res[1]/res[0]);
    }
}
