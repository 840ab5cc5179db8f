//! Measures forward+backward throughput of the slice classifier on this
//! machine: `cargo run -p clisc-cam --example train_speed -- resnet18 112 32`.

use clisc_cam::resnet::{Arch, ResNet};
use std::time::Instant;
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map_or("resnet18", |s| s.as_str());
    let arch = Arch::from_name(name).unwrap_or_else(|| {
        panic!(
            "architecture must be one of {:?}, found {name:?}",
            Arch::NAMES
        )
    });
    let size: i64 = args.get(2).map_or(112, |s| s.parse().unwrap());
    let batch: i64 = args.get(3).map_or(32, |s| s.parse().unwrap());
    let threads = tch::get_num_threads();
    let vs = nn::VarStore::new(Device::Cpu);
    let net = ResNet::new(&vs.root(), arch);
    let mut opt = nn::Adam::default().build(&vs, 1e-4).unwrap();
    let x = Tensor::rand([batch, 3, size, size], (Kind::Float, Device::Cpu));
    let y = Tensor::zeros([batch], (Kind::Int64, Device::Cpu));
    for it in 0..6 {
        let t = Instant::now();
        let loss = net.forward_t(&x, true).cross_entropy_for_logits(&y);
        opt.backward_step(&loss);
        let dt = t.elapsed().as_secs_f64();
        println!(
            "{} {size}px batch {batch} threads {threads}: iter {it} {:.3}s = {:.1} img/s",
            arch.name(),
            dt,
            batch as f64 / dt
        );
    }
    let t = Instant::now();
    let _logits = tch::no_grad(|| net.forward_t(&x, false));
    println!(
        "eval forward: {:.1} img/s",
        batch as f64 / t.elapsed().as_secs_f64()
    );
}
