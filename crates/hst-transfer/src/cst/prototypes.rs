//! Class prototypes and their collection from the known positives of the training set.

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use super::kmeans::{kmeans, KMeansConfig};
use crate::error::TransferError;
use crate::pairs::index_tensor;

/// K prototypes per class (padded), with a validity mask.
///
/// A class with `n < K` known positives has `n` prototypes (the points themselves); a class with none has
/// no valid prototype, gets similarity 0 and no CST pseudo labels. The prototypes are training state owned
/// by the loop (not parameters; they receive no gradient). Save them with the checkpoints if training is to
/// be resumed after the first prototype epoch (the reference loses them).
#[derive(Debug, Clone)]
pub struct Prototypes<B: Backend> {
    /// Centers `[classes, k, dim]`; invalid slots are zero.
    pub centers: Tensor<B, 3>,
    /// 1 for a valid prototype, 0 for padding, `[classes, k]`.
    pub valid: Tensor<B, 2>,
}

impl<B: Backend> Prototypes<B> {
    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.centers.dims()[0]
    }

    /// Prototype slots per class (K).
    pub fn k(&self) -> usize {
        self.centers.dims()[1]
    }

    /// Feature size.
    pub fn dim(&self) -> usize {
        self.centers.dims()[2]
    }

    /// 1 for the classes with at least one prototype, `[classes]`.
    pub fn class_mask(&self) -> Tensor<B, 1> {
        let classes = self.classes();
        self.valid
            .clone()
            .sum_dim(1)
            .greater_elem(0.0)
            .float()
            .reshape([classes])
    }

    /// Valid prototypes per class (reads the mask back to the host).
    pub fn counts(&self) -> Vec<usize> {
        let classes = self.classes();
        self.valid
            .clone()
            .sum_dim(1)
            .reshape([classes])
            .into_data()
            .iter::<f64>()
            .map(|v| v.round() as usize)
            .collect()
    }

    /// Move to `device`.
    pub fn to_device(self, device: &B::Device) -> Self {
        Self {
            centers: self.centers.to_device(device),
            valid: self.valid.to_device(device),
        }
    }

    /// Cluster each class's points. `per_class[c]` holds class `c`'s features `[n_c, dim]` (`None` when
    /// `n_c = 0`). Class `c` is clustered with seed `config.seed` mixed with `c`.
    pub fn fit(
        per_class: Vec<Option<Tensor<B, 2>>>,
        dim: usize,
        config: &KMeansConfig,
        device: &B::Device,
    ) -> Self {
        let k = config.k.max(1);
        let mut centers = Vec::with_capacity(per_class.len());
        let mut valid = Vec::with_capacity(per_class.len() * k);
        for (class, points) in per_class.into_iter().enumerate() {
            let class_config = config.clone().with_seed(class_seed(config.seed, class));
            let fit = points.and_then(|p| kmeans(p, &class_config));
            let (class_centers, count) = match fit {
                Some(fit) => {
                    let count = fit.centers.dims()[0];
                    tracing::debug!(
                        class,
                        count,
                        iterations = fit.iterations,
                        inertia = fit.inertia,
                        "prototypes"
                    );
                    let padded = if count < k {
                        Tensor::cat(
                            vec![fit.centers, Tensor::zeros([k - count, dim], device)],
                            0,
                        )
                    } else {
                        fit.centers
                    };
                    (padded, count)
                }
                None => (Tensor::zeros([k, dim], device), 0),
            };
            centers.push(class_centers);
            valid.extend((0..k).map(|j| if j < count { 1.0f32 } else { 0.0 }));
        }
        let classes = centers.len();
        Self {
            centers: Tensor::stack(centers, 0),
            valid: Tensor::from_data(TensorData::new(valid, [classes, k]), device),
        }
    }
}

impl<B: AutodiffBackend> Prototypes<B> {
    /// Prototypes computed on the inner backend (e.g. with `model.valid()`), as constants of the autodiff
    /// backend.
    pub fn from_inner(inner: Prototypes<B::InnerBackend>) -> Self {
        Self {
            centers: Tensor::from_inner(inner.centers),
            valid: Tensor::from_inner(inner.valid),
        }
    }

    /// The same prototypes on the inner backend.
    pub fn inner(self) -> Prototypes<B::InnerBackend> {
        Prototypes {
            centers: self.centers.inner(),
            valid: self.valid.inner(),
        }
    }
}

