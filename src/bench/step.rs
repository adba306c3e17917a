//! The step benchmark: training steps timed per phase, inference, data preparation and memory for one
//! [`BenchSpec`] on one backend.

use std::time::Instant;

use anyhow::{bail, Result};
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use hst_data::{BatchMode, EmbeddedConfig, HstBatcher, MultiLabelSource};
use hst_transfer::HstLosses;

use crate::backend::{BackendJob, BackendName};

use super::inputs::{adam, bench_inputs, build_model, sync, BenchConstants, SyntheticJpegs};
use super::memory::{host_peak_rss, reset_host_peak_rss, GpuMemoryMonitor};
use super::report::{is_gpu, BenchResult, MachineInfo, PhaseSeconds};
use super::spec::BenchSpec;
use super::{BURN_VERSION, DTYPE};

/// Seconds per batch of the real data pipeline for `spec`: [`HstBatcher::prepare`] (decode, train
/// augmentation, normalisation, in parallel) and the upload to `device`.
fn measure_data<B: Backend>(spec: &BenchSpec, device: &B::Device) -> Result<f64> {
    let images = spec.batch * (spec.data_batches + 1);
    let source: Box<dyn MultiLabelSource> = if spec.uses_embedded_data() {
        let data = EmbeddedConfig::new()
            .with_train_images(images.max(64))
            .with_test_images(1)
            .load()?;
        Box::new(data.train)
    } else {
        Box::new(SyntheticJpegs::new(images, spec.classes, spec.seed)?)
    };
    let transform = spec
        .config
        .data
        .transform
        .clone()
        .with_seed(spec.seed)
        .init();
    let batcher = HstBatcher::new(transform, BatchMode::Train);
    let partial = source.full_labels().clone();
    let n = source.len();
    let run = |b: usize| -> Result<()> {
        let indices: Vec<usize> = (0..spec.batch).map(|i| (b * spec.batch + i) % n).collect();
        let batch = batcher
            .prepare(source.as_ref(), &partial, &indices, 0)?
            .into_batch::<B>(device);
        drop(batch);
        sync::<B>(device)
    };
    run(0)?;
    let start = Instant::now();
    for b in 1..=spec.data_batches {
        run(b)?;
    }
    Ok(start.elapsed().as_secs_f64() / spec.data_batches as f64)
}

/// Measure one [`BenchSpec`] (see the [module docs](super)).
pub struct BenchJob<'a> {
    /// What to measure.
    pub spec: &'a BenchSpec,
    /// GPU name for the report when `nvidia-smi` cannot tell it.
    pub gpu_name: Option<String>,
}

impl BackendJob for BenchJob<'_> {
    type Output = Result<BenchResult>;

    fn run<B: AutodiffBackend>(self, backend: BackendName, device: B::Device) -> Self::Output {
        bench_model::<B>(self.spec, backend, &device, self.gpu_name)
    }
}

