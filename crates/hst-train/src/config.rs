//! The run configuration: one serde document with the reference recipe as the default and named presets.
//!
//! A run's configuration is saved as `config.json` in its folder. Any value can be overridden from the
//! command line with a dotted path (`--set optimizer.lr=1e-4`, `--set model.ablation.cst=false`).

use std::path::{Path, PathBuf};

use hst_backbone::sarl::SarlConfig;
use hst_backbone::trunk::{BlockKind, ResNetLayout, TrunkConfig, TrunkKind};
use hst_data::{Normalization, TransformConfig};
use hst_transfer::{HstConfig, KMeansConfig, ScheduleConfig};
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// Where the images and labels come from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSource {
    /// The embedded mosaic dataset (20 classes, 4,000 train / 2,000 test images, no files needed).
    Embedded {
        /// Training images (≤ 4,000 keeps the shipped dataset's first images). Default: 4000.
        train_images: usize,
        /// Test images. Default: 2000.
        test_images: usize,
    },
    /// A PASCAL VOC 2007/2012 folder (`JPEGImages/`, `ImageSets/Main/`, optional `Annotations/`).
    Voc {
        /// The VOC folder.
        root: PathBuf,
        /// Training split: `train`, `val`, `trainval` or `test`.
        train_split: String,
        /// Test split.
        test_split: String,
    },
    /// COCO 2014/2017 instances JSON files and image folders.
    Coco {
        /// `instances_train*.json`.
        train_annotations: PathBuf,
        /// Training image folder.
        train_images: PathBuf,
        /// `instances_val*.json`.
        test_annotations: PathBuf,
        /// Test image folder.
        test_images: PathBuf,
    },
    /// VG-200 in the reference's format.
    Vg {
        /// `train_list_500.txt`.
        train_list: PathBuf,
        /// `test_list_500.txt`.
        test_list: PathBuf,
        /// `vg_category_200_labels_index.json`.
        labels: PathBuf,
        /// The 200 class names, one per line.
        class_names: PathBuf,
        /// `VG_100K/`.
        images: PathBuf,
    },
    /// Generic manifests (CSV or JSONL: image path + labels, optional partial labels).
    Manifest {
        /// Training manifest.
        train: PathBuf,
        /// Test manifest.
        test: PathBuf,
    },
}

/// Where the class-name word vectors come from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WordVectorSource {
    /// The dataset's own vectors: the shipped GloVe vectors for the embedded dataset; otherwise
    /// the GloVe file under `../shared/data/glove` is not assumed, so another source must be named.
    Embedded,
    /// A GloVe text file (optionally `.gz`); class names are split into words and averaged.
    Glove {
        /// The file.
        path: PathBuf,
    },
    /// A `[classes, dim]` `.npy` matrix (the reference's `vectors.npy` files).
    Npy {
        /// The file.
        path: PathBuf,
    },
}

/// Data, labels and transforms of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataConfig {
    /// The dataset.
    pub source: DataSource,
    /// Proportion p of known labels in the training set (the reference's `--prob`). Default: 0.3.
    pub proportion: f64,
    /// Seed of the partial-label protocol (numpy's legacy MT19937). Default: 0, as the reference.
    pub protocol_seed: u32,
    /// A partial-label CSV (the reference's released files) used instead of the protocol.
    pub partial_labels: Option<PathBuf>,
    /// Class-name word vectors.
    pub word_vectors: WordVectorSource,
    /// Image transforms (sizes, crop scales, normalisation); the seed is the run's.
    pub transform: TransformConfig,
    /// Replace the NaN rows of the GGNN adjacency (classes without a known positive) by 0. The reference does
    /// not (its `nan_to_num` result is discarded), so NaN would poison the whole forward pass. Default: false.
    pub guard_adjacency_nan: bool,
    /// Leave unreadable images out of their batch (with a warning and a count) instead of stopping.
    /// Default: false.
    pub skip_unreadable_images: bool,
}

