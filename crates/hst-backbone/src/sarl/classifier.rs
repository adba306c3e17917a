//! The SARL classifier: a shared tanh projection of `[h_c ; f_c]` followed by one weight vector and bias per
//! class (the reference's "element-wise layer").

use burn::module::{Initializer, Param};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

use crate::linear::linear_rows;

/// Configuration of a [`PerClassLinear`] layer.
///
/// Reference: `Element_Wise_Layer(in_features = classes, out_features = dim)` in HCP-MLR-PL's
/// `model/Element_Wise_Layer.py`.
#[derive(Config, Debug)]
pub struct PerClassLinearConfig {
    /// Number of independent outputs (classes, or class pairs for the IST head).
    pub classes: usize,
    /// Input feature size of each class.
    pub dim: usize,
    /// Whether each class has a bias. Default: true.
    #[config(default = true)]
    pub bias: bool,
}

/// One weight vector and bias per class: `s_c = w_cᵀ x_c + b_c`.
///
/// Both are initialised from `U(-1/√dim, 1/√dim)`, as the reference does.
#[derive(Module, Debug)]
pub struct PerClassLinear<B: Backend> {
    /// Per-class weights, shape `[classes, dim]`.
    pub weight: Param<Tensor<B, 2>>,
    /// Per-class biases, shape `[classes]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl PerClassLinearConfig {
    /// Build the layer on `device`.
    ///
    /// # Panics
    /// If `classes` or `dim` is zero.
    pub fn init<B: Backend>(&self, device: &B::Device) -> PerClassLinear<B> {
        assert!(
            self.classes > 0 && self.dim > 0,
            "PerClassLinear needs classes > 0 and dim > 0. Got classes={}, dim={}",
            self.classes,
            self.dim
        );
        let bound = 1.0 / (self.dim as f64).sqrt();
        let init = Initializer::Uniform {
            min: -bound,
            max: bound,
        };
        PerClassLinear {
            weight: init.init([self.classes, self.dim], device),
            bias: self.bias.then(|| init.init([self.classes], device)),
        }
    }
}

impl<B: Backend> PerClassLinear<B> {
    /// Apply each class's weight vector to that class's feature.
    ///
    /// # Shapes
    /// - input: `[batch, classes, dim]`
    /// - output: `[batch, classes]`
    pub fn forward(&self, input: Tensor<B, 3>) -> Tensor<B, 2> {
        let [batch, classes, _dim] = input.dims();
        let weight = self.weight.val().unsqueeze::<3>(); // [1, classes, dim]
        let out = (input * weight).sum_dim(2).reshape([batch, classes]); // [batch, classes]
        match &self.bias {
            Some(bias) => out + bias.val().unsqueeze::<2>(), // [batch, classes]
            None => out,
        }
    }

    /// Number of classes (outputs).
    pub fn classes(&self) -> usize {
        self.weight.dims()[0]
    }
}

/// Configuration of the [`SarlClassifier`].
#[derive(Config, Debug)]
pub struct SarlClassifierConfig {
    /// Number of categories.
    pub classes: usize,
    /// Size of the GGNN state and of the semantic feature (D). The projection reads `2 * dim`.
    pub dim: usize,
    /// Size of the projected feature (D_o). Default: 1024.
    #[config(default = 1024)]
    pub output_dim: usize,
}

/// `o_c = tanh(W_o [h_c ; f_c] + b_o)` shared across classes, then `s_c = w_cᵀ o_c + b_c`.
///
/// Reference names: `fc` (the projection) and `classifiers` (the per-class layer).
#[derive(Module, Debug)]
pub struct SarlClassifier<B: Backend> {
    /// Shared projection `2·dim → output_dim` (with bias).
    pub projection: Linear<B>,
    /// Per-class weight vector and bias.
    pub per_class: PerClassLinear<B>,
}

impl SarlClassifierConfig {
    /// Build the classifier on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SarlClassifier<B> {
        SarlClassifier {
            projection: LinearConfig::new(2 * self.dim, self.output_dim).init(device),
            per_class: PerClassLinearConfig::new(self.classes, self.output_dim).init(device),
        }
    }
}

impl<B: Backend> SarlClassifier<B> {
    /// Per-class logits from the GGNN state and the semantic features.
    ///
    /// # Shapes
    /// - state: `[batch, classes, dim]` (GGNN output `h_c^(T)`)
    /// - semantic: `[batch, classes, dim]` (semantic decoupling output `f_c`)
    /// - output: `[batch, classes]`
    pub fn forward(&self, state: Tensor<B, 3>, semantic: Tensor<B, 3>) -> Tensor<B, 2> {
        let joint = Tensor::cat(vec![state, semantic], 2); // [batch, classes, 2 * dim]
        let projected = crate::kernels::tanh(linear_rows(&self.projection, joint)); // [batch, classes, output_dim]
        self.per_class.forward(projected) // [batch, classes]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TB = burn::backend::Flex;

    #[test]
    fn per_class_linear_hand_computed() {
        let device = Default::default();
        let mut layer = PerClassLinearConfig::new(2, 3).init::<TB>(&device);
        layer.weight = Param::from_tensor(Tensor::from_data(
            [[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]],
            &device,
        ));
        layer.bias = Some(Param::from_tensor(Tensor::from_data([0.5, -0.5], &device)));
        let input = Tensor::<TB, 3>::from_data(
            [
                [[1.0, 1.0, 1.0], [2.0, 3.0, 4.0]],
                [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]],
            ],
            &device,
        );
        let out = layer.forward(input).into_data().to_vec::<f32>().unwrap();
        assert_eq!(out, vec![6.5, 1.5, 2.5, -1.5]);
    }

    #[test]
    fn per_class_linear_init_bounds() {
        let device = Default::default();
        let layer = PerClassLinearConfig::new(7, 16).init::<TB>(&device);
        let w = layer.weight.val().into_data().to_vec::<f32>().unwrap();
        assert!(w.iter().all(|v| v.abs() <= 0.25 + 1e-7));
        assert!(w.iter().any(|v| v.abs() > 0.05), "weights look all zero");
    }

    #[test]
    fn classifier_shapes() {
        let device = Default::default();
        let classifier = SarlClassifierConfig::new(4, 6)
            .with_output_dim(5)
            .init::<TB>(&device);
        let h = Tensor::<TB, 3>::ones([2, 4, 6], &device);
        let f = Tensor::<TB, 3>::zeros([2, 4, 6], &device);
        assert_eq!(classifier.forward(h, f).dims(), [2, 4]);
    }
}
