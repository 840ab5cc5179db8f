//! Times the SAM image encoder (the costly part of SAM) on a fixed input,
//! for `bench/sam_encoder/bench.py`, which runs the official PyTorch
//! encoder on the same input and thread count.
//!
//! Usage: `sam_encoder_bench WEIGHTS THREADS ITERS [WARMUP]`; prints one
//! JSON line `{"impl": "rust", "threads": T, "seconds": [...]}`.

use clisc_sam::Sam;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: {} WEIGHTS THREADS ITERS [WARMUP]", args[0]);
        std::process::exit(2);
    }
    let threads: i32 = args[2].parse().expect("THREADS");
    let iters: usize = args[3].parse().expect("ITERS");
    let warmup: usize = args.get(4).map(|s| s.parse().expect("WARMUP")).unwrap_or(1);
    tch::set_num_threads(threads);
    let sam =
        Sam::load(std::path::Path::new(&args[1]), Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
    let size = sam.img_size();
    // The same deterministic input as bench_torch.py: a ramp in [-2, 2].
    let x = (Tensor::arange(3 * size * size, (Kind::Float, Device::Cpu)).remainder(4001.0)
        / 1000.0
        - 2.0)
        .view([1, 3, size, size]);
    let mut seconds = Vec::with_capacity(iters);
    tch::no_grad(|| {
        for i in 0..warmup + iters {
            let t = Instant::now();
            let y = sam.image_encoder.forward(&x);
            let _ = y.sum(Kind::Float).double_value(&[]);
            if i >= warmup {
                seconds.push(t.elapsed().as_secs_f64());
            }
        }
    });
    let list: Vec<String> = seconds.iter().map(|s| format!("{s:.4}")).collect();
    println!(
        "{{\"impl\": \"rust\", \"threads\": {threads}, \"seconds\": [{}]}}",
        list.join(", ")
    );
}
