//! BatchNorm before/after: burn's `BatchNorm::forward` (which broadcasts `[1, channels, 1, 1]` statistics) against
//! the trunks' row form (`hst_backbone::trunk::{batch_norm_train, batch_norm_eval}`, one scale and shift per
//! `[batch · channels]` row), measured in the same process on every compiled backend.
//!
//! `cargo bench --bench batch_norm` prints a Markdown table: for each shape (EfficientNet-Lite0 at 224, batch 32:
//! the stem output and a stage-4 map), the training transform (forward + backward of the sum, on `Autodiff<B>`)
//! and the eval transform (forward only, running statistics), in seconds per iteration, and the speed-up.
use std::time::Duration;

use burn::module::AutodiffModule;
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use hst::backend::{run_on, BackendJob, BackendName};
use hst::bench::time_steps;
use hst_backbone::trunk::{batch_norm_eval, batch_norm_train};

/// One shape, both transforms, both implementations.
#[derive(Clone)]
struct BatchNormBench {
    /// `[batch, channels, height, width]`
    shape: [usize; 4],
    iterations: usize,
}

/// Seconds per iteration: (burn train, rows train, burn eval, rows eval).
type Timings = (f64, f64, f64, f64);

fn seconds(iterations: usize, step: impl FnMut()) -> f64 {
    let (n, elapsed) = time_steps(1, iterations, Duration::from_millis(500), step);
    elapsed.as_secs_f64() / n as f64
}

impl BackendJob for BatchNormBench {
    type Output = Timings;

    fn run<B: AutodiffBackend>(self, _: BackendName, device: B::Device) -> Timings {
        let channels = self.shape[1];
        let bn: BatchNorm<B> = BatchNormConfig::new(channels).init(&device);
        let input = Tensor::<B, 4>::random(self.shape, Distribution::Default, &device);
        let train = |forward: &dyn Fn(Tensor<B, 4>) -> Tensor<B, 4>| {
            seconds(self.iterations, || {
                let x = input.clone().require_grad();
                let grads = forward(x.clone()).sum().backward();
                let _ = x.grad(&grads).map(|g| g.sum().into_scalar());
                let _ = B::sync(&device);
            })
        };
        let burn_train = train(&|x| bn.forward(x));
        let rows_train = train(&|x| batch_norm_train(&bn, x));

        let bn_eval = bn.valid();
        let input = input.inner();
        let eval = |forward: &dyn Fn(Tensor<B::InnerBackend, 4>) -> Tensor<B::InnerBackend, 4>| {
            seconds(self.iterations, || {
                let _ = forward(input.clone()).sum().into_scalar();
            })
        };
        let burn_eval = eval(&|x| bn_eval.forward(x));
        let rows_eval = eval(&|x| batch_norm_eval(&bn_eval, x));
        (burn_train, rows_train, burn_eval, rows_eval)
    }
}

fn main() {
    let shapes = [[32, 32, 112, 112], [32, 192, 14, 14]];
    println!(
        "| shape | backend | train: burn s | train: rows s | speed-up | eval: burn s | eval: rows s | speed-up |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for backend in BackendName::available() {
        for shape in shapes {
            let bench = BatchNormBench {
                shape,
                iterations: 3,
            };
            let name = format!("{shape:?}");
            match run_on(backend, bench) {
                Ok((bt, rt, be, re)) => println!(
                    "| {name} | {backend} | {bt:.4} | {rt:.4} | {:.2}x | {be:.4} | {re:.4} | {:.2}x |",
                    bt / rt,
                    be / re
                ),
                Err(e) => println!("| {name} | {backend} | unavailable: {e} | | | | | |"),
            }
        }
    }
}