/// Adam with coupled L2 weight decay and a step learning-rate schedule (the reference's optimiser).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OptimizerConfig {
    /// Learning rate. Default: 1e-5.
    pub lr: f64,
    /// Coupled L2 weight decay (added to the gradient, as `torch.optim.Adam(weight_decay=…)`). Default: 5e-4.
    pub weight_decay: f64,
    /// Adam β1. Default: 0.9.
    pub beta1: f32,
    /// Adam β2. Default: 0.999.
    pub beta2: f32,
    /// Adam ε (PyTorch's default). Default: 1e-8.
    pub epsilon: f32,
    /// Multiply the learning rate by `lr_gamma` every `lr_step_epochs` epochs (StepLR). Default: 10.
    pub lr_step_epochs: usize,
    /// StepLR factor. Default: 0.1.
    pub lr_gamma: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            lr: 1e-5,
            weight_decay: 5e-4,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            lr_step_epochs: 10,
            lr_gamma: 0.1,
        }
    }
}

impl OptimizerConfig {
    /// The learning rate of `epoch` (StepLR).
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let steps = epoch.checked_div(self.lr_step_epochs).unwrap_or(0);
        self.lr * self.lr_gamma.powi(steps as i32)
    }
}

/// Everything that describes a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The preset this configuration started from (informational).
    pub preset: String,
    /// The model and its objective. `sarl.classes`, `sarl.embed_dim` and `sarl.in_channels` are filled in
    /// from the data and the trunk when the run starts.
    pub model: HstConfig,
    /// Data, labels, transforms.
    pub data: DataConfig,
    /// Optimiser and learning-rate schedule.
    pub optimizer: OptimizerConfig,
    /// Training epochs. Default: 20.
    pub epochs: usize,
    /// Training batch size (the last, shorter batch is dropped, as the reference). Default: 32.
    pub batch_size: usize,
    /// Evaluation batch size. Default: 32.
    pub eval_batch_size: usize,
    /// Drop the last, shorter test batch as the reference does (its mAP then misses up to 31 images).
    /// Default: false — every test image is evaluated.
    pub drop_last_test_batch: bool,
    /// Seed of everything random in the run (initialisation, shuffling, augmentation, sampling, K-means).
    pub seed: u64,
    /// Trunk weights to import (torchvision `.pth`/`.safetensors`, EfficientNet-Lite `.safetensors`).
    pub pretrained: Option<PathBuf>,
    /// Read the loss terms and pseudo-label counts back from the device every this many training steps
    /// (and at the end of every epoch); steps in between read nothing, so a GPU never waits for the host.
    /// The non-finite-loss stop is checked at these reads. Default: 20.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
}

fn default_log_every() -> usize {
    20
}

/// Names of the presets, for help texts.
pub const PRESETS: [&str; 6] = ["reference", "coco", "voc", "vg", "voc-lite0", "embedded"];

impl TrainConfig {
    /// The reference recipe (scripts/HST.sh): ResNet-101 at 448, conv1…layer3 frozen, SARL D = 1024,
    /// Adam 1e-5 / wd 5e-4, StepLR ×0.1 every 10 epochs, 20 epochs, batch 32, pseudo labels from epoch 5,
    /// on COCO 2014 paths under `data/coco`.
    pub fn reference() -> Self {
        Self::coco()
    }

    fn paper(source: DataSource, preset: &str) -> Self {
        let trunk = TrunkConfig::resnet(101).with_frozen_stages(3);
        Self {
            preset: preset.into(),
            model: HstConfig::new(trunk, SarlConfig::new(0, 2048, 300)),
            data: DataConfig {
                source,
                proportion: 0.3,
                protocol_seed: 0,
                partial_labels: None,
                word_vectors: WordVectorSource::Embedded,
                transform: TransformConfig::new(),
                guard_adjacency_nan: false,
                skip_unreadable_images: false,
            },
            optimizer: OptimizerConfig::default(),
            epochs: 20,
            batch_size: 32,
            eval_batch_size: 32,
            drop_last_test_batch: false,
            seed: 0,
            pretrained: None,
            log_every: default_log_every(),
        }
    }

