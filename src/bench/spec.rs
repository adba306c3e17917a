//! The named benchmark configurations ([`BenchPreset`]), one benchmark's shapes ([`BenchSpec`]) and the
//! arguments of `hst bench` ([`BenchArgs`]).

use std::path::PathBuf;

use anyhow::{bail, Result};
use hst_backbone::trunk::{BlockKind, TrunkKind};
use hst_data::TransformConfig;
use hst_train::config::DataSource;
use hst_train::TrainConfig;
use hst_transfer::ScheduleStep;

use crate::backend::BackendName;

/// The named benchmark configurations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchPreset {
    /// The paper's COCO setting: ResNet-101 at 448, conv1…layer3 frozen, batch 32, 80 classes.
    Paper,
    /// The same with 200 classes (VG-200).
    Vg,
    /// EfficientNet-Lite0 at 224 (stages 1–3 frozen), batch 32, 20 classes (VOC); random weights.
    VocSmall,
    /// The embedded main job (`TrainConfig::embedded()`): ResNet-10 width 16 at 64 px, batch 32, 20 classes.
    Default,
}

impl BenchPreset {
    /// Every preset.
    pub const ALL: [BenchPreset; 4] = [Self::Paper, Self::Vg, Self::VocSmall, Self::Default];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Paper => "paper",
            Self::Vg => "vg",
            Self::VocSmall => "voc-small",
            Self::Default => "default",
        }
    }

    /// The benchmark of this preset with its default sizes and step counts.
    pub fn spec(self) -> BenchSpec {
        let (config, classes, warmup, steps) = match self {
            Self::Paper => (TrainConfig::coco(), 80, 2, 5),
            Self::Vg => (TrainConfig::vg(), 200, 2, 5),
            Self::VocSmall => {
                let mut c = TrainConfig::voc_lite0();
                // Random weights: the benchmark must not depend on ../shared.
                c.pretrained = None;
                (c, 20, 2, 5)
            }
            Self::Default => (TrainConfig::embedded(), 20, 3, 10),
        };
        BenchSpec {
            name: self.name().to_string(),
            batch: config.batch_size,
            image_size: config.data.transform.image_size as usize,
            config,
            classes,
            warmup,
            steps,
            data_batches: 3,
            infer: true,
            data: true,
            seed: 0,
        }
    }
}

/// One benchmark: a training configuration (model, optimiser, transform) and the shapes it runs at.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    /// Configuration name (`paper`, …).
    pub name: String,
    /// Model, optimiser and image transform.
    pub config: TrainConfig,
    /// Number of classes.
    pub classes: usize,
    /// Batch size.
    pub batch: usize,
    /// Input side in pixels (the transform's output size).
    pub image_size: usize,
    /// Untimed training (and inference) steps before the clock starts.
    pub warmup: usize,
    /// Timed training (and inference) steps.
    pub steps: usize,
    /// Timed data-preparation batches (one more is run first, untimed).
    pub data_batches: usize,
    /// Measure inference.
    pub infer: bool,
    /// Measure data preparation.
    pub data: bool,
    /// Seed of the weights and of the random inputs.
    pub seed: u64,
}

impl BenchSpec {
    /// Word-vector dimension of the configuration.
    pub fn embed_dim(&self) -> usize {
        self.config.model.sarl.embed_dim
    }

    /// Change the input size (the transform becomes the reference's scaled to `size`, same normalisation).
    pub fn with_image_size(mut self, size: usize) -> Self {
        if size != self.image_size {
            let normalization = self.config.data.transform.normalization;
            self.config.data.transform =
                TransformConfig::scaled(size as u32).with_normalization(normalization);
            self.image_size = size;
        }
        self
    }

