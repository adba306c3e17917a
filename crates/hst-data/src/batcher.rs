//! Batching: decode and transform images in parallel (rayon) and stack them with their labels.
//!
//! burn's `Batcher` trait lives behind burn's `dataset` feature, which this project does not
//! enable; [`HstBatcher`] plays its role. [`HstBatcher::prepare`] does the CPU work and returns
//! a [`PreparedBatch`] (plain vectors, `Send`), [`PreparedBatch::into_batch`] makes the tensors;
//! [`HstBatcher::batch`] does both. [`HstBatcher::for_each_prepared`] overlaps the preparation
//! of the next batches with the caller's work on the current one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use crate::datasets::MultiLabelSource;
use crate::error::{DataError, Result};
use crate::labels::LabelMatrix;
use crate::rng::SeededRng;
use crate::transform::ImageTransform;

/// A batch of images with their partial and full labels.
#[derive(Clone, Debug)]
pub struct HstBatch<B: Backend> {
    /// Normalised images, `[batch, 3, height, width]`.
    pub images: Tensor<B, 4>,
    /// Partial labels in {-1, 0, 1} as floats, `[batch, classes]`.
    pub partial: Tensor<B, 2>,
    /// Full labels in {-1, 0, 1} as floats, `[batch, classes]`.
    pub full: Tensor<B, 2>,
    /// Dataset index of each row, `[batch]`.
    pub indices: Vec<usize>,
    /// Requested indices left out because their image could not be read (only with
    /// [`HstBatcher::with_skip_unreadable`]).
    pub skipped: Vec<usize>,
}

/// A batch before it becomes tensors: row-major vectors.
#[derive(Clone, Debug)]
pub struct PreparedBatch {
    /// Normalised images, `[batch, 3, height, width]`.
    pub images: Vec<f32>,
    /// Partial labels, `[batch, classes]`.
    pub partial: Vec<f32>,
    /// Full labels, `[batch, classes]`.
    pub full: Vec<f32>,
    /// Dataset index of each row, `[batch]`.
    pub indices: Vec<usize>,
    /// Requested indices left out because their image could not be read.
    pub skipped: Vec<usize>,
    /// Number of classes.
    pub classes: usize,
    /// Image side (height = width).
    pub image_size: usize,
}

impl PreparedBatch {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Moves the batch to `device` as tensors.
    pub fn into_batch<B: Backend>(self, device: &B::Device) -> HstBatch<B> {
        let n = self.indices.len();
        let s = self.image_size;
        let images = Tensor::from_data(TensorData::new(self.images, [n, 3, s, s]), device);
        let partial = Tensor::from_data(TensorData::new(self.partial, [n, self.classes]), device);
        let full = Tensor::from_data(TensorData::new(self.full, [n, self.classes]), device);
        HstBatch {
            images,
            partial,
            full,
            indices: self.indices,
            skipped: self.skipped,
        }
    }
}

/// Which transform a batcher applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchMode {
    /// Random resized crop + flip (seeded by seed, epoch and index).
    Train,
    /// Deterministic resize.
    Test,
}

/// Builds [`HstBatch`]es from a [`MultiLabelSource`] and its partial labels.
#[derive(Clone, Debug)]
pub struct HstBatcher {
    transform: ImageTransform,
    mode: BatchMode,
    skip_unreadable: bool,
    skipped_total: Arc<AtomicUsize>,
}

