//! `hst warmup`: compile and autotune a configuration's GPU kernels ahead of training.
//!
//! Runs the configuration's training step (forward with the frozen stages on the inner backend, every HST
//! loss, backward, Adam) and its inference pass at the configuration's shapes until the step time settles,
//! with a progress bar. CubeCL stores what it compiled and tuned in the persistent cache of
//! [`crate::gpu_runtime`], so a later `hst train`/`hst bench` with the same shapes starts warm. On the CPU
//! backends there is nothing to compile; the command then only reports the step time.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::{run_on, BackendJob, BackendName};
use crate::bench::{
    adam, bench_inputs, build_model, sized_spec, sync, BenchConstants, BenchPreset, BenchSpec,
};

/// Arguments of `hst warmup`.
#[derive(clap::Args, Debug, Clone)]
pub struct WarmupArgs {
    /// Configurations to warm up, comma-separated (those of `hst bench --config`).
    #[arg(
        long = "config",
        value_enum,
        value_delimiter = ',',
        default_value = "default"
    )]
    pub configs: Vec<BenchPreset>,
    /// Batch size (overrides the configuration's; tuning is per shape, so use the batch you train with).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Input side in pixels (overrides the configuration's).
    #[arg(long, value_name = "PIXELS")]
    pub image_size: Option<usize>,
    /// At most this many training steps; warm-up stops earlier once two steps in a row are within 20% of
    /// each other (after at least 2).
    #[arg(long, default_value_t = 6)]
    pub max_steps: usize,
    /// Autotune level of this run: minimal, balanced, extensive or full (default: `CUBECL_AUTOTUNE_LEVEL`, else
    /// minimal). A higher level tunes longer once; later runs reuse its results from the cache.
    #[arg(long, value_name = "LEVEL")]
    pub autotune_level: Option<String>,
}

/// One configuration's warm-up.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WarmupReport {
    /// Configuration name.
    pub config: String,
    /// Seconds of each training step, in order.
    pub step_seconds: Vec<f64>,
    /// Seconds of the first and of the last inference pass.
    pub infer_seconds: (f64, f64),
}

impl WarmupReport {
    /// A one-line summary.
    pub fn summary(&self) -> String {
        let first = self.step_seconds.first().copied().unwrap_or(f64::NAN);
        let last = self.step_seconds.last().copied().unwrap_or(f64::NAN);
        format!(
            "{}: first training step {first:.2} s, last {last:.2} s ({} steps); inference {:.2} s → {:.2} s",
            self.config,
            self.step_seconds.len(),
            self.infer_seconds.0,
            self.infer_seconds.1
        )
    }
}

/// Whether the last two step times are within 20% of each other.
fn settled(steps: &[f64]) -> bool {
    match steps {
        [.., a, b] => (a - b).abs() <= 0.2 * a.max(*b),
        _ => false,
    }
}

struct WarmupJob<'a> {
    spec: &'a BenchSpec,
    max_steps: usize,
}

impl BackendJob for WarmupJob<'_> {
    type Output = Result<WarmupReport>;

    fn run<B: AutodiffBackend>(self, _backend: BackendName, device: B::Device) -> Self::Output {
        let spec = self.spec;
        let constants = BenchConstants::of(spec);
        let mut model = build_model::<B>(spec, &constants, &device);
        let mut optim = adam::<B>(&spec.config);
        let (images, partial, prototypes) = bench_inputs::<B>(spec, &constants, &device);
        let step = spec.schedule_step();
        let lr = spec.config.optimizer.lr;
        let bar = ProgressBar::new(self.max_steps as u64 + 2);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{:>10} {{bar:30.cyan}} {{pos}}/{{len}} [{{elapsed}}] {{msg}}",
                spec.name
            ))
            .expect("valid template"),
        );
        let infer = |model: &crate::transfer::Hst<B>| -> Result<f64> {
            let t = Instant::now();
            let _ = model.valid().forward(images.clone().inner());
            sync::<B::InnerBackend>(&device)?;
            Ok(t.elapsed().as_secs_f64())
        };
        bar.set_message("inference (compiling)");
        let first_infer = infer(&model)?;
        bar.inc(1);
        let mut step_seconds = Vec::new();
        for i in 0..self.max_steps {
            bar.set_message(format!("training step {}", i + 1));
            let t = Instant::now();
            let out = model.forward_train(images.clone());
            let losses = model
                .losses(
                    &out,
                    partial.clone(),
                    Some(&prototypes),
                    step,
                    spec.seed + i as u64,
                )
                .map_err(|e| anyhow::anyhow!("losses: {e}"))?;
            let grads = GradientsParams::from_grads(losses.total.backward(), &model);
            model = optim.step(lr, model, grads);
            sync::<B>(&device)?;
            step_seconds.push(t.elapsed().as_secs_f64());
            bar.inc(1);
            bar.set_message(format!("last step {:.2} s", step_seconds[i]));
            if settled(&step_seconds) {
                break;
            }
        }
        let last_infer = infer(&model)?;
        bar.inc(1);
        bar.finish_and_clear();
        Ok(WarmupReport {
            config: spec.name.clone(),
            step_seconds,
            infer_seconds: (first_infer, last_infer),
        })
    }
}

/// `hst warmup`: warm every configuration of `args` up on `backend`, printing a summary line each.
///
/// # Errors
/// Bad arguments, a backend that cannot start, a failing step.
pub fn run_warmup(args: &WarmupArgs, backend: BackendName) -> Result<()> {
    if args.max_steps == 0 {
        bail!("--max-steps must be at least 1");
    }
    for preset in &args.configs {
        let spec = sized_spec(*preset, args.image_size, args.batch)?;
        let job = WarmupJob {
            spec: &spec,
            max_steps: args.max_steps,
        };
        let report = run_on(backend, job)?
            .with_context(|| format!("warm-up of `{}` on {backend}", spec.name))?;
        println!("{}", report.summary());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settling_needs_two_close_steps() {
        assert!(!settled(&[]));
        assert!(!settled(&[1.0]));
        assert!(!settled(&[30.0, 2.0]));
        assert!(settled(&[30.0, 2.0, 1.8]));
        assert!(!settled(&[30.0, 2.0, 1.5]));
    }
}
