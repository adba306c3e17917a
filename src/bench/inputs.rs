//! The benchmark model and its inputs, generated from seeded host streams so that every backend gets the same
//! values: constants (word vectors, adjacency, prototypes), random images and partial labels, and a dataset of
//! synthetic JPEGs for the data-pipeline measurement.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::prelude::*;
use burn::tensor::Distribution;
use hst_data::rng::SeededRng;
use hst_data::{DataError, LabelMatrix, MultiLabelSource};
pub(crate) use hst_train::trainer::adam;
use hst_train::trainer::resolve_model_config;
use hst_transfer::{BatchLabels, Hst, Prototypes};

use super::spec::BenchSpec;

/// Partial labels `[rows, classes]`: each entry known with probability 0.3 (the paper's main setting),
/// a known entry positive with probability 0.1; at least one known positive per row.
pub fn partial_labels(rng: &mut SeededRng, rows: usize, classes: usize) -> Vec<f32> {
    let mut labels = vec![0f32; rows * classes];
    for r in 0..rows {
        for c in 0..classes {
            if rng.next_f32() < 0.3 {
                labels[r * classes + c] = if rng.next_f32() < 0.1 { 1.0 } else { -1.0 };
            }
        }
        let c = (rng.next_u64() % classes as u64) as usize;
        labels[r * classes + c] = 1.0;
    }
    labels
}

/// The model's constants and the prototypes, generated on the host (same values on every backend).
#[derive(Debug, Clone)]
pub struct BenchConstants {
    /// `[classes, embed_dim]`.
    pub word_vectors: Vec<f32>,
    /// `[classes, classes]`, in [0, 1).
    pub adjacency: Vec<f32>,
    /// Prototype centers `[classes, k, dim]`.
    pub prototype_centers: Vec<f32>,
    /// Prototype slots per class.
    pub prototypes: usize,
    /// Feature dimension of the prototypes.
    pub feature_dim: usize,
}

impl BenchConstants {
    /// Constants for `spec` (deterministic in `spec.seed`).
    pub fn of(spec: &BenchSpec) -> Self {
        let c = spec.classes;
        let mut rng = SeededRng::from_parts(&[spec.seed, 1]);
        let word_vectors = rng.normals(c * spec.embed_dim());
        let adjacency = (0..c * c).map(|_| rng.next_f32()).collect();
        let k = spec.config.model.cst.prototypes.max(1);
        let feature_dim = spec.config.model.sarl.feature_dim;
        let prototype_centers = rng.normals(c * k * feature_dim);
        Self {
            word_vectors,
            adjacency,
            prototype_centers,
            prototypes: k,
            feature_dim,
        }
    }

    /// The prototypes on `device` (every slot valid).
    pub fn prototypes<B: Backend>(&self, classes: usize, device: &B::Device) -> Prototypes<B> {
        let (k, d) = (self.prototypes, self.feature_dim);
        Prototypes {
            centers: Tensor::from_data(
                TensorData::new(self.prototype_centers.clone(), [classes, k, d]),
                device,
            ),
            valid: Tensor::ones([classes, k], device),
        }
    }
}

/// Build the benchmark model of `spec` on `device`: `resolve_model_config` + `HstConfig::init` with the
/// host-generated word vectors and adjacency (seeded by `spec.seed`).
pub fn build_model<B: Backend>(
    spec: &BenchSpec,
    constants: &BenchConstants,
    device: &B::Device,
) -> Hst<B> {
    B::seed(device, spec.seed);
    let c = spec.classes;
    let config = resolve_model_config::<B>(&spec.config, c, spec.embed_dim(), device);
    let wv = Tensor::from_data(
        TensorData::new(constants.word_vectors.clone(), [c, spec.embed_dim()]),
        device,
    );
    let adj = Tensor::from_data(TensorData::new(constants.adjacency.clone(), [c, c]), device);
    config.init::<B>(wv, adj, device)
}