impl HstBatcher {
    /// A batcher applying `transform` in `mode`; an unreadable image is an error.
    pub fn new(transform: ImageTransform, mode: BatchMode) -> Self {
        Self {
            transform,
            mode,
            skip_unreadable: false,
            skipped_total: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// With `true`, an image that cannot be read or decoded is left out of its batch with a
    /// `tracing::warn!` and counted ([`HstBatch::skipped`], [`HstBatcher::skipped_total`])
    /// instead of failing the batch. Default: `false`.
    pub fn with_skip_unreadable(mut self, skip: bool) -> Self {
        self.skip_unreadable = skip;
        self
    }

    /// The transform.
    pub fn transform(&self) -> &ImageTransform {
        &self.transform
    }

    /// Images skipped so far by this batcher and its clones.
    pub fn skipped_total(&self) -> usize {
        self.skipped_total.load(Ordering::Relaxed)
    }

    /// Decodes and transforms the images `indices` of `source` in parallel and gathers the rows
    /// of `partial` and of the source's full labels.
    ///
    /// # Errors
    /// [`DataError::Shape`] if `partial` does not match the source; the image's error (naming the
    /// file) for an unreadable image unless skipping; [`DataError::EmptyBatch`] if every image
    /// was skipped.
    pub fn prepare<S: MultiLabelSource + ?Sized>(
        &self,
        source: &S,
        partial: &LabelMatrix,
        indices: &[usize],
        epoch: usize,
    ) -> Result<PreparedBatch> {
        let full = source.full_labels();
        if partial.images() != source.len() || partial.classes() != full.classes() {
            return Err(DataError::Shape(format!(
                "partial labels are {}x{} for a dataset of {} images x {} classes",
                partial.images(),
                partial.classes(),
                source.len(),
                full.classes()
            )));
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= source.len()) {
            return Err(DataError::Shape(format!(
                "index {bad} out of range for a dataset of {} images",
                source.len()
            )));
        }
        let decoded: Vec<Result<Vec<f32>>> = indices
            .par_iter()
            .map(|&i| {
                let image = source.load_image(i)?;
                Ok(match self.mode {
                    BatchMode::Train => self.transform.train(&image, epoch, i),
                    BatchMode::Test => self.transform.test(&image),
                })
            })
            .collect();

        let size = self.transform.image_size() as usize;
        let mut images = Vec::with_capacity(indices.len() * 3 * size * size);
        let mut kept = Vec::with_capacity(indices.len());
        let mut skipped = Vec::new();
        for (&i, item) in indices.iter().zip(decoded) {
            match item {
                Ok(pixels) => {
                    images.extend_from_slice(&pixels);
                    kept.push(i);
                }
                Err(e) if self.skip_unreadable => {
                    tracing::warn!(index = i, image = %source.image_name(i), error = %e, "skipping unreadable image");
                    skipped.push(i);
                }
                Err(e) => return Err(e),
            }
        }
        if !skipped.is_empty() {
            self.skipped_total
                .fetch_add(skipped.len(), Ordering::Relaxed);
        }
        if kept.is_empty() && !indices.is_empty() {
            return Err(DataError::EmptyBatch(skipped));
        }
        Ok(PreparedBatch {
            images,
            partial: partial.rows_f32(&kept),
            full: full.rows_f32(&kept),
            indices: kept,
            skipped,
            classes: full.classes(),
            image_size: size,
        })
    }

    /// [`HstBatcher::prepare`] then [`PreparedBatch::into_batch`].
    pub fn batch<B: Backend, S: MultiLabelSource + ?Sized>(
        &self,
        source: &S,
        partial: &LabelMatrix,
        indices: &[usize],
        epoch: usize,
        device: &B::Device,
    ) -> Result<HstBatch<B>> {
        Ok(self
            .prepare(source, partial, indices, epoch)?
            .into_batch(device))
    }

    /// Prepares `batches` (lists of indices) on a background thread, up to `ahead` batches in
    /// advance, and calls `f` on the calling thread with each in order. Stops at the first
    /// error of either side.
    pub fn for_each_prepared<S, F, E>(
        &self,
        source: &S,
        partial: &LabelMatrix,
        batches: &[Vec<usize>],
        epoch: usize,
        ahead: usize,
        mut f: F,
    ) -> std::result::Result<(), E>
    where
        S: MultiLabelSource + ?Sized,
        F: FnMut(PreparedBatch) -> std::result::Result<(), E>,
        E: From<DataError>,
    {
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel(ahead.max(1));
            scope.spawn(move || {
                for indices in batches {
                    let item = self.prepare(source, partial, indices, epoch);
                    let failed = item.is_err();
                    if tx.send(item).is_err() || failed {
                        break;
                    }
                }
            });
            for item in rx {
                f(item?)?;
            }
            Ok(())
        })
    }
}

