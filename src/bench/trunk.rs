//! The trunk-only benchmark of `benches/trunk.rs`: forward (inference) or training-step throughput of a trunk.

use std::time::{Duration, Instant};

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use hst_backbone::trunk::TrunkConfig;

use crate::backend::{BackendJob, BackendName};

/// One measured row of a [`TrunkBench`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchRow {
    /// Benchmark name, shapes included (`trunk-forward/resnet50-224-b8`).
    pub name: String,
    /// Backend that ran it.
    pub backend: BackendName,
    /// Images per second.
    pub images_per_second: f64,
    /// Mean seconds per iteration.
    pub seconds_per_iteration: f64,
    /// Timed iterations.
    pub iterations: usize,
}

impl BenchRow {
    /// A Markdown table row: `| name | backend | img/s | s/iter | iterations |`.
    pub fn markdown(&self) -> String {
        format!(
            "| {} | {} | {:.2} | {:.4} | {} |",
            self.name,
            self.backend,
            self.images_per_second,
            self.seconds_per_iteration,
            self.iterations
        )
    }
}

/// Run `step` `warmup` times, then time it until `iterations` runs and at least `min_time` have passed.
/// `step` must synchronise the device itself (e.g. by reading a value back).
pub fn time_steps(
    warmup: usize,
    iterations: usize,
    min_time: Duration,
    mut step: impl FnMut(),
) -> (usize, Duration) {
    for _ in 0..warmup {
        step();
    }
    let start = Instant::now();
    let mut n = 0;
    while n < iterations || start.elapsed() < min_time {
        step();
        n += 1;
    }
    (n, start.elapsed())
}

/// Forward-only throughput of a trunk (inference: no autodiff graph), or a training step
/// (forward + mean-of-features loss + backward) when `train` is set.
#[derive(Debug, Clone)]
pub struct TrunkBench {
    /// Benchmark name.
    pub name: String,
    /// The trunk.
    pub trunk: TrunkConfig,
    /// Input side in pixels.
    pub image_size: usize,
    /// Batch size.
    pub batch: usize,
    /// Time a training step instead of an inference forward.
    pub train: bool,
    /// Timed iterations (at least).
    pub iterations: usize,
}

impl BackendJob for TrunkBench {
    type Output = BenchRow;

    fn run<B: AutodiffBackend>(self, backend: BackendName, device: B::Device) -> BenchRow {
        let shape = [self.batch, 3, self.image_size, self.image_size];
        let (n, elapsed) = if self.train {
            let trunk = self.trunk.init::<B>(&device);
            let input = Tensor::<B, 4>::random(shape, Distribution::Default, &device);
            time_steps(1, self.iterations, Duration::from_secs(2), || {
                let loss = trunk.forward(input.clone()).mean();
                let _grads = loss.backward();
                // GPU work is asynchronous: wait for it before the clock is read.
                let _ = B::sync(&device);
            })
        } else {
            let trunk = self.trunk.init::<B>(&device).valid();
            let input = Tensor::<B::InnerBackend, 4>::random(shape, Distribution::Default, &device);
            time_steps(1, self.iterations, Duration::from_secs(2), || {
                let _ = trunk.forward(input.clone()).mean().into_scalar();
            })
        };
        let per_iter = elapsed.as_secs_f64() / n as f64;
        BenchRow {
            name: self.name,
            backend,
            images_per_second: self.batch as f64 / per_iter,
            seconds_per_iteration: per_iter,
            iterations: n,
        }
    }
}