fn bench_model<B: AutodiffBackend>(
    spec: &BenchSpec,
    backend: BackendName,
    device: &B::Device,
    gpu_name: Option<String>,
) -> Result<BenchResult> {
    let rss_reset = reset_host_peak_rss();
    let monitor = if is_gpu(backend) {
        GpuMemoryMonitor::start()
    } else {
        None
    };
    let device_name = format!("{device:?}");
    tracing::info!(config = %spec.name, backend = %backend, "building the model");

    // Setup: model, optimiser, random inputs, prototypes.
    let setup = Instant::now();
    let constants = BenchConstants::of(spec);
    let mut model = build_model::<B>(spec, &constants, device);
    let mut optim = adam::<B>(&spec.config);
    let (images, partial, prototypes) = bench_inputs::<B>(spec, &constants, device);
    let step = spec.schedule_step();
    let lr = spec.config.optimizer.lr;
    sync::<B>(device)?;
    let setup_seconds = setup.elapsed().as_secs_f64();

    // Training steps: warm-up, then timed, each phase closed by a sync.
    let mut phases = PhaseSeconds::default();
    let mut first_step_seconds = 0.0;
    let mut last_loss: Option<Tensor<B, 1>> = None;
    for i in 0..spec.warmup + spec.steps {
        let t0 = Instant::now();
        let out = model.forward_train(images.clone());
        sync::<B>(device)?;
        let t1 = Instant::now();
        let losses: HstLosses<B> = model
            .losses(
                &out,
                partial.clone(),
                Some(&prototypes),
                step,
                spec.seed + i as u64,
            )
            .map_err(|e| anyhow::anyhow!("losses: {e}"))?;
        sync::<B>(device)?;
        let t2 = Instant::now();
        let grads = losses.total.backward();
        sync::<B>(device)?;
        let t3 = Instant::now();
        let grads = GradientsParams::from_grads(grads, &model);
        model = optim.step(lr, model, grads);
        sync::<B>(device)?;
        let t4 = Instant::now();
        if i == 0 {
            first_step_seconds = (t4 - t0).as_secs_f64();
        }
        if i >= spec.warmup {
            phases.forward += (t1 - t0).as_secs_f64();
            phases.loss += (t2 - t1).as_secs_f64();
            phases.backward += (t3 - t2).as_secs_f64();
            phases.optimizer += (t4 - t3).as_secs_f64();
        }
        last_loss = Some(losses.total.detach());
    }
    let n = spec.steps.max(1) as f64;
    phases.forward /= n;
    phases.loss /= n;
    phases.backward /= n;
    phases.optimizer /= n;
    let train_step_seconds = phases.forward + phases.loss + phases.backward + phases.optimizer;
    let last_loss = last_loss
        .map(|l| l.into_scalar().elem::<f64>())
        .unwrap_or(f64::NAN);
    if !last_loss.is_finite() {
        bail!("the training loss is not finite ({last_loss})");
    }

    // Inference.
    let infer_images_per_second = if spec.infer {
        let inner = model.valid();
        let images = images.clone().inner();
        for _ in 0..spec.warmup {
            let _ = inner.forward(images.clone());
            sync::<B::InnerBackend>(device)?;
        }
        let start = Instant::now();
        for _ in 0..spec.steps {
            let _ = inner.forward(images.clone());
            sync::<B::InnerBackend>(device)?;
        }
        Some(spec.batch as f64 * spec.steps as f64 / start.elapsed().as_secs_f64())
    } else {
        None
    };
    drop(model);

    // Data preparation.
    let data_seconds = if spec.data {
        Some(measure_data::<B::InnerBackend>(spec, device)?)
    } else {
        None
    };
    phases.data = data_seconds;

    let device_memory = monitor.map(GpuMemoryMonitor::stop);
    Ok(BenchResult {
        kind: "bench",
        config: spec.name.clone(),
        backend,
        backend_type: B::name(device),
        machine: MachineInfo::detect(backend, Some(&device_name), gpu_name),
        device: device_name,
        burn: BURN_VERSION,
        dtype: DTYPE,
        trunk: spec.trunk_name(),
        frozen_stages: spec.config.model.trunk.frozen_stages,
        image_size: spec.image_size,
        batch: spec.batch,
        classes: spec.classes,
        warmup: spec.warmup,
        steps: spec.steps,
        setup_seconds,
        first_step_seconds,
        train_images_per_second: spec.batch as f64 / train_step_seconds.max(1e-12),
        train_step_seconds,
        infer_images_per_second,
        data_images_per_second: data_seconds.map(|s| spec.batch as f64 / s.max(1e-12)),
        phases,
        last_loss,
        host_peak_rss_bytes: host_peak_rss(),
        host_peak_rss_reset: rss_reset,
        device_memory,
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::tiny_spec as tiny;

    #[test]
    fn a_tiny_benchmark_runs_and_reports_every_phase() {
        type AB = burn::backend::Autodiff<burn::backend::Flex>;
        let spec = tiny();
        let r = bench_model::<AB>(&spec, BackendName::Flex, &Default::default(), None).unwrap();
        assert!(r.train_images_per_second > 0.0 && r.last_loss.is_finite());
        assert!(r.phases.forward > 0.0 && r.phases.backward > 0.0 && r.phases.optimizer > 0.0);
        assert!(r.infer_images_per_second.unwrap() > 0.0);
        assert!(r.data_images_per_second.unwrap() > 0.0);
        assert!(r.host_peak_rss_bytes.unwrap() > 0);
        assert!(r.device_memory.is_none());
        let row = r.markdown_row();
        assert_eq!(
            row.matches('|').count(),
            BenchResult::markdown_header()
                .lines()
                .next()
                .unwrap()
                .matches('|')
                .count()
        );
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["burn"], "0.21.0");
        assert_eq!(json["config"], "default");
    }
}
