//! Evaluation on the test set, and the co-occurrence matrices the run report compares (paper Fig. 4).

use burn::prelude::*;
use hst_data::batcher::epoch_batches;
use hst_data::{HstBatcher, MultiLabelSource};
use hst_transfer::Hst;

use crate::error::TrainError;
use crate::host;
use crate::metrics::{MetricAccumulator, MultiLabelMetrics};

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    host::read_f32(t)
}

/// Evaluation result of one pass over the test set.
pub struct Evaluation {
    /// The metrics.
    pub metrics: MultiLabelMetrics,
    /// Mean predicted pair co-occurrence probability `[pairs]` (IST), if the model has the IST head.
    pub mean_cooccurrence: Option<Vec<f64>>,
}

/// Evaluate `model` (inference backend) on `test` with the test transform.
pub fn evaluate<B: Backend>(
    model: &Hst<B>,
    test: &dyn MultiLabelSource,
    batcher: &HstBatcher,
    batch_size: usize,
    drop_last: bool,
    device: &B::Device,
    mut on_batch: impl FnMut(),
) -> Result<Evaluation, TrainError> {
    let classes = test.classes().len();
    let labels = test.full_labels();
    let mut acc = MetricAccumulator::new(classes);
    let mut cooc: Option<Vec<f64>> = None;
    let batches = epoch_batches(test.len(), batch_size, false, drop_last, 0, 0);
    for indices in &batches {
        let batch = batcher.batch::<B, _>(test, labels, indices, 0, device)?;
        let out = model.forward(batch.images);
        acc.push(&to_vec(out.logits), &to_vec(batch.full))?;
        if let Some(pairs) = out.cooccurrence {
            let sums = to_vec(burn::tensor::activation::sigmoid(pairs).sum_dim(0));
            let total = cooc.get_or_insert_with(|| vec![0.0; sums.len()]);
            for (t, s) in total.iter_mut().zip(sums) {
                *t += s as f64;
            }
        }
        on_batch();
    }
    let metrics = acc.finish();
    let n = metrics.images.max(1) as f64;
    Ok(Evaluation {
        metrics,
        mean_cooccurrence: cooc.map(|v| v.into_iter().map(|s| s / n).collect()),
    })
}

/// The `[classes, classes]` matrix of a `[pairs]` vector in the order (0,1),(0,2),…,(1,2),…, diagonal 1.
pub fn pairs_to_matrix(pairs: &[f64], classes: usize) -> Vec<f32> {
    let mut m = vec![0f32; classes * classes];
    let mut p = 0;
    for i in 0..classes {
        m[i * classes + i] = 1.0;
        for j in i + 1..classes {
            let v = pairs.get(p).copied().unwrap_or(f64::NAN) as f32;
            m[i * classes + j] = v;
            m[j * classes + i] = v;
            p += 1;
        }
    }
    m
}

/// The statistical co-occurrence of the labels: the fraction of images in which both i and j are present,
/// diagonal 1 (comparable with the mean image-specific matrix of IST).
pub fn statistical_cooccurrence(labels: &hst_data::LabelMatrix) -> Vec<f32> {
    let (n, c) = (labels.images(), labels.classes());
    let mut m = vec![0f32; c * c];
    for r in 0..n {
        let row = labels.row(r);
        for i in 0..c {
            if row[i] == 1 {
                for j in 0..c {
                    if row[j] == 1 && i != j {
                        m[i * c + j] += 1.0;
                    }
                }
            }
        }
    }
    for i in 0..c {
        for j in 0..c {
            m[i * c + j] = if i == j {
                1.0
            } else {
                m[i * c + j] / n.max(1) as f32
            };
        }
    }
    m
}
