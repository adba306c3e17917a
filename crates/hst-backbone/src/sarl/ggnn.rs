//! Gated graph neural network over the category nodes.

use crate::kernels;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

/// Configuration of [`Ggnn`].
#[derive(Config, Debug)]
pub struct GgnnConfig {
    /// Node state size (D). Reference: 1024.
    pub dim: usize,
    /// Propagation steps T. Default: 3.
    #[config(default = 3)]
    pub time_steps: usize,
}

/// Gated GNN (reference `GatedGNN`): starting from `h^(0) = f`, each of `T` steps computes the messages
/// `a_c = [Σ_j A_cj h_j ; Σ_j A_jc h_j]` (in-matrix `A`, out-matrix `Aᵀ`) and the GRU update
///
/// ```text
/// z = σ(W_z a + U_z h)        r = σ(W_r a + U_r h)
/// h̃ = tanh(W_h a + U_h (r ⊙ h))
/// h ← (1 − z) ⊙ h + z ⊙ h̃
/// ```
///
/// with separate linears (all with bias) on `a` (2D → D) and on `h` (D → D).
#[derive(Module, Debug)]
pub struct Ggnn<B: Backend> {
    /// `W_z` (reference `fc_1_w`).
    pub update_message: Linear<B>,
    /// `U_z` (reference `fc_1_u`).
    pub update_state: Linear<B>,
    /// `W_r` (reference `fc_2_w`).
    pub reset_message: Linear<B>,
    /// `U_r` (reference `fc_2_u`).
    pub reset_state: Linear<B>,
    /// `W_h` (reference `fc_3_w`).
    pub candidate_message: Linear<B>,
    /// `U_h` (reference `fc_3_u`).
    pub candidate_state: Linear<B>,
    /// Propagation steps T.
    pub time_steps: usize,
}

impl GgnnConfig {
    /// Build the GGNN on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Ggnn<B> {
        let message = || LinearConfig::new(2 * self.dim, self.dim).init(device);
        let state = || LinearConfig::new(self.dim, self.dim).init(device);
        Ggnn {
            update_message: message(),
            update_state: state(),
            reset_message: message(),
            reset_state: state(),
            candidate_message: message(),
            candidate_state: state(),
            time_steps: self.time_steps,
        }
    }
}

impl<B: Backend> Ggnn<B> {
    /// Run `time_steps` propagation steps.
    ///
    /// # Shapes
    /// - nodes: `[batch, classes, dim]` (initial states `h^(0)`)
    /// - adjacency: `[classes, classes]` (`A_ij`, row `i` receives from `j`)
    /// - output: `[batch, classes, dim]` (`h^(T)`)
    pub fn forward(&self, nodes: Tensor<B, 3>, adjacency: Tensor<B, 2>) -> Tensor<B, 3> {
        let [batch, classes, dim] = nodes.dims();
        if self.time_steps == 0 {
            return nodes;
        }
        let rows = batch * classes;
        // Feature-major states `hᵀ [dim, batch · classes]`: every linear is `Wᵀ hᵀ` (one GEMM), the gates'
        // slices of the fused GEMMs are blocks of whole rows (contiguous, so the element-wise GRU runs on
        // contiguous memory in both passes), and the message sums over the graph are one GEMM on the
        // `[dim · batch, classes]` view: `Σ_j A_cj h_j` is `hᵀ Aᵀ`, `Σ_j A_jc h_j` is `hᵀ A`.
        //
        // The three message linears read the same `a` and the first two state linears the same `h`: each
        // group runs as one GEMM on the stacked weights (`[3·dim, 2·dim]`, `[2·dim, dim]`).
        let (message_weight, message_bias) = stack_transposed(&[
            &self.update_message,
            &self.reset_message,
            &self.candidate_message,
        ]); // [3 * dim, 2 * dim], [3 * dim, 1]
        let (state_weight, state_bias) = stack_transposed(&[&self.update_state, &self.reset_state]); // [2 * dim, dim], [2 * dim, 1]
        let (candidate_weight, candidate_bias) = stack_transposed(&[&self.candidate_state]); // [dim, dim], [dim, 1]
        let in_matrix_t = adjacency.clone().transpose(); // [classes, classes]

        let mut h = transpose(nodes.reshape([rows, dim])); // [dim, rows]
        for _ in 0..self.time_steps {
            let flat = h.clone().reshape([dim * batch, classes]); // [dim * batch, classes]
            let incoming = flat
                .clone()
                .matmul(in_matrix_t.clone())
                .reshape([dim, rows]); // [dim, rows]
            let outgoing = flat.matmul(adjacency.clone()).reshape([dim, rows]); // [dim, rows]
            let a = Tensor::cat(vec![incoming, outgoing], 0); // [2 * dim, rows]
            let messages = affine(&message_weight, a, &message_bias); // [3 * dim, rows]
            let states = affine(&state_weight, h.clone(), &state_bias); // [2 * dim, rows]
            let mut messages = messages.chunk(3, 0).into_iter();
            let mut states = states.chunk(2, 0).into_iter();
            let (update_message, reset_message, candidate_message) = (
                messages.next().expect("3 chunks"),
                messages.next().expect("3 chunks"),
                messages.next().expect("3 chunks"),
            );
            let (update_state, reset_state) = (
                states.next().expect("2 chunks"),
                states.next().expect("2 chunks"),
            );
            // The gates' σ and tanh through the backend extension (vectorised on flex).
            let z = kernels::sigmoid(update_message + update_state); // [dim, rows]
            let r = kernels::sigmoid(reset_message + reset_state); // [dim, rows]
            let candidate = kernels::tanh(
                candidate_message + affine(&candidate_weight, r * h.clone(), &candidate_bias),
            ); // [dim, rows]
            h = (z.clone().neg() + 1.0) * h + z * candidate; // [dim, rows]
        }
        transpose(h).reshape([batch, classes, dim])
    }
}