/// The batches of one epoch: indices `0..len`, shuffled (seeded by `seed` and `epoch`) when
/// `shuffle`, cut into chunks of `batch_size`; the last, shorter chunk is dropped when
/// `drop_last` (the reference drops it in training and testing).
///
/// # Panics
/// If `batch_size` is 0.
pub fn epoch_batches(
    len: usize,
    batch_size: usize,
    shuffle: bool,
    drop_last: bool,
    seed: u64,
    epoch: usize,
) -> Vec<Vec<usize>> {
    assert!(batch_size > 0, "batch_size must be positive");
    let mut order: Vec<usize> = (0..len).collect();
    if shuffle {
        let mut rng = SeededRng::from_parts(&[seed, epoch as u64, 0x5348_5546]);
        for i in (1..len).rev() {
            order.swap(i, rng.below(i + 1));
        }
    }
    order
        .chunks(batch_size)
        .filter(|c| !drop_last || c.len() == batch_size)
        .map(<[usize]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::{Normalization, TransformConfig};
    use image::RgbImage;

    type TB = burn::backend::Flex;

    /// Image `i` is a flat colour `(10 i, 0, 0)`; image 2 is unreadable.
    struct Toy {
        classes: Vec<String>,
        labels: LabelMatrix,
    }

    impl MultiLabelSource for Toy {
        fn len(&self) -> usize {
            self.labels.images()
        }
        fn classes(&self) -> &[String] {
            &self.classes
        }
        fn full_labels(&self) -> &LabelMatrix {
            &self.labels
        }
        fn load_image(&self, index: usize) -> Result<RgbImage> {
            if index == 2 {
                return Err(DataError::invalid("toy/2.png", "", "corrupt"));
            }
            Ok(RgbImage::from_pixel(
                6,
                4,
                image::Rgb([10 * index as u8, 0, 0]),
            ))
        }
        fn image_name(&self, index: usize) -> String {
            format!("toy/{index}.png")
        }
    }

    fn toy() -> Toy {
        Toy {
            classes: vec!["a".into(), "b".into()],
            labels: LabelMatrix::new(4, 2, vec![1, -1, -1, 1, 1, 1, -1, -1]).unwrap(),
        }
    }

    fn batcher(mode: BatchMode) -> HstBatcher {
        let t = TransformConfig::new()
            .with_scale_size(8)
            .with_crop_sizes(vec![8, 6])
            .with_image_size(4)
            .with_normalization(Normalization::UnitRange)
            .init();
        HstBatcher::new(t, mode)
    }

    #[test]
    fn batch_shapes_and_labels() {
        let src = toy();
        let partial = LabelMatrix::new(4, 2, vec![1, 0, 0, 1, 0, 0, -1, 0]).unwrap();
        let device = Default::default();
        let b = batcher(BatchMode::Test)
            .batch::<TB, _>(&src, &partial, &[3, 0], 0, &device)
            .unwrap();
        assert_eq!(b.images.dims(), [2, 3, 4, 4]);
        assert_eq!(b.indices, vec![3, 0]);
        let p: Vec<f32> = b.partial.into_data().to_vec().unwrap();
        assert_eq!(p, vec![-1.0, 0.0, 1.0, 0.0]);
        let f: Vec<f32> = b.full.into_data().to_vec().unwrap();
        assert_eq!(f, vec![-1.0, -1.0, 1.0, -1.0]);
        let px: Vec<f32> = b.images.into_data().to_vec().unwrap();
        // Row 0 is image 3: red = 30/255 everywhere, green 0.
        assert!((px[0] - 30.0 / 255.0).abs() < 1e-6);
        assert_eq!(px[16], 0.0);
    }

    #[test]
    fn unreadable_image_is_an_error_or_a_counted_skip() {
        let src = toy();
        let partial = src.labels.clone();
        let err = batcher(BatchMode::Train)
            .prepare(&src, &partial, &[0, 2], 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("toy/2.png"), "{err}");
        let b = batcher(BatchMode::Train).with_skip_unreadable(true);
        let p = b.prepare(&src, &partial, &[0, 2, 1], 0).unwrap();
        assert_eq!(
            (p.indices.clone(), p.skipped.clone()),
            (vec![0, 1], vec![2])
        );
        assert_eq!(p.full, vec![1.0, -1.0, -1.0, 1.0]);
        assert_eq!(b.skipped_total(), 1);
        assert!(matches!(
            b.prepare(&src, &partial, &[2], 0),
            Err(DataError::EmptyBatch(_))
        ));
    }

    #[test]
    fn train_batches_are_reproducible_and_prefetch_matches() {
        let src = toy();
        let partial = src.labels.clone();
        let b = batcher(BatchMode::Train);
        let a1 = b.prepare(&src, &partial, &[0, 1, 3], 5).unwrap();
        let a2 = b.prepare(&src, &partial, &[0, 1, 3], 5).unwrap();
        assert_eq!(a1.images, a2.images);
        let batches = vec![vec![0, 1], vec![3]];
        let mut seen = Vec::new();
        b.for_each_prepared::<_, _, DataError>(&src, &partial, &batches, 5, 2, |p| {
            seen.push(p.indices.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, batches);
        let r =
            b.for_each_prepared::<_, _, DataError>(&src, &partial, &[vec![2]], 0, 1, |_| Ok(()));
        assert!(r.is_err());
    }

    #[test]
    fn epoch_batches_shuffle_and_drop_last() {
        let b = epoch_batches(10, 4, false, true, 0, 0);
        assert_eq!(b, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
        assert_eq!(epoch_batches(10, 4, false, false, 0, 0).len(), 3);
        let s0 = epoch_batches(10, 10, true, false, 1, 0);
        let s1 = epoch_batches(10, 10, true, false, 1, 1);
        assert_ne!(s0, s1);
        assert_eq!(s0, epoch_batches(10, 10, true, false, 1, 0));
        let mut sorted = s0[0].clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    }
}