    /// Short trunk name: `resnet101`, `resnet10-w16`, `efficientnet-lite0`.
    pub fn trunk_name(&self) -> String {
        let trunk = &self.config.model.trunk;
        let base = match &trunk.kind {
            TrunkKind::ResNet(layout) => {
                let per_block = match layout.block {
                    BlockKind::Basic => 2,
                    _ => 3,
                };
                format!(
                    "resnet{}",
                    2 + per_block * layout.layers.iter().sum::<usize>()
                )
            }
            TrunkKind::EfficientNetLite(n) => format!("efficientnet-lite{n}"),
        };
        if trunk.base_width == 64 {
            base
        } else {
            format!("{base}-w{}", trunk.base_width)
        }
    }

    /// The `ScheduleStep` the losses run at: past the pseudo-label epoch, so every term is active.
    pub fn schedule_step(&self) -> ScheduleStep {
        ScheduleStep {
            epoch: self.config.model.schedule.pseudo_label_epoch.max(5),
            batch_index: 1,
            batches_per_epoch: 100,
        }
    }

    pub(crate) fn uses_embedded_data(&self) -> bool {
        matches!(self.config.data.source, DataSource::Embedded { .. })
    }
}

/// Arguments of `hst bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Configurations to measure, comma-separated: paper (ResNet-101, 448, batch 32, 80 classes),
    /// vg (the same, 200 classes), voc-small (EfficientNet-Lite0, 224, batch 32, 20 classes),
    /// default (the embedded main job).
    #[arg(
        long = "config",
        value_enum,
        value_delimiter = ',',
        default_value = "default,voc-small"
    )]
    pub configs: Vec<BenchPreset>,
    /// Batch size (overrides the configuration's).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Input side in pixels (overrides the configuration's).
    #[arg(long, value_name = "PIXELS")]
    pub image_size: Option<usize>,
    /// Number of classes (overrides the configuration's: 80, 200, 20, 20).
    #[arg(long)]
    pub classes: Option<usize>,
    /// Timed steps (default per configuration: paper/vg/voc-small 5, default 10).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Untimed warm-up steps (default per configuration: 2, or 3 for default). With `--warmup 0` the
    /// first (autotuning) step is timed.
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Frozen trunk stages (overrides the configuration's; the paper freezes 3).
    #[arg(long)]
    pub frozen_stages: Option<usize>,
    /// Timed data-preparation batches.
    #[arg(long, default_value_t = 3)]
    pub data_batches: usize,
    /// Skip the data-preparation measurement.
    #[arg(long)]
    pub no_data: bool,
    /// Skip the inference measurement.
    #[arg(long)]
    pub no_infer: bool,
    /// Append one JSON object per configuration (JSON Lines) to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Append one Markdown table row per configuration to this file (a header first if the file is new).
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Instead of benchmarking, check that `--backend` agrees with `--check-against` on the same weights and
    /// input (logits, every loss term, every gradient, inference logits), at batch `--check-batch`.
    #[arg(long)]
    pub check: bool,
    /// Reference backend of `--check`.
    #[arg(long, value_enum, default_value = "flex")]
    pub check_against: BackendName,
    /// Batch size of `--check`.
    #[arg(long, default_value_t = 2)]
    pub check_batch: usize,
    /// Largest accepted relative difference in `--check`: max|a − b| / max|b| per output, ‖a − b‖ / ‖b‖ per
    /// gradient group.
    #[arg(long, default_value_t = 1e-3)]
    pub tolerance: f64,
    /// Largest accepted ‖a − b‖ / ‖b‖ of a gradient group in `--check` (ReLU kinks make gradients far more
    /// sensitive to rounding than outputs; see `compare_outputs`).
    #[arg(long, default_value_t = 5e-2)]
    pub grad_tolerance: f64,
    /// GPU name for the report when `nvidia-smi` cannot tell it.
    #[arg(long)]
    pub gpu_name: Option<String>,
    /// Seed of the weights and inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Instead of the step benchmark, time each module's forward and backward (trunk frozen and trainable
    /// parts, SARL's parts, IST head, losses, optimizer) and print one table per configuration.
    #[arg(long, conflicts_with = "check")]
    pub profile: bool,
}