    /// MS-COCO 2014 with the reference recipe (paths under `data/coco`; GloVe vectors in `data/coco/vectors.npy`).
    pub fn coco() -> Self {
        let mut c = Self::paper(
            DataSource::Coco {
                train_annotations: "data/coco/annotations/instances_train2014.json".into(),
                train_images: "data/coco/train2014".into(),
                test_annotations: "data/coco/annotations/instances_val2014.json".into(),
                test_images: "data/coco/val2014".into(),
            },
            "coco",
        );
        c.data.word_vectors = WordVectorSource::Npy {
            path: "data/coco/vectors.npy".into(),
        };
        c
    }

    /// PASCAL VOC 2007 (trainval → test) with the reference recipe.
    pub fn voc() -> Self {
        let mut c = Self::paper(
            DataSource::Voc {
                root: "data/voc_devkit/VOC2007".into(),
                train_split: "trainval".into(),
                test_split: "test".into(),
            },
            "voc",
        );
        c.data.word_vectors = WordVectorSource::Npy {
            path: "data/voc_devkit/VOC2007/voc07_vector.npy".into(),
        };
        c
    }

    /// Visual Genome VG-200 with the reference recipe.
    pub fn vg() -> Self {
        let mut c = Self::paper(
            DataSource::Vg {
                train_list: "data/vg/train_list_500.txt".into(),
                test_list: "data/vg/test_list_500.txt".into(),
                labels: "data/vg/vg_category_200_labels_index.json".into(),
                class_names: "data/vg/vg_category_200.txt".into(),
                images: "data/vg/VG_100K".into(),
            },
            "vg",
        );
        c.data.word_vectors = WordVectorSource::Npy {
            path: "data/vg/vg_200_vector.npy".into(),
        };
        c
    }

    /// VOC with EfficientNet-Lite0 (ImageNet weights) at 224: the real-data recipe that runs on a CPU.
    /// Paths point at `../shared` (VOC2007 trainval: train → val; GloVe 50-d).
    pub fn voc_lite0() -> Self {
        let mut c = Self::paper(
            DataSource::Voc {
                root: "../shared/data/voc2007-trainval".into(),
                train_split: "train".into(),
                test_split: "val".into(),
            },
            "voc-lite0",
        );
        c.model = HstConfig::new(
            TrunkConfig::efficientnet_lite0().with_frozen_stages(3),
            SarlConfig::new(0, 1280, 50).with_pool(false),
        );
        c.data.word_vectors = WordVectorSource::Glove {
            path: "../shared/data/glove/glove.6B.50d.subset.txt.gz".into(),
        };
        c.data.transform =
            TransformConfig::scaled(224).with_normalization(Normalization::EfficientNetLite);
        c.pretrained = Some("../shared/weights/efficientnet-lite0-imagenet.safetensors".into());
        c.optimizer.lr = 1e-4;
        c
    }

