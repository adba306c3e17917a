//! The command-line jobs, each written once over the backend and dispatched by [`crate::backend::run_on`].

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use hst_data::{BatchMode, HstBatcher};
use hst_train::data::RunData;
use hst_train::import::{import_reference, ImportedRun};
use hst_train::trainer::{evaluate, load_run_model, Evaluation};
use hst_train::{
    Cluster, DataParallel, RunSummary, TrainConfig, TrainError, TrainObserver, TrainOptions,
};

use crate::backend::{BackendJob, BackendName, DevicesJob};

/// Train a configuration on the chosen backend.
pub struct TrainJob<'a> {
    /// The run configuration.
    pub config: TrainConfig,
    /// Its data.
    pub data: &'a RunData,
    /// The run folder.
    pub out: PathBuf,
    /// Resume from the run folder's last checkpoint.
    pub resume: bool,
    /// Replace a run already in `out`.
    pub overwrite: bool,
    /// Set by Ctrl-C.
    pub stop: Arc<AtomicBool>,
    /// Progress display.
    pub observer: &'a mut dyn TrainObserver,
    /// Other machines of a data-parallel run.
    pub cluster: Option<Cluster>,
    /// How long a data-parallel peer waits for the others in one collective operation.
    pub timeout: Duration,
}

impl BackendJob for TrainJob<'_> {
    type Output = Result<RunSummary, TrainError>;

    /// [`hst_train::train`] on `device` (and, with a cluster, as this node's one peer).
    fn run<B: AutodiffBackend>(self, backend: BackendName, device: B::Device) -> Self::Output {
        DevicesJob::run::<B>(self, backend, vec![device])
    }
}

impl DevicesJob for TrainJob<'_> {
    type Output = Result<RunSummary, TrainError>;

    /// One device and no cluster: [`hst_train::train`]; otherwise data-parallel training, one peer per
    /// device ([`hst_train::train_data_parallel`]).
    fn run<B: AutodiffBackend>(self, _: BackendName, devices: Vec<B::Device>) -> Self::Output {
        let options = TrainOptions {
            resume: self.resume,
            stop: Some(self.stop),
            overwrite: self.overwrite,
        };
        let mut parallel = DataParallel::new(devices).with_timeout(self.timeout);
        if let Some(cluster) = self.cluster {
            parallel = parallel.with_cluster(cluster);
        }
        hst_train::train_data_parallel::<B>(
            &self.config,
            self.data,
            &self.out,
            &options,
            &parallel,
            self.observer,
        )
    }
}

/// Evaluate a run folder's checkpoint on a test set.
pub struct EvalJob<'a> {
    /// The run folder.
    pub run_dir: PathBuf,
    /// `best.ckpt` or `last.ckpt`.
    pub checkpoint: String,
    /// The data (its test split is used).
    pub data: &'a RunData,
}

impl BackendJob for EvalJob<'_> {
    type Output = Result<Evaluation, TrainError>;

    fn run<B: AutodiffBackend>(self, _: BackendName, device: B::Device) -> Self::Output {
        let (config, _, model) = load_run_model::<B>(&self.run_dir, &self.checkpoint, &device)?;
        let model = model.valid();
        let transform = config.data.transform.clone().init();
        let batcher = HstBatcher::new(transform, BatchMode::Test);
        evaluate(
            &model,
            self.data.test.as_ref(),
            &batcher,
            config.eval_batch_size,
            config.drop_last_test_batch,
            &device,
            || {},
        )
    }
}

/// Turn an HST checkpoint of the authors' code into a run folder ([`hst_train::import::import_reference`]).
pub struct ImportJob<'a> {
    /// The run configuration the checkpoint was trained with (architecture and dataset).
    pub config: TrainConfig,
    /// Its data (class names; what the checkpoint lacks).
    pub data: &'a RunData,
    /// The reference checkpoint (`.pth` or `.safetensors`).
    pub checkpoint: PathBuf,
    /// The new run folder.
    pub out: PathBuf,
}

impl BackendJob for ImportJob<'_> {
    type Output = Result<ImportedRun, TrainError>;

    fn run<B: AutodiffBackend>(self, _: BackendName, device: B::Device) -> Self::Output {
        import_reference::<B>(
            &self.config,
            self.data,
            &self.checkpoint,
            &self.out,
            &device,
        )
    }
}

/// One image's prediction.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Prediction {
    /// The image file.
    pub image: PathBuf,
    /// `(class, probability)` for every class, most probable first.
    pub scores: Vec<(String, f32)>,
}

/// Predict the labels of image files with a run folder's checkpoint.
pub struct PredictJob {
    /// The run folder.
    pub run_dir: PathBuf,
    /// `best.ckpt` or `last.ckpt`.
    pub checkpoint: String,
    /// The images.
    pub images: Vec<PathBuf>,
}

impl BackendJob for PredictJob {
    type Output = Result<Vec<Prediction>, TrainError>;

    fn run<B: AutodiffBackend>(self, _: BackendName, device: B::Device) -> Self::Output {
        let (config, constants, model) =
            load_run_model::<B>(&self.run_dir, &self.checkpoint, &device)?;
        let model = model.valid();
        let transform = config.data.transform.clone().init();
        let size = transform.image_size() as usize;
        let mut out = Vec::with_capacity(self.images.len());
        for chunk in self.images.chunks(config.eval_batch_size.max(1)) {
            let mut pixels = Vec::with_capacity(chunk.len() * 3 * size * size);
            for path in chunk {
                let image = hst_data::datasets::decode_image_file(path)?;
                pixels.extend(transform.test(&image));
            }
            let images = Tensor::<B::InnerBackend, 4>::from_data(
                TensorData::new(pixels, [chunk.len(), 3, size, size]),
                &device,
            );
            let probs = burn::tensor::activation::sigmoid(model.forward(images).logits);
            let probs: Vec<f32> = probs.into_data().iter::<f32>().collect();
            let classes = constants.classes.len();
            for (i, path) in chunk.iter().enumerate() {
                let mut scores: Vec<(String, f32)> = constants
                    .classes
                    .iter()
                    .cloned()
                    .zip(probs[i * classes..(i + 1) * classes].iter().copied())
                    .collect();
                scores.sort_by(|a, b| b.1.total_cmp(&a.1));
                out.push(Prediction {
                    image: path.clone(),
                    scores,
                });
            }
        }
        Ok(out)
    }
}

/// Default run folder for a preset: `runs/<preset>-<unix time>`.
pub fn default_run_dir(preset: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Path::new("runs").join(format!("{preset}-{secs}"))
}