impl BenchArgs {
    /// The benchmark specs the arguments select, overrides applied.
    ///
    /// # Errors
    /// A zero batch, size, class count or step count, or more than 4 frozen stages.
    pub fn specs(&self) -> Result<Vec<BenchSpec>> {
        for (what, v) in [("--classes", self.classes), ("--steps", self.steps)] {
            if v == Some(0) {
                bail!("{what} must be at least 1");
            }
        }
        if self.classes == Some(1) {
            bail!("--classes must be at least 2 (IST works on class pairs)");
        }
        if self.frozen_stages.is_some_and(|k| k > 4) {
            bail!("--frozen-stages must be in 0..=4");
        }
        if self.check_batch < 2 {
            bail!(
                "--check-batch must be at least 2 (BatchNorm and the instance loss need 2 images)"
            );
        }
        let mut specs = Vec::new();
        for preset in &self.configs {
            let mut spec = sized_spec(*preset, self.image_size, self.batch)?;
            if let Some(c) = self.classes {
                spec.classes = c;
            }
            if let Some(s) = self.steps {
                spec.steps = s;
            }
            if let Some(w) = self.warmup {
                spec.warmup = w;
            }
            if let Some(k) = self.frozen_stages {
                spec.config.model.trunk.frozen_stages = k;
            }
            spec.data_batches = self.data_batches.max(1);
            spec.data = !self.no_data;
            spec.infer = !self.no_infer;
            spec.seed = self.seed;
            specs.push(spec);
        }
        Ok(specs)
    }
}

/// `preset`'s benchmark configuration with the `--image-size` and `--batch` overrides, checked.
///
/// # Errors
/// A batch of 0 or an image side under 32 pixels.
pub(crate) fn sized_spec(
    preset: BenchPreset,
    image_size: Option<usize>,
    batch: Option<usize>,
) -> Result<BenchSpec> {
    if batch == Some(0) {
        bail!("--batch must be at least 1");
    }
    let mut spec = preset.spec();
    if let Some(size) = image_size {
        if size < 32 {
            bail!("--image-size must be at least 32 (the trunk downsamples 32×), got {size}");
        }
        spec = spec.with_image_size(size);
    }
    if let Some(b) = batch {
        spec.batch = b;
    }
    Ok(spec)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_issue_shapes() {
        let paper = BenchPreset::Paper.spec();
        assert_eq!(
            (paper.image_size, paper.batch, paper.classes),
            (448, 32, 80)
        );
        assert_eq!(paper.trunk_name(), "resnet101");
        assert_eq!(paper.config.model.trunk.frozen_stages, 3);
        assert_eq!(BenchPreset::Vg.spec().classes, 200);
        let voc = BenchPreset::VocSmall.spec();
        assert_eq!((voc.image_size, voc.batch, voc.classes), (224, 32, 20));
        assert_eq!(voc.trunk_name(), "efficientnet-lite0");
        assert!(voc.config.pretrained.is_none());
        assert_eq!(BenchPreset::Default.spec().trunk_name(), "resnet10-w16");
    }

    #[test]
    fn overrides_apply_and_zero_is_rejected() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: BenchArgs,
        }
        let cli = Cli::parse_from([
            "x",
            "--config",
            "paper,vg",
            "--batch",
            "4",
            "--image-size",
            "224",
            "--steps",
            "1",
            "--warmup",
            "0",
        ]);
        let specs = cli.args.specs().unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(
            (specs[1].batch, specs[1].image_size, specs[1].classes),
            (4, 224, 200)
        );
        assert_eq!(specs[0].config.data.transform.image_size, 224);
        assert_eq!((specs[0].steps, specs[0].warmup), (1, 0));
        let cli = Cli::parse_from(["x", "--batch", "0"]);
        assert!(cli.args.specs().is_err());
    }
}