    /// The main job: HST on the embedded dataset at 30 % known labels, sized to train in about ten minutes on
    /// a 2-core CPU. A small ResNet-10 (one block per stage, base width 16, trained from scratch), SARL with
    /// D = 256, a scaled schedule (8 epochs, pseudo labels and prototypes from epoch 3, then every 2 epochs;
    /// StepLR at 6), Adam at 1e-3 since nothing is pretrained.
    pub fn embedded() -> Self {
        let mut c = Self::paper(
            DataSource::Embedded {
                train_images: 4000,
                test_images: 2000,
            },
            "embedded",
        );
        // ResNet-10 layout (one BasicBlock per stage), base width 16: at 64 px the layer4 map is 2×2, one cell
        // per mosaic tile.
        let trunk = TrunkConfig::resnet_layout(ResNetLayout::new(BlockKind::Basic, [1, 1, 1, 1]))
            .with_base_width(16)
            .with_frozen_stages(0);
        let sarl = SarlConfig::new(0, 128, 50)
            .with_pool(false)
            .with_feature_dim(256)
            .with_attention_dim(128)
            .with_output_dim(256);
        let mut model = HstConfig::new(trunk, sarl);
        model.ist = model.ist.with_hidden_dim(128).with_pair_dim(256);
        model.cst.kmeans.k = 10;
        model.cst.prototypes = 10;
        model.schedule = ScheduleConfig::new()
            .with_pseudo_label_epoch(3)
            .with_prototype_interval(2);
        c.model = model;
        c.data.transform = TransformConfig::embedded();
        c.optimizer.lr = 1e-3;
        c.optimizer.weight_decay = 1e-4;
        c.optimizer.lr_step_epochs = 6;
        c.epochs = 8;
        c
    }

    /// A preset by name (see [`PRESETS`]).
    pub fn preset(name: &str) -> Result<Self, TrainError> {
        match name {
            "reference" => Ok(Self::reference()),
            "coco" => Ok(Self::coco()),
            "voc" => Ok(Self::voc()),
            "vg" => Ok(Self::vg()),
            "voc-lite0" => Ok(Self::voc_lite0()),
            "embedded" => Ok(Self::embedded()),
            other => Err(TrainError::Config(format!(
                "unknown preset `{other}` (known: {})",
                PRESETS.join(", ")
            ))),
        }
    }

    /// The plain partial-BCE baseline of the same configuration (no IST, CST or DTL).
    pub fn baseline(mut self) -> Self {
        self.model.ablation.partial_bce_only = true;
        self
    }

