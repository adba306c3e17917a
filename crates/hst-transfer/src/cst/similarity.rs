//! Similarity of semantic features to class prototypes.

use burn::prelude::*;

use super::prototypes::Prototypes;

pub use crate::cosine::normalize;

/// `s_nc = (1/K_c) Σ_k cos(f_c^n, p_{c,k})` over the class's valid prototypes (K_c of them); 0 for a class
/// without prototypes. Cosine eps as in the reference (`CosineSimilarity(eps=1e-9)`).
///
/// # Shapes
/// - semantic: `[batch, classes, dim]`
/// - output: `[batch, classes]`
///
/// # Panics
/// If the prototypes' classes or dim differ from the features'.
pub fn prototype_similarity<B: Backend>(
    semantic: Tensor<B, 3>,
    prototypes: &Prototypes<B>,
    eps: f64,
) -> Tensor<B, 2> {
    let [batch, classes, dim] = semantic.dims();
    let [p_classes, k, p_dim] = prototypes.centers.dims();
    assert!(
        p_classes == classes && p_dim == dim,
        "prototypes are [{p_classes}, {k}, {p_dim}] but the features are [{batch}, {classes}, {dim}]"
    );
    let features = normalize(semantic, 2, eps).swap_dims(0, 1); // [classes, batch, dim]
    let centers = normalize(prototypes.centers.clone(), 2, eps); // [classes, k, dim]
    let cosine = features.matmul(centers.swap_dims(1, 2)); // [classes, batch, k]
    let valid = prototypes.valid.clone().unsqueeze_dim::<3>(1); // [classes, 1, k]
    let count = prototypes.valid.clone().sum_dim(1).clamp_min(1.0); // [classes, 1]
    let mean = (cosine * valid).sum_dim(2).reshape([classes, batch]) / count; // [classes, batch]
    mean.transpose() // [batch, classes]
}

#[cfg(test)]
mod tests {
    use super::*;

    type TB = burn::backend::Flex;

    #[test]
    fn masked_mean_cosine() {
        let device = Default::default();
        // class 0: prototypes (1,0) and (0,1) valid; class 1: only (1,0) valid; class 2: none.
        let centers = Tensor::<TB, 3>::from_data(
            [
                [[1.0, 0.0], [0.0, 1.0]],
                [[1.0, 0.0], [5.0, 5.0]],
                [[0.0, 0.0], [0.0, 0.0]],
            ],
            &device,
        );
        let valid = Tensor::<TB, 2>::from_data([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]], &device);
        let protos = Prototypes { centers, valid };
        let f = Tensor::<TB, 3>::from_data([[[3.0, 4.0], [0.0, 2.0], [1.0, 1.0]]], &device);
        let s = prototype_similarity(f, &protos, 1e-9)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert!((s[0] - 0.7).abs() < 1e-6);
        assert!(s[1].abs() < 1e-6);
        assert_eq!(s[2], 0.0);
    }
}
