//! Helpers shared by the training-loop tests: the tiny configuration, run folders, weights of a checkpoint.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use hst_backbone::sarl::SarlConfig;
use hst_backbone::trunk::{BlockKind, ResNetLayout, TrunkConfig};
use hst_data::TransformConfig;
use hst_train::config::DataSource;
use hst_train::trainer::{load_run_model, Phase};
use hst_train::{TrainConfig, TrainObserver};
use hst_transfer::{HstConfig, ScheduleConfig};

pub type B = Autodiff<Flex>;

/// The backend's RNG (model initialisation) is global: tests that compare runs must not interleave.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn tiny() -> TrainConfig {
    let mut c = TrainConfig::embedded();
    let trunk = TrunkConfig::resnet_layout(ResNetLayout::new(BlockKind::Basic, [1, 1, 1, 1]))
        .with_base_width(4)
        .with_frozen_stages(1);
    let sarl = SarlConfig::new(0, 32, 50)
        .with_pool(false)
        .with_feature_dim(16)
        .with_attention_dim(8)
        .with_output_dim(16);
    let mut model = HstConfig::new(trunk, sarl);
    model.ist = model.ist.with_hidden_dim(8).with_pair_dim(16);
    model.cst.prototypes = 2;
    model.cst.kmeans.k = 2;
    model.schedule = ScheduleConfig::new()
        .with_pseudo_label_epoch(1)
        .with_prototype_interval(1);
    c.model = model;
    c.data.source = DataSource::Embedded {
        train_images: 48,
        test_images: 20,
    };
    c.data.transform = TransformConfig::scaled(32);
    // 48 images at 30% known leave some class without a known positive: guard its NaN adjacency row.
    c.data.guard_adjacency_nan = true;
    c.batch_size = 16;
    c.eval_batch_size = 8;
    c.epochs = 3;
    c.optimizer.lr = 1e-2;
    c
}

pub fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hst-train-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Every float parameter of the last checkpoint's model, in module order (parameter ids are random, so the
/// record bytes of two runs differ even when their weights are equal).
pub fn weights(dir: &Path) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl ModuleVisitor<Flex> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Flex, D>>) {
            self.0.extend(param.val().into_data().iter::<f32>());
        }
    }
    let (_, _, model) = load_run_model::<Flex>(dir, "last.ckpt", &Default::default()).unwrap();
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    assert!(c.0.len() > 1000, "collected {} values", c.0.len());
    c.0
}

pub fn assert_same(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: parameter count");
    let differing = a
        .iter()
        .zip(b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count();
    assert_eq!(
        differing,
        0,
        "{what}: {differing} of {} values differ",
        a.len()
    );
}

/// Raises the stop flag after `after` training batches.
pub struct StopAfter {
    pub flag: Arc<AtomicBool>,
    pub after: usize,
    pub seen: usize,
}
impl TrainObserver for StopAfter {
    fn batch_done(&mut self, phase: Phase, _: Option<f64>) {
        if phase == Phase::Train {
            self.seen += 1;
            if self.seen == self.after {
                self.flag.store(true, Ordering::SeqCst);
            }
        }
    }
}