/// `x.transpose()`, as a reshape when a dimension has size 1 (the same values in the same order): burn 0.21's
/// WGPU loses values in a swap of a unit dimension followed by a reshape (see `kernels::swap_dims_1_2`).
fn transpose<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let [a, b] = x.dims();
    if a == 1 || b == 1 {
        x.reshape([b, a])
    } else {
        x.transpose()
    }
}

/// `weight · x + bias` on feature-major columns.
///
/// # Shapes
/// - weight: `[out, in]`, x: `[in, rows]`, bias: `[out, 1]`
/// - output: `[out, rows]`
fn affine<B: Backend>(
    weight: &Tensor<B, 2>,
    x: Tensor<B, 2>,
    bias: &Option<Tensor<B, 2>>,
) -> Tensor<B, 2> {
    let out = weight.clone().matmul(x);
    match bias {
        Some(bias) => out + bias.clone(),
        None => out,
    }
}

/// The transposed weights `[Σ out, in]` and biases `[Σ out, 1]` of linears that read the same input, stacked
/// (burn stores a linear's weight as `[in, out]`).
fn stack_transposed<B: Backend>(layers: &[&Linear<B>]) -> (Tensor<B, 2>, Option<Tensor<B, 2>>) {
    let weight = Tensor::cat(
        layers.iter().map(|l| l.weight.val().transpose()).collect(),
        0,
    );
    if layers.iter().all(|l| l.bias.is_none()) {
        return (weight, None);
    }
    let biases = layers
        .iter()
        .map(|l| match &l.bias {
            Some(b) => b.val(),
            None => Tensor::zeros([l.weight.dims()[1]], &l.weight.device()),
        })
        .collect();
    (weight, Some(Tensor::cat(biases, 0).unsqueeze_dim::<2>(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::sigmoid;
    use burn::tensor::Tolerance;

    type TB = burn::backend::Flex;

    #[test]
    fn zero_steps_is_identity_and_shapes_hold() {
        let device = Default::default();
        let nodes = Tensor::<TB, 3>::random(
            [2, 3, 4],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let adjacency = Tensor::<TB, 2>::eye(3, &device);
        let g0 = GgnnConfig::new(4).with_time_steps(0).init::<TB>(&device);
        g0.forward(nodes.clone(), adjacency.clone())
            .into_data()
            .assert_eq(&nodes.clone().into_data(), true);
        let g3 = GgnnConfig::new(4).init::<TB>(&device);
        assert_eq!(g3.forward(nodes.clone(), adjacency).dims(), [2, 3, 4]);
        // One node of one image (unit dimensions, where the transposes are reshapes) equals the same node
        // run inside a batch of two.
        let one = nodes.slice([0..1, 0..1, 0..4]); // [1, 1, 4]
        let self_loop = Tensor::<TB, 2>::ones([1, 1], &device);
        let alone = g3.forward(one.clone(), self_loop.clone());
        let in_batch = g3
            .forward(Tensor::cat(vec![one.clone(), one], 0), self_loop)
            .slice([0..1, 0..1, 0..4]);
        alone
            .into_data()
            .assert_approx_eq::<f32>(&in_batch.into_data(), Tolerance::rel_abs(1e-6, 1e-7));
    }

    /// One step computed by hand with explicit per-node sums, against the batched forward.
    #[test]
    fn one_step_matches_explicit_sums() {
        let device = Default::default();
        TB::seed(&device, 3);
        let g = GgnnConfig::new(2).with_time_steps(1).init::<TB>(&device);
        let nodes = Tensor::<TB, 3>::random(
            [1, 3, 2],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let adj = Tensor::<TB, 2>::from_data(
            [[1.0, 0.5, 0.0], [0.2, 1.0, 0.3], [0.0, 0.7, 1.0]],
            &device,
        );
        let out = g.forward(nodes.clone(), adj.clone());

        let a_host = adj.into_data().to_vec::<f32>().unwrap();
        let h_host = nodes.clone().into_data().to_vec::<f32>().unwrap();
        let mut messages = vec![0f32; 3 * 4];
        for c in 0..3 {
            for j in 0..3 {
                for k in 0..2 {
                    messages[c * 4 + k] += a_host[c * 3 + j] * h_host[j * 2 + k];
                    messages[c * 4 + 2 + k] += a_host[j * 3 + c] * h_host[j * 2 + k];
                }
            }
        }
        let a = Tensor::<TB, 1>::from_floats(messages.as_slice(), &device).reshape([1, 3, 4]);
        let h = nodes;
        let z = sigmoid(g.update_message.forward(a.clone()) + g.update_state.forward(h.clone()));
        let r = sigmoid(g.reset_message.forward(a.clone()) + g.reset_state.forward(h.clone()));
        let cand =
            (g.candidate_message.forward(a) + g.candidate_state.forward(r * h.clone())).tanh();
        let expected = (z.clone().neg() + 1.0) * h + z * cand;
        out.into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::rel_abs(1e-5, 1e-6));
    }
}