    /// Read a configuration saved as JSON (e.g. a run's `config.json`).
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text)
            .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))
    }

    /// The configuration as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("configs serialise")
    }

    /// Apply `key=value` overrides: `key` is a dotted path into the JSON form (`optimizer.lr`,
    /// `model.ablation.cst`), `value` is parsed as JSON when it can be (numbers, booleans, null, arrays)
    /// and taken as a string otherwise. An unknown key is an error naming it.
    pub fn with_overrides<S: AsRef<str>>(self, overrides: &[S]) -> Result<Self, TrainError> {
        let mut json = serde_json::to_value(&self).expect("configs serialise");
        for item in overrides {
            let item = item.as_ref();
            let (key, value) = item.split_once('=').ok_or_else(|| {
                TrainError::Config(format!("override `{item}` is not of the form key=value"))
            })?;
            let value: serde_json::Value = serde_json::from_str(value)
                .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
            let mut node = &mut json;
            let parts: Vec<&str> = key.split('.').collect();
            for (i, part) in parts.iter().enumerate() {
                let known = node
                    .as_object()
                    .map(|o| o.keys().cloned().collect::<Vec<_>>());
                let obj = node.as_object_mut().ok_or_else(|| {
                    TrainError::Config(format!(
                        "override `{key}`: `{}` is not a section",
                        parts[..i].join(".")
                    ))
                })?;
                if !obj.contains_key(*part) {
                    return Err(TrainError::Config(format!(
                        "override `{key}`: unknown key `{part}` (known here: {})",
                        known.unwrap_or_default().join(", ")
                    )));
                }
                node = obj.get_mut(*part).expect("checked");
            }
            *node = value;
            // Check each override on its own, so that a bad value is reported with its key.
            serde_json::from_value::<TrainConfig>(json.clone())
                .map_err(|e| TrainError::Config(format!("override `{item}`: {e}")))?;
        }
        let config: TrainConfig = serde_json::from_value(json).expect("checked above");
        config.validate()?;
        Ok(config)
    }

    /// Check every value that the types alone do not constrain, before any work or any file is written;
    /// an error names the key (its dotted `--set` path) and the allowed range.
    pub fn validate(&self) -> Result<(), TrainError> {
        let mut check = Checks::default();
        check.at_least("epochs", self.epochs, 1);
        check.at_least("batch_size", self.batch_size, 1);
        check.at_least("eval_batch_size", self.eval_batch_size, 1);
        check.at_least("log_every", self.log_every, 1);

        let data = &self.data;
        check.within("data.proportion", data.proportion, 0.0, 1.0);
        let t = &data.transform;
        check.range(
            "data.transform.image_size",
            t.image_size as usize,
            MIN_IMAGE_SIZE,
            MAX_IMAGE_SIZE,
        );
        check.range(
            "data.transform.scale_size",
            t.scale_size as usize,
            1,
            MAX_IMAGE_SIZE,
        );
        if t.crop_sizes.is_empty() {
            check.fail("data.transform.crop_sizes must list at least one crop size".into());
        }
        for &c in &t.crop_sizes {
            if c == 0 || c > t.scale_size {
                check.fail(format!(
                    "data.transform.crop_sizes: every crop must be in 1..={} (data.transform.scale_size), got {c}",
                    t.scale_size
                ));
            }
        }
        check.within(
            "data.transform.flip_probability",
            t.flip_probability,
            0.0,
            1.0,
        );
        let batch_bytes = [self.batch_size, self.eval_batch_size]
            .into_iter()
            .max()
            .unwrap_or(0) as u128
            * 3
            * 4
            * (t.image_size as u128).pow(2);
        if batch_bytes > MAX_BATCH_BYTES {
            check.fail(format!(
                "a batch of {} images of {}² pixels is {:.1} GiB before the network runs (at most {} GiB): \
                 lower data.transform.image_size or the batch sizes",
                self.batch_size.max(self.eval_batch_size),
                t.image_size,
                batch_bytes as f64 / (1u64 << 30) as f64,
                MAX_BATCH_BYTES >> 30
            ));
        }

        let m = &self.model;
        let trunk = &m.trunk;
        check.range("model.trunk.frozen_stages", trunk.frozen_stages, 0, 4);
        check.at_least("model.trunk.base_width", trunk.base_width, 1);
        if trunk.num_classes == Some(0) {
            check.fail("model.trunk.num_classes must be null or at least 1".into());
        }
        match &trunk.kind {
            TrunkKind::ResNet(layout) => {
                check.at_least("model.trunk.kind.ResNet.groups", layout.groups, 1);
                check.at_least(
                    "model.trunk.kind.ResNet.width_per_group",
                    layout.width_per_group,
                    1,
                );
                if layout.layers.contains(&0) {
                    check.fail(format!(
                        "model.trunk.kind.ResNet.layers: every stage needs at least 1 block, got {:?}",
                        layout.layers
                    ));
                }
            }
            TrunkKind::EfficientNetLite(n) => {
                check.range("model.trunk.kind.EfficientNetLite", *n, 0, 4);
            }
        }
        let sarl = &m.sarl;
        check.at_least("model.sarl.feature_dim", sarl.feature_dim, 1);
        check.at_least("model.sarl.attention_dim", sarl.attention_dim, 1);
        check.at_least("model.sarl.output_dim", sarl.output_dim, 1);
        if sarl.pool && (t.image_size as usize) < 2 * MIN_IMAGE_SIZE {
            check.fail(format!(
                "data.transform.image_size must be at least {} with model.sarl.pool (the pooled map needs 2×2 cells), got {}",
                2 * MIN_IMAGE_SIZE,
                t.image_size
            ));
        }
        check.at_least("model.ist.hidden_dim", m.ist.hidden_dim, 1);
        check.at_least("model.ist.pair_dim", m.ist.pair_dim, 1);
        check.at_least("model.ist.pair_chunk", m.ist.pair_chunk, 1);
        let asl = &m.ist.loss;
        check.non_negative("model.ist.loss.gamma_pos", asl.gamma_pos);
        check.non_negative("model.ist.loss.gamma_neg", asl.gamma_neg);
        check.within("model.ist.loss.clip", asl.clip, 0.0, 1.0);
        check.positive("model.ist.loss.eps", asl.eps);
        let cst = &m.cst;
        check.at_least("model.cst.prototypes", cst.prototypes, 1);
        if cst.kmeans.k != cst.prototypes {
            check.fail(format!(
                "model.cst.kmeans.k ({}) must equal model.cst.prototypes ({}): K-means finds the prototypes, \
                 set model.cst.prototypes",
                cst.kmeans.k, cst.prototypes
            ));
        }
        if cst.kmeans.seed != KMeansConfig::new().seed {
            check.fail(
                "model.cst.kmeans.seed is derived from `seed` and the epoch in training; set `seed` instead"
                    .into(),
            );
        }
        check.at_least("model.cst.kmeans.max_iter", cst.kmeans.max_iter, 1);
        check.non_negative("model.cst.kmeans.tol", cst.kmeans.tol);
        check.positive("model.cst.eps", cst.eps);
        check.positive("model.cst.instance.eps", cst.instance.eps);
        check.at_least(
            "model.cst.instance.random_factor",
            cst.instance.random_factor,
            1,
        );
        check.within("model.dtl.ist", m.dtl.ist, 0.0, 1.0);
        check.within("model.dtl.cst", m.dtl.cst, 0.0, 1.0);
        let w = &m.weights;
        for (key, v) in [
            ("model.weights.ist_bce", w.ist_bce),
            ("model.weights.cst_bce", w.cst_bce),
            ("model.weights.cooccurrence", w.cooccurrence),
            ("model.weights.dtl_ist", w.dtl_ist),
            ("model.weights.dtl_cst", w.dtl_cst),
            ("model.weights.instance", w.instance),
            ("model.weights.prototype", w.prototype),
        ] {
            check.non_negative(key, v);
        }
        check.at_least(
            "model.schedule.prototype_interval",
            m.schedule.prototype_interval,
            1,
        );

        let o = &self.optimizer;
        check.positive("optimizer.lr", o.lr);
        check.non_negative("optimizer.weight_decay", o.weight_decay);
        check.below_one("optimizer.beta1", o.beta1 as f64);
        check.below_one("optimizer.beta2", o.beta2 as f64);
        check.positive("optimizer.epsilon", o.epsilon as f64);
        check.at_least("optimizer.lr_step_epochs", o.lr_step_epochs, 1);
        check.positive("optimizer.lr_gamma", o.lr_gamma);
        check.finish()
    }
}

