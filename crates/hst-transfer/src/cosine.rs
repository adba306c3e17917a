//! The building block of every cosine similarity in HST (prototype similarity, instance contrastive loss):
//! L2 normalisation with the reference's eps (`F.normalize` / `CosineSimilarity(eps=…)`).

use burn::prelude::*;

/// Divide each vector along `dim` by `max(‖x‖₂, eps)`.
pub fn normalize<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    dim: usize,
    eps: f64,
) -> Tensor<B, D> {
    let norm = x.clone().square().sum_dim(dim).sqrt().clamp_min(eps);
    x / norm
}