/// Per-class seed: the class index mixed into the run seed (SplitMix64's increment), so that each class's
/// clustering does not depend on the others'.
fn class_seed(seed: u64, class: usize) -> u64 {
    seed ^ (class as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Collects the semantic features of the known positives, batch by batch, on their device, without keeping
/// the `[images, classes, dim]` features of the whole training set.
///
/// Reference `computePrototype`: one pass over the train loader (no gradient, model in eval mode) collecting
/// `f_c^n` for every `y_nc = 1`, then K-means per class.
#[derive(Debug, Clone)]
pub struct PrototypeCollector<B: Backend> {
    classes: usize,
    dim: usize,
    device: B::Device,
    chunks: Vec<Tensor<B, 2>>,
    owners: Vec<usize>,
}

impl<B: Backend> PrototypeCollector<B> {
    /// An empty collector for `classes` classes with `dim`-sized features.
    pub fn new(classes: usize, dim: usize, device: &B::Device) -> Self {
        Self {
            classes,
            dim,
            device: device.clone(),
            chunks: Vec::new(),
            owners: Vec::new(),
        }
    }

    /// Keep the features of this batch's known positives (detached).
    ///
    /// # Shapes
    /// - semantic: `[batch, classes, dim]`
    /// - partial: `[batch, classes]` in {−1, 0, 1}
    ///
    /// # Errors
    /// [`TransferError::Shape`] if the shapes disagree with the collector's, [`TransferError::LabelValue`]
    /// if a label is not −1, 0 or 1.
    pub fn push(
        &mut self,
        semantic: Tensor<B, 3>,
        partial: Tensor<B, 2>,
    ) -> Result<(), TransferError> {
        let [batch, classes, dim] = semantic.dims();
        if classes != self.classes || dim != self.dim {
            return Err(TransferError::Shape {
                what: "PrototypeCollector::push semantic",
                expected: vec![batch, self.classes, self.dim],
                got: vec![batch, classes, dim],
            });
        }
        if partial.dims() != [batch, classes] {
            return Err(TransferError::Shape {
                what: "PrototypeCollector::push partial",
                expected: vec![batch, classes],
                got: partial.dims().to_vec(),
            });
        }
        let labels: Vec<f32> = partial.detach().into_data().iter::<f32>().collect();
        let mut rows = Vec::new();
        for (flat, &v) in labels.iter().enumerate() {
            if v == 1.0 {
                rows.push(flat);
            } else if v != 0.0 && v != -1.0 {
                return Err(TransferError::LabelValue {
                    what: "PrototypeCollector::push partial",
                    row: flat / classes,
                    column: flat % classes,
                    value: v,
                });
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        self.owners.extend(rows.iter().map(|flat| flat % classes));
        let features = semantic
            .detach()
            .to_device(&self.device)
            .reshape([batch * classes, dim])
            .select(0, index_tensor::<B>(&rows, &self.device)); // [rows, dim]
        self.chunks.push(features);
        Ok(())
    }

    /// Known positives collected per class.
    pub fn counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &c in &self.owners {
            counts[c] += 1;
        }
        counts
    }

    /// Total features collected.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// Whether nothing was collected.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// Run K-means per class (`config.k` clusters, seeded by `config.seed`) and return the prototypes.
    pub fn fit(self, config: &KMeansConfig) -> Prototypes<B> {
        let mut per_class: Vec<Option<Tensor<B, 2>>> = vec![None; self.classes];
        if !self.chunks.is_empty() {
            let all = Tensor::cat(self.chunks, 0); // [rows, dim]
            let mut rows: Vec<Vec<usize>> = vec![Vec::new(); self.classes];
            for (row, &c) in self.owners.iter().enumerate() {
                rows[c].push(row);
            }
            for (c, r) in rows.iter().enumerate() {
                if !r.is_empty() {
                    per_class[c] = Some(all.clone().select(0, index_tensor::<B>(r, &self.device)));
                }
            }
        }
        Prototypes::fit(per_class, self.dim, config, &self.device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TB = burn::backend::Flex;

    #[test]
    fn collects_only_known_positives_and_handles_few_points() {
        let device = Default::default();
        let mut collector = PrototypeCollector::<TB>::new(3, 2, &device);
        // Batch 1: image 0 positive for class 0 and 2; image 1 positive for class 0.
        let f1 = Tensor::<TB, 3>::from_data(
            [
                [[1.0, 0.0], [9.0, 9.0], [0.0, 1.0]],
                [[2.0, 0.0], [9.0, 9.0], [9.0, 9.0]],
            ],
            &device,
        );
        let y1 = Tensor::<TB, 2>::from_data([[1.0, -1.0, 1.0], [1.0, 0.0, -1.0]], &device);
        collector.push(f1, y1).unwrap();
        // Batch 2: one image, positive for class 0 only.
        let f2 = Tensor::<TB, 3>::from_data([[[3.0, 0.0], [9.0, 9.0], [9.0, 9.0]]], &device);
        let y2 = Tensor::<TB, 2>::from_data([[1.0, 0.0, 0.0]], &device);
        collector.push(f2, y2).unwrap();
        assert_eq!(collector.counts(), vec![3, 0, 1]);

        let protos = collector.fit(&KMeansConfig::new().with_k(2).with_seed(1));
        assert_eq!(protos.centers.dims(), [3, 2, 2]);
        assert_eq!(protos.counts(), vec![2, 0, 1]);
        assert_eq!(
            protos.class_mask().into_data().to_vec::<f32>().unwrap(),
            vec![1.0, 0.0, 1.0]
        );
        let c = protos.centers.into_data().to_vec::<f32>().unwrap();
        // Class 0: {1, 2, 3} on the x axis into 2 clusters: {1.5, 3} or {1, 2.5}.
        let mut xs = vec![c[0], c[2]];
        xs.sort_by(f32::total_cmp);
        assert!(xs == vec![1.5, 3.0] || xs == vec![1.0, 2.5], "{xs:?}");
        // Class 2: the single point itself, then padding.
        assert_eq!(&c[8..12], &[0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn rejects_bad_input() {
        let device = Default::default();
        let mut collector = PrototypeCollector::<TB>::new(2, 3, &device);
        let err = collector
            .push(
                Tensor::zeros([1, 2, 4], &device),
                Tensor::zeros([1, 2], &device),
            )
            .unwrap_err();
        assert!(matches!(err, TransferError::Shape { .. }));
        let err = collector
            .push(
                Tensor::zeros([1, 2, 3], &device),
                Tensor::from_data([[0.5, 1.0]], &device),
            )
            .unwrap_err();
        assert!(matches!(err, TransferError::LabelValue { column: 0, .. }));
    }

    #[test]
    fn empty_collector_gives_no_valid_prototype() {
        let device = Default::default();
        let protos = PrototypeCollector::<TB>::new(2, 3, &device).fit(&KMeansConfig::new());
        assert_eq!(protos.counts(), vec![0, 0]);
        assert_eq!(protos.centers.dims(), [2, 10, 3]);
    }
}
