//! IST and CST pseudo labels: soft scores (differentiable, for DTL) and hard targets (detached, for the
//! classification loss).

use burn::prelude::*;
use burn::tensor::activation::sigmoid;

use crate::pairs::{index_tensor, pair_count, pair_index};

/// The symmetric image-specific co-occurrence matrix `M`: `M_ij = M_ji = σ(m_ij)`, `M_ii = 1`.
///
/// # Shapes
/// - pair_logits: `[batch, pairs]`, pairs in the order of [`crate::pairs::pair_indices`]
/// - output: `[batch, classes, classes]`
///
/// # Panics
/// If `pairs != classes (classes − 1) / 2`.
pub fn cooccurrence_matrix<B: Backend>(pair_logits: Tensor<B, 2>, classes: usize) -> Tensor<B, 3> {
    let [batch, pairs] = pair_logits.dims();
    assert_eq!(
        pairs,
        pair_count(classes),
        "pair logits have {pairs} pairs, but {classes} classes make {}",
        pair_count(classes)
    );
    let device = pair_logits.device();
    let probabilities = sigmoid(pair_logits); // [batch, pairs]
    let extended = Tensor::cat(vec![probabilities, Tensor::ones([batch, 1], &device)], 1); // [batch, pairs + 1]
    let map: Vec<usize> = (0..classes * classes)
        .map(|flat| {
            let (i, j) = (flat / classes, flat % classes);
            match i.cmp(&j) {
                std::cmp::Ordering::Less => pair_index(classes, i, j),
                std::cmp::Ordering::Greater => pair_index(classes, j, i),
                std::cmp::Ordering::Equal => pairs,
            }
        })
        .collect();
    extended
        .select(1, index_tensor::<B>(&map, &device)) // [batch, classes * classes]
        .reshape([batch, classes, classes])
}

/// IST score `q_ni = (1 / max(|K⁺_n|, 1)) Σ_{j ∈ K⁺_n} M_ij`: the mean co-occurrence of class `i` with the
/// image's known positives (0 for an image without known positive). Differentiable in the pair logits; the
/// labels are detached.
///
/// # Shapes
/// - pair_logits: `[batch, pairs]`
/// - partial: `[batch, classes]` in {−1, 0, 1}
/// - output: `[batch, classes]`
pub fn ist_scores<B: Backend>(pair_logits: Tensor<B, 2>, partial: Tensor<B, 2>) -> Tensor<B, 2> {
    let [batch, classes] = partial.dims();
    let matrix = cooccurrence_matrix(pair_logits, classes); // [batch, classes, classes]
    let positive = partial.detach().equal_elem(1.0).float(); // [batch, classes]
    let count = positive.clone().sum_dim(1).clamp_min(1.0); // [batch, 1]
    let summed = matrix
        .matmul(positive.unsqueeze_dim::<3>(2)) // [batch, classes, 1]
        .reshape([batch, classes]);
    summed / count
}

/// DTL soft score `ŷ = clamp(score − τ, 0, 1)`, differentiable in the score and in τ.
///
/// # Shapes
/// - scores: `[batch, classes]`
/// - threshold: `[1]`
/// - output: `[batch, classes]`
pub fn soft_scores<B: Backend>(scores: Tensor<B, 2>, threshold: Tensor<B, 1>) -> Tensor<B, 2> {
    (scores - threshold.unsqueeze::<2>()).clamp(0.0, 1.0)
}

/// Hard pseudo targets `ỹ = y` where known, else `1[ŷ > 0]`: only positive pseudo labels; unknowns whose
/// soft score is 0 stay unknown (0). Detached.
///
/// # Shapes
/// - partial: `[batch, classes]` in {−1, 0, 1}
/// - soft: `[batch, classes]`
/// - output: `[batch, classes]` in {−1, 0, 1}
pub fn hard_pseudo_labels<B: Backend>(partial: Tensor<B, 2>, soft: Tensor<B, 2>) -> Tensor<B, 2> {
    let partial = partial.detach();
    let unknown = partial.clone().equal_elem(0.0).float();
    let active = soft.detach().greater_elem(0.0).float();
    partial + unknown * active
}

/// Zero the columns of the classes whose `class_mask` is 0 (e.g. classes without prototypes).
///
/// # Shapes
/// - values: `[batch, classes]`
/// - class_mask: `[classes]` in {0, 1}
/// - output: `[batch, classes]`
pub fn mask_classes<B: Backend>(values: Tensor<B, 2>, class_mask: Tensor<B, 1>) -> Tensor<B, 2> {
    values * class_mask.unsqueeze::<2>()
}

#[cfg(test)]
mod tests {
    use super::*;

    type TB = burn::backend::Flex;

    fn logit(p: f32) -> f32 {
        (p / (1.0 - p)).ln()
    }

    #[test]
    fn matrix_and_scores() {
        let device = Default::default();
        // 3 classes: pairs (0,1)=0.8, (0,2)=0.2, (1,2)=0.6
        let logits = Tensor::<TB, 2>::from_data([[logit(0.8), logit(0.2), logit(0.6)]; 2], &device);
        let m = cooccurrence_matrix(logits.clone(), 3)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let expected = [1.0, 0.8, 0.2, 0.8, 1.0, 0.6, 0.2, 0.6, 1.0];
        for (a, b) in m[..9].iter().zip(expected) {
            assert!((a - b).abs() < 1e-6);
        }
        // Image 0 knows classes 0 and 1 positive, image 1 nothing positive.
        let y = Tensor::<TB, 2>::from_data([[1.0, 1.0, 0.0], [-1.0, 0.0, 0.0]], &device);
        let q = ist_scores(logits, y.clone())
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let want = [0.9, 0.9, 0.4, 0.0, 0.0, 0.0];
        for (a, b) in q.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{q:?}");
        }
        let soft = soft_scores(
            Tensor::<TB, 2>::from_data([[0.9, 0.9, 0.4], [0.0, 0.7, 0.3]], &device),
            Tensor::from_data([0.35], &device),
        );
        let hard = hard_pseudo_labels(y, soft)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(hard, vec![1.0, 1.0, 1.0, -1.0, 1.0, 0.0]);
    }
}