/// The smallest image a trunk accepts: both trunks downsample 32×, so the last stage has one cell.
pub const MIN_IMAGE_SIZE: usize = 32;
/// The largest image side (the reference trains at 448).
pub const MAX_IMAGE_SIZE: usize = 4096;
/// The largest batch of input pixels (f32) before the network runs: 4 GiB.
const MAX_BATCH_BYTES: u128 = 4 << 30;

/// The failures of [`TrainConfig::validate`], all of them reported at once.
#[derive(Default)]
struct Checks {
    failures: Vec<String>,
}

impl Checks {
    fn fail(&mut self, message: String) {
        self.failures.push(message);
    }

    fn at_least(&mut self, key: &str, v: usize, min: usize) {
        if v < min {
            self.fail(format!("{key} must be at least {min}, got {v}"));
        }
    }

    fn range(&mut self, key: &str, v: usize, min: usize, max: usize) {
        if !(min..=max).contains(&v) {
            self.fail(format!("{key} must be in {min}..={max}, got {v}"));
        }
    }

    fn within(&mut self, key: &str, v: f64, min: f64, max: f64) {
        if !(v.is_finite() && (min..=max).contains(&v)) {
            self.fail(format!("{key} must be in [{min}, {max}], got {v}"));
        }
    }

    fn below_one(&mut self, key: &str, v: f64) {
        if !(v.is_finite() && (0.0..1.0).contains(&v)) {
            self.fail(format!("{key} must be in [0, 1), got {v}"));
        }
    }