/// The random inputs of a benchmark step: images `[batch, 3, size, size]` (N(0, 1)), partial labels
/// `[batch, classes]` in {−1, 0, 1} (seeded host stream 3) and the fixed prototypes.
pub(crate) fn bench_inputs<B: Backend>(
    spec: &BenchSpec,
    constants: &BenchConstants,
    device: &B::Device,
) -> (Tensor<B, 4>, BatchLabels<B>, Prototypes<B>) {
    let shape = [spec.batch, 3, spec.image_size, spec.image_size];
    let images = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), device);
    let mut rng = SeededRng::from_parts(&[spec.seed, 3]);
    // With the host copy, as the trainer passes them: a step then reads nothing back from the device.
    let partial = BatchLabels::from_host(
        partial_labels(&mut rng, spec.batch, spec.classes),
        [spec.batch, spec.classes],
        device,
    )
    .expect("the labels have batch · classes values");
    (
        images,
        partial,
        constants.prototypes::<B>(spec.classes, device),
    )
}

pub(crate) fn sync<B: Backend>(device: &B::Device) -> Result<()> {
    B::sync(device).map_err(|e| anyhow::anyhow!("device sync failed: {e}"))
}

/// A dataset of synthetic 500×375 JPEGs (VOC/COCO-sized), decoded on every access like real files, with
/// random full labels. Measures the data pipeline without any dataset on disk.
pub struct SyntheticJpegs {
    classes: Vec<String>,
    labels: LabelMatrix,
    jpegs: Vec<Vec<u8>>,
}

impl SyntheticJpegs {
    /// `images` labelled images over `classes` classes, cycling through 16 distinct JPEGs.
    ///
    /// # Errors
    /// Only if the JPEG encoder fails.
    pub fn new(images: usize, classes: usize, seed: u64) -> Result<Self> {
        let (w, h) = (500u32, 375u32);
        let mut rng = SeededRng::from_parts(&[seed, 2]);
        let mut jpegs = Vec::new();
        for k in 0..16u32 {
            let image = image::RgbImage::from_fn(w, h, |x, y| {
                let noise = (rng.next_u64() & 31) as u32;
                image::Rgb([
                    ((x * (k + 1) / 3 + noise) % 256) as u8,
                    ((y * (k + 2) / 3 + 2 * noise) % 256) as u8,
                    (((x + y) * (k + 3) / 5 + noise) % 256) as u8,
                ])
            });
            let mut bytes = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
                .encode_image(&image)
                .context("encoding a synthetic JPEG")?;
            jpegs.push(bytes);
        }
        let values = (0..images * classes)
            .map(|_| if rng.next_f32() < 0.1 { 1 } else { -1 })
            .collect();
        let labels = LabelMatrix::new(images, classes, values)?;
        Ok(Self {
            classes: (0..classes).map(|c| format!("class{c}")).collect(),
            labels,
            jpegs,
        })
    }
}

impl MultiLabelSource for SyntheticJpegs {
    fn len(&self) -> usize {
        self.labels.images()
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }

    fn full_labels(&self) -> &LabelMatrix {
        &self.labels
    }

    fn load_image(&self, index: usize) -> hst_data::error::Result<image::RgbImage> {
        let bytes = &self.jpegs[index % self.jpegs.len()];
        image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg)
            .map(|i| i.to_rgb8())
            .map_err(|source| DataError::Image {
                path: PathBuf::from(self.image_name(index)),
                source,
            })
    }

    fn image_name(&self, index: usize) -> String {
        format!("synthetic:{index:06}.jpg")
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_jpegs_decode_to_their_size() {
        let data = SyntheticJpegs::new(3, 5, 0).unwrap();
        assert_eq!(data.len(), 3);
        let image = data.load_image(2).unwrap();
        assert_eq!(image.dimensions(), (500, 375));
        assert_eq!(data.full_labels().classes(), 5);
    }
}