    fn positive(&mut self, key: &str, v: f64) {
        if !(v.is_finite() && v > 0.0) {
            self.fail(format!("{key} must be a positive number, got {v}"));
        }
    }

    fn non_negative(&mut self, key: &str, v: f64) {
        if !(v.is_finite() && v >= 0.0) {
            self.fail(format!("{key} must be a finite number ≥ 0, got {v}"));
        }
    }

    fn finish(self) -> Result<(), TrainError> {
        if self.failures.is_empty() {
            Ok(())
        } else {
            Err(TrainError::Config(self.failures.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_round_trip_through_json() {
        for name in PRESETS {
            let c = TrainConfig::preset(name).unwrap();
            let back: TrainConfig = serde_json::from_str(&c.to_json()).unwrap();
            assert_eq!(back.to_json(), c.to_json(), "{name}");
        }
        assert!(TrainConfig::preset("imagenet").is_err());
    }

    #[test]
    fn reference_recipe_defaults() {
        let c = TrainConfig::reference();
        assert_eq!(c.epochs, 20);
        assert_eq!(c.batch_size, 32);
        assert_eq!(c.optimizer.lr, 1e-5);
        assert_eq!(c.optimizer.weight_decay, 5e-4);
        assert_eq!(c.model.schedule.pseudo_label_epoch, 5);
        assert_eq!(c.model.cst.prototypes, 10);
        assert!((c.optimizer.lr_at(9) - 1e-5).abs() < 1e-20);
        assert!((c.optimizer.lr_at(10) - 1e-6).abs() < 1e-18);
        assert!((c.optimizer.lr_at(19) - 1e-6).abs() < 1e-18);
    }

    #[test]
    fn overrides_set_nested_values_and_reject_unknown_keys() {
        let c = TrainConfig::embedded()
            .with_overrides(&["optimizer.lr=0.5", "model.ablation.cst=false", "epochs=3"])
            .unwrap();
        assert_eq!(c.optimizer.lr, 0.5);
        assert!(!c.model.ablation.cst);
        assert_eq!(c.epochs, 3);
        let err = TrainConfig::embedded()
            .with_overrides(&["optimizer.lrr=1"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("lrr") && err.contains("lr"), "{err}");
        let err = TrainConfig::embedded()
            .with_overrides(&["epochs"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("key=value"), "{err}");
        let err = TrainConfig::embedded()
            .with_overrides(&["epochs=many"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("override `epochs=many`"), "{err}");
        let err = TrainConfig::embedded()
            .with_overrides(&["epochs=0"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("epochs must be at least 1"), "{err}");
    }

    #[test]
    fn every_preset_is_valid() {
        for name in PRESETS {
            TrainConfig::preset(name)
                .unwrap()
                .validate()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    /// Each value that once reached an `assert!`, an allocation abort or silent acceptance: refused, with
    /// its key named.
    #[test]
    fn out_of_range_values_are_refused_naming_their_key() {
        for (set, key) in [
            ("data.transform.image_size=0", "data.transform.image_size"),
            ("data.transform.image_size=16", "data.transform.image_size"),
            (
                "data.transform.image_size=60000",
                "data.transform.image_size",
            ),
            ("data.transform.scale_size=0", "data.transform.scale_size"),
            ("data.transform.crop_sizes=[]", "data.transform.crop_sizes"),
            (
                "data.transform.crop_sizes=[1000]",
                "data.transform.crop_sizes",
            ),
            ("data.transform.crop_sizes=[0]", "data.transform.crop_sizes"),
            (
                "data.transform.flip_probability=5",
                "data.transform.flip_probability",
            ),
            ("data.proportion=-0.1", "data.proportion"),
            ("model.trunk.frozen_stages=5", "model.trunk.frozen_stages"),
            ("model.trunk.frozen_stages=99", "model.trunk.frozen_stages"),
            ("model.trunk.base_width=0", "model.trunk.base_width"),
            (
                "model.trunk.kind.ResNet.groups=0",
                "model.trunk.kind.ResNet.groups",
            ),
            (
                "model.trunk.kind.ResNet.width_per_group=0",
                "model.trunk.kind.ResNet.width_per_group",
            ),
            (
                "model.trunk.kind.ResNet.layers=[0,0,0,0]",
                "model.trunk.kind.ResNet.layers",
            ),
            (
                "model.trunk.kind={\"EfficientNetLite\":7}",
                "model.trunk.kind.EfficientNetLite",
            ),
            ("model.trunk.num_classes=0", "model.trunk.num_classes"),
            ("model.sarl.feature_dim=0", "model.sarl.feature_dim"),
            ("model.sarl.attention_dim=0", "model.sarl.attention_dim"),
            ("model.sarl.output_dim=0", "model.sarl.output_dim"),
            ("model.ist.hidden_dim=0", "model.ist.hidden_dim"),
            ("model.ist.pair_dim=0", "model.ist.pair_dim"),
            ("model.ist.pair_chunk=0", "model.ist.pair_chunk"),
            ("model.ist.loss.clip=2", "model.ist.loss.clip"),
            ("model.ist.loss.gamma_neg=-1", "model.ist.loss.gamma_neg"),
            ("model.cst.prototypes=0", "model.cst.prototypes"),
            ("model.cst.kmeans.k=3", "model.cst.kmeans.k"),
            ("model.cst.kmeans.seed=7", "model.cst.kmeans.seed"),
            ("model.cst.kmeans.max_iter=0", "model.cst.kmeans.max_iter"),
            ("model.cst.eps=0", "model.cst.eps"),
            (
                "model.cst.instance.random_factor=0",
                "model.cst.instance.random_factor",
            ),
            ("model.dtl.ist=1.5", "model.dtl.ist"),
            ("model.dtl.cst=-1", "model.dtl.cst"),
            ("model.weights.instance=-1", "model.weights.instance"),
            (
                "model.schedule.prototype_interval=0",
                "model.schedule.prototype_interval",
            ),
            ("optimizer.beta1=2", "optimizer.beta1"),
            ("optimizer.beta2=1", "optimizer.beta2"),
            ("optimizer.weight_decay=-1e6", "optimizer.weight_decay"),
            ("optimizer.epsilon=0", "optimizer.epsilon"),
            ("optimizer.lr=0", "optimizer.lr"),
            ("optimizer.lr_gamma=0", "optimizer.lr_gamma"),
            ("optimizer.lr_step_epochs=0", "optimizer.lr_step_epochs"),
            ("log_every=0", "log_every"),
            ("batch_size=0", "batch_size"),
        ] {
            let err = TrainConfig::embedded()
                .with_overrides(&[set])
                .expect_err(set)
                .to_string();
            assert!(err.contains(key), "{set}: {err}");
        }
        // A batch too large to hold in memory is refused before it is allocated.
        let err = TrainConfig::embedded()
            .with_overrides(&[
                "data.transform.image_size=4096",
                "data.transform.scale_size=4096",
                "data.transform.crop_sizes=[4096]",
            ])
            .unwrap_err()
            .to_string();
        assert!(err.contains("GiB"), "{err}");
        // The pooled map needs 2×2 cells.
        let err = TrainConfig::embedded()
            .with_overrides(&["model.sarl.pool=true", "data.transform.image_size=48"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.sarl.pool"), "{err}");
    }
}
