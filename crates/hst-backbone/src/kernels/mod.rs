//! Fused kernels for HST's hot spots, through Burn's backend-extension mechanism.
//!
//! [`FusedKernels`] is a backend extension trait (the pattern of Burn's "custom kernel" guide): each
//! method has a default body composed of Burn's own tensor operations, a backend may override it with a
//! faster kernel, and `Autodiff<B>` implements it with a custom backward step that calls `B`'s backward
//! method, so the gradient of a fused kernel is fused too.
//!
//! Implemented here (feature `flex`, on by default in the `hst` package): burn-flex, with the CPU kernels
//! of [`cpu`], and `Autodiff<Flex>`. The model code stays generic over `B: Backend` (no new trait bound on
//! the crates' public types): it calls the free functions below ([`tanh_bilinear_score`]), which run the
//! fused implementation when `B` is one of the implementing backends and the composed Burn operations
//! (the same arithmetic, unfused) on every other backend: WGPU, CUDA and ndarray run the Burn operations
//! they ran before.
//!
//! [`pointwise_conv2d`] is not a kernel but a layout choice for every backend: a 1×1 convolution as one
//! batched matmul on views.
//!
//! Each kernel is tested against the composed Burn version, forward and gradients, to 1e-4.

#[cfg(feature = "flex")]
pub mod cpu;
#[cfg(feature = "flex")]
mod flex;

use std::any::Any;

use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::prelude::*;
use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps, PadMode, PaddedConvOptions};
use burn::tensor::{TensorMetadata, TensorPrimitive};

/// An element-wise activation of [`FusedKernels::activation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Activation {
    /// `tanh(x)`.
    Tanh,
    /// The logistic sigmoid `σ(x) = 1 / (1 + e^(−x))`.
    Sigmoid,
}

/// Backend extension: fused versions of HST's hot spots. Every method has a default composed of Burn's
/// tensor operations.
pub trait FusedKernels: Backend {
    /// `out[n, c] = Σ_k weight[k] · tanh(image[n, k] · word[c, k])`: the attention logits of semantic
    /// decoupling (`w4ᵀ tanh(image ⊙ word)` with `W3` folded into `weight`), without the
    /// `[rows, classes, dim]` tensor the composed version materialises.
    ///
    /// # Shapes
    /// - `image`: `[rows, dim]`, `word`: `[classes, dim]`, `weight`: `[dim]`
    /// - output: `[rows, classes]`
    fn tanh_bilinear_score(
        image: FloatTensor<Self>,
        word: FloatTensor<Self>,
        weight: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        tanh_bilinear_score_composed::<Self>(float(image), float(word), float(weight))
            .into_primitive()
            .tensor()
    }

    /// The gradients of [`tanh_bilinear_score`](Self::tanh_bilinear_score) for the upstream gradient
    /// `grad` `[rows, classes]`: `(∂image [rows, dim], ∂word [classes, dim], ∂weight [dim])`.
    fn tanh_bilinear_score_backward(
        image: FloatTensor<Self>,
        word: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        let (image, word, weight) = tanh_bilinear_score_backward_composed::<Self>(
            float(image),
            float(word),
            float(weight),
            float(grad),
        );
        [
            image.into_primitive().tensor(),
            word.into_primitive().tensor(),
            weight.into_primitive().tensor(),
        ]
    }

    /// Depthwise 2-D convolution without bias (groups = channels, dilation 1) with zero padding
    /// `[top, bottom, left, right]`, which may be asymmetric (TensorFlow "same").
    ///
    /// # Shapes
    /// - `x`: `[batch, channels, h, w]`, `weight`: `[channels, 1, kh, kw]`
    /// - output: `[batch, channels, oh, ow]`
    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 4],
    ) -> FloatTensor<Self> {
        depthwise_conv2d_composed::<Self>(float(x), float(weight), stride, padding)
            .into_primitive()
            .tensor()
    }

    /// The gradients of [`depthwise_conv2d`](Self::depthwise_conv2d) for the upstream gradient `grad`
    /// `[batch, channels, oh, ow]`: `(∂x [batch, channels, h, w], ∂weight [channels, 1, kh, kw])`, from
    /// Burn's own convolution backward on the padded input.
    fn depthwise_conv2d_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 4],
    ) -> [FloatTensor<Self>; 2] {
        depthwise_conv2d_backward_composed::<Self>(x, weight, grad, stride, padding)
    }

    /// `kind(x)` element by element (default: Burn's `tanh` / `sigmoid`).
    fn activation(x: FloatTensor<Self>, kind: Activation) -> FloatTensor<Self> {
        match kind {
            Activation::Tanh => Self::float_tanh(x),
            Activation::Sigmoid => Self::sigmoid(x),
        }
    }

    /// `grad · kind'(x)` element by element, for the upstream gradient `grad` of
    /// [`activation`](Self::activation) (default: composed of Burn's operations).
    fn activation_backward(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        kind: Activation,
    ) -> FloatTensor<Self> {
        let y = Self::activation(x, kind);
        let slope = match kind {
            // 1 − y²
            Activation::Tanh => {
                Self::float_add_scalar(Self::float_neg(Self::float_mul(y.clone(), y)), 1.0.into())
            }
            // y · (1 − y)
            Activation::Sigmoid => Self::float_mul(
                y.clone(),
                Self::float_add_scalar(Self::float_neg(y), 1.0.into()),
            ),
        };
        Self::float_mul(grad, slope)
    }

    /// A dense 2-D convolution (one group, no bias; default: Burn's own kernel), recorded on `Autodiff<B>`
    /// with a backward step that takes the input gradient from
    /// [`dense_conv2d_x_grad`](Self::dense_conv2d_x_grad) and the weight gradient from
    /// [`dense_conv2d_weight_grad`](Self::dense_conv2d_weight_grad).
    ///
    /// # Shapes
    /// - `x`: `[batch, in, h, w]`, `weight`: `[out, in, kh, kw]`
    /// - output: `[batch, out, oh, ow]`
    fn dense_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        <Self as ModuleOps<Self>>::conv2d(x, weight, None, options)
    }

    /// The input gradient of [`dense_conv2d`](Self::dense_conv2d) for the upstream gradient `grad`
    /// `[batch, out, oh, ow]` (default: Burn's `conv2d_x_backward`).
    ///
    /// # Shapes
    /// - output: `[batch, in, h, w]`
    fn dense_conv2d_x_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        <Self as ModuleOps<Self>>::conv2d_x_backward(x, weight, grad, options)
    }

    /// The weight gradient of [`dense_conv2d`](Self::dense_conv2d) for the upstream gradient `grad`
    /// `[batch, out, oh, ow]` (default: Burn's `conv2d_weight_backward`).
    ///
    /// # Shapes
    /// - output: `[out, in, kh, kw]`
    fn dense_conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        <Self as ModuleOps<Self>>::conv2d_weight_backward(x, weight, grad, options)
    }
}

fn float<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// `tanh(image[n, k] · word[c, k])`, materialised.
///
/// # Shapes
/// - `image`: `[rows, dim]`, `word`: `[classes, dim]`
/// - output: `[rows, classes, dim]`
fn tanh_products<B: Backend>(image: Tensor<B, 2>, word: Tensor<B, 2>) -> Tensor<B, 3> {
    (image.unsqueeze_dim::<3>(1) * word.unsqueeze_dim::<3>(0)).tanh()
}

/// [`FusedKernels::tanh_bilinear_score`] composed of Burn operations (differentiable on any backend):
/// `tanh(image ⊗ word)` materialised as `[rows · classes, dim]`, then one matmul with `weight`.
///
/// # Shapes
/// - `image`: `[rows, dim]`, `word`: `[classes, dim]`, `weight`: `[dim]`
/// - output: `[rows, classes]`
pub fn tanh_bilinear_score_composed<B: Backend>(
    image: Tensor<B, 2>,
    word: Tensor<B, 2>,
    weight: Tensor<B, 1>,
) -> Tensor<B, 2> {
    let [rows, dim] = image.dims();
    let [classes, _] = word.dims();
    tanh_products(image, word)
        .reshape([rows * classes, dim])
        .matmul(weight.reshape([dim, 1]))
        .reshape([rows, classes])
}

/// The gradients of [`tanh_bilinear_score_composed`] for the upstream gradient `grad`, composed of Burn
/// operations: with `t = tanh(image ⊗ word)` and `s = grad · weight · (1 − t²)`, `∂image = Σ_c s · word`,
/// `∂word = Σ_n s · image`, `∂weight = Σ_{n,c} grad · t`.
///
/// # Shapes
/// - `image`: `[rows, dim]`, `word`: `[classes, dim]`, `weight`: `[dim]`, `grad`: `[rows, classes]`
/// - output: (`[rows, dim]`, `[classes, dim]`, `[dim]`)
pub fn tanh_bilinear_score_backward_composed<B: Backend>(
    image: Tensor<B, 2>,
    word: Tensor<B, 2>,
    weight: Tensor<B, 1>,
    grad: Tensor<B, 2>,
) -> (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 1>) {
    let [rows, dim] = image.dims();
    let [classes, _] = word.dims();
    let t = tanh_products(image.clone(), word.clone()); // [rows, classes, dim]
    let g = grad.reshape([rows, classes, 1]); // [rows, classes, 1]
    let grad_weight = (t.clone() * g.clone()).sum_dim(1).sum_dim(0).reshape([dim]);
    let s = (t.square().neg() + 1.0) * g * weight.reshape([1, 1, dim]); // [rows, classes, dim]
    let grad_image = (s.clone() * word.unsqueeze_dim::<3>(0))
        .sum_dim(1)
        .reshape([rows, dim]);
    let grad_word = (s * image.unsqueeze_dim::<3>(1))
        .sum_dim(0)
        .reshape([classes, dim]);
    (grad_image, grad_word, grad_weight)
}

/// [`FusedKernels::depthwise_conv2d`] composed of Burn operations: Burn's `conv2d` with `groups = channels`
/// and asymmetric padding (an explicit zero pad, then a convolution without padding, as `burn::nn::Conv2d`
/// runs TF "same").
///
/// # Shapes
/// - `x`: `[batch, channels, h, w]`, `weight`: `[channels, 1, kh, kw]`
/// - output: `[batch, channels, oh, ow]`
pub fn depthwise_conv2d_composed<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    stride: [usize; 2],
    padding: [usize; 4],
) -> Tensor<B, 4> {
    let channels = x.dims()[1];
    let [top, bottom, left, right] = padding;
    let options =
        PaddedConvOptions::asymmetric(stride, [top, left], [bottom, right], [1, 1], channels);
    burn::tensor::module::conv2d(x, weight, None, options)
}

/// [`FusedKernels::depthwise_conv2d_backward`] from Burn's own convolution backward
/// (`conv2d_x_backward`, `conv2d_weight_backward`) on the zero-padded input; `∂x` is cropped back.
pub fn depthwise_conv2d_backward_composed<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    grad: FloatTensor<B>,
    stride: [usize; 2],
    padding: [usize; 4],
) -> [FloatTensor<B>; 2] {
    let [batch, channels, h, w] = x.shape().dims();
    let [top, bottom, left, right] = padding;
    let padded = float::<B, 4>(x)
        .pad((left, right, top, bottom), PadMode::Constant(0.0))
        .into_primitive()
        .tensor();
    let options = ConvOptions::new(stride, [0, 0], [1, 1], channels);
    let grad_x = B::conv2d_x_backward(
        padded.clone(),
        weight.clone(),
        grad.clone(),
        options.clone(),
    );
    let grad_w = B::conv2d_weight_backward(padded, weight, grad, options);
    let grad_x = float::<B, 4>(grad_x).slice([0..batch, 0..channels, top..top + h, left..left + w]);
    [grad_x.into_primitive().tensor(), grad_w]
}

/// TensorFlow "same" padding of one dimension: `(before, after)` with the odd one after.
fn same_padding(size: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let total = ((size.div_ceil(stride)).saturating_sub(1) * stride + kernel).saturating_sub(size);
    (total / 2, total - total / 2)
}

/// Whether `conv` is a depthwise convolution [`depthwise_conv2d`] can run: groups = in = out channels,
/// dilation 1, no bias.
pub fn is_depthwise<B: Backend>(conv: &Conv2d<B>) -> bool {
    let [out, per_group, _, _] = conv.weight.dims();
    conv.groups == out && per_group == 1 && conv.dilation == [1, 1] && conv.bias.is_none()
}

/// `conv.forward(x)` for a depthwise convolution ([`is_depthwise`]), through
/// [`FusedKernels::depthwise_conv2d`] where the backend has it (see the [module docs](self)); any other
/// convolution, and every other backend, runs `conv.forward`.
///
/// # Shapes
/// - `x`: `[batch, channels, h, w]`
/// - output: `[batch, channels, oh, ow]`
pub fn depthwise_conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    let [kh, kw] = conv.kernel_size;
    let padding = match &conv.padding {
        PaddingConfig2d::Same => {
            let (top, bottom) = same_padding(h, kh, conv.stride[0]);
            let (left, right) = same_padding(w, kw, conv.stride[1]);
            [top, bottom, left, right]
        }
        PaddingConfig2d::Valid => [0; 4],
        PaddingConfig2d::Explicit(t, l, b, r) => [*t, *b, *l, *r],
    };
    if !is_depthwise(conv) {
        return conv.forward(x);
    }
    let inputs = [
        x.into_primitive().tensor(),
        conv.weight.val().into_primitive().tensor(),
    ];
    #[cfg(feature = "flex")]
    let inputs = match flex::depthwise_conv2d::<B>(inputs, conv.stride, padding) {
        Ok(out) => return float(out),
        Err(inputs) => inputs,
    };
    let [x, weight] = inputs;
    depthwise_conv2d_composed(float(x), float(weight), conv.stride, padding)
}

/// The options of `conv` when it is a dense convolution [`dense_conv2d`] runs: one group, no bias, zero
/// padding the same on both sides (explicit or none). `None` otherwise.
pub fn dense_options<B: Backend>(conv: &Conv2d<B>) -> Option<ConvOptions<2>> {
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [0, 0],
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            [top, left]
        }
        _ => return None,
    };
    (conv.groups == 1 && conv.bias.is_none())
        .then(|| ConvOptions::new(conv.stride, padding, conv.dilation, 1))
}

/// `conv.forward(x)` for a dense convolution ([`dense_options`]) through [`FusedKernels::dense_conv2d`]
/// where the backend has it (see the [module docs](self)): the same forward kernel, and a weight gradient
/// computed as one GEMM on the im2col matrix. Any other convolution, and every other backend, runs
/// `conv.forward`.
///
/// # Shapes
/// - `x`: `[batch, in, h, w]`
/// - output: `[batch, out, oh, ow]`
pub fn dense_conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    if let Some(options) = dense_options(conv) {
        let inputs = [
            x.into_primitive().tensor(),
            conv.weight.val().into_primitive().tensor(),
        ];
        return match flex::dense_conv2d::<B>(inputs, options) {
            Ok(out) => float(out),
            Err([x, _]) => conv.forward(float(x)),
        };
    }
    conv.forward(x)
}

/// `tanh(x)` through [`FusedKernels::activation`] where the backend has it (on flex: a vectorised rational
/// approximation, max abs error ≈ 3e-7, instead of libm's scalar `tanhf`), else Burn's `tanh`.
pub fn tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    activation(x, Activation::Tanh)
}

/// The logistic sigmoid through [`FusedKernels::activation`] where the backend has it (on flex:
/// `(1 + tanh(x / 2)) / 2` with the vectorised `tanh`), else Burn's `sigmoid`.
pub fn sigmoid<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    activation(x, Activation::Sigmoid)
}

fn activation<B: Backend, const D: usize>(x: Tensor<B, D>, kind: Activation) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    {
        return match flex::activation::<B>([x.into_primitive().tensor()], kind) {
            Ok(out) => float(out),
            Err([x]) => composed_activation(float(x), kind),
        };
    }
    #[allow(unreachable_code)]
    composed_activation(x, kind)
}

fn composed_activation<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    kind: Activation,
) -> Tensor<B, D> {
    match kind {
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => burn::tensor::activation::sigmoid(x),
    }
}

/// Whether `conv` is a pointwise convolution [`pointwise_conv2d`] runs as a matmul: 1×1 kernel, any stride,
/// no padding, dilation 1, one group.
pub fn is_pointwise<B: Backend>(conv: &Conv2d<B>) -> bool {
    let no_padding = match conv.padding {
        PaddingConfig2d::Valid | PaddingConfig2d::Explicit(0, 0, 0, 0) => true,
        PaddingConfig2d::Same => conv.stride == [1, 1],
        _ => false,
    };
    conv.kernel_size == [1, 1] && conv.dilation == [1, 1] && conv.groups == 1 && no_padding
}

/// `conv.forward(x)` for a pointwise convolution ([`is_pointwise`]) as one batched matmul on views:
/// `weight [1, out, in] × x [batch, in, h·w]`, after keeping every `stride`-th row and column for a
/// strided one (ResNet's downsample shortcut). No im2col and no layout change forward, and its backward is
/// two matmuls (plus a strided copy back for a strided one); every other convolution runs `conv.forward`.
///
/// The strided form also works around a burn 0.21 WGPU bug: the input gradient of its 1×1 stride-2
/// convolution comes out all zeros (seen on lavapipe and on an H100; `tests/wgpu_smoke.rs`).
///
/// On every backend but flex, the images run as one 2-D matmul side by side, `weight [out, in] × x [in,
/// batch · h·w]` (two transposed copies of the activations), with `batch · h·w` zero-padded to the next
/// multiple of 16 when it is an odd multiple of 8, to keep clear of two burn 0.21 (CubeCL 0.10) matmul bugs
/// seen on WGPU (lavapipe), both of one kernel family and both checked against a float64 product:
/// - a *batched* matmul with one side 8 wide is wrong in every image but the last (`[2, 8, 8] × [2, 8, 1024]`,
///   `[2, 8, 24] × [2, 24, 640]`: 40–70 % relative error; one image, or the same product in 2-D, is right).
///   EfficientNet-Lite at 1/8 width hits it.
/// - a matmul whose right-hand side is transposed (what the weight gradient `∂y × xᵀ` reads) is wrong
///   when the reduced dimension is an odd multiple of 8 (`[16, 392] × [392, 512]ᵀ-layout`: 15 %; 384 and
///   400 are right). Batch 2 of 14×14 maps has 392 columns.
///
/// `pointwise_conv_matches_flex` in `tests/wgpu_smoke.rs` runs both shapes. Flex keeps the batched matmul
/// on views, its faster form.
///
/// # Shapes
/// - `x`: `[batch, in, h, w]`
/// - output: `[batch, out, ⌈h / stride⌉, ⌈w / stride⌉]`
pub fn pointwise_conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    if !is_pointwise(conv) {
        return conv.forward(x);
    }
    let x = subsample(x, conv.stride);
    let [batch, channels_in, h, w] = x.dims();
    let [channels_out, _, _, _] = conv.weight.dims();
    let x = x.reshape([batch, channels_in, h * w]); // [batch, in, h * w]
    let mut out = if runs_fused_kernels::<B>() {
        let weight = conv.weight.val().reshape([1, channels_out, channels_in]); // [1, out, in]
        weight.matmul(x) // [batch, out, h * w]
    } else {
        side_by_side_matmul(conv.weight.val().reshape([channels_out, channels_in]), x)
    };
    if let Some(bias) = &conv.bias {
        out = out + bias.val().reshape([1, channels_out, 1]);
    }
    out.reshape([batch, channels_out, h, w])
}

/// `weight × x[i]` for every image `i` as one 2-D matmul over the images side by side,
/// `[out, in] × [in, batch · n]`, the columns zero-padded by 8 when `batch · n` is an odd multiple of 8
/// (see [`pointwise_conv2d`]).
///
/// # Shapes
/// - `weight`: `[out, in]`, `x`: `[batch, in, n]`
/// - output: `[batch, out, n]`
fn side_by_side_matmul<B: Backend>(weight: Tensor<B, 2>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [batch, channels_in, n] = x.dims();
    let channels_out = weight.dims()[0];
    let columns = batch * n;
    let mut x = x.swap_dims(0, 1).reshape([channels_in, columns]); // [in, batch * n]
    let padding = if columns % 16 == 8 { 8 } else { 0 };
    if padding > 0 {
        let zeros = Tensor::zeros([channels_in, padding], &x.device());
        x = Tensor::cat(vec![x, zeros], 1); // [in, batch * n + 8]
    }
    let mut out = weight.matmul(x); // [out, batch * n (+ 8)]
    if padding > 0 {
        out = out.slice([0..channels_out, 0..columns]);
    }
    out.reshape([channels_out, batch, n]).swap_dims(0, 1) // [batch, out, n]
}

/// Rows and columns `0, s, 2s, …` of `x` (what a 1×1 convolution with stride `s` and no padding reads):
/// zero-padded to a multiple of the stride, split into `[h / s, s]` and `[w / s, s]` and sliced at 0, so
/// only reshapes and plain slices are used (no stepped slice).
///
/// # Shapes
/// - `x`: `[batch, channels, h, w]`
/// - output: `[batch, channels, ⌈h / sh⌉, ⌈w / sw⌉]`
fn subsample<B: Backend>(x: Tensor<B, 4>, [sh, sw]: [usize; 2]) -> Tensor<B, 4> {
    if sh == 1 && sw == 1 {
        return x;
    }
    let [batch, channels, h, w] = x.dims();
    let (oh, ow) = (h.div_ceil(sh), w.div_ceil(sw));
    let x = if oh * sh != h || ow * sw != w {
        x.pad(
            (0, ow * sw - w, 0, oh * sh - h),
            burn::tensor::ops::PadMode::Constant(0.0),
        )
    } else {
        x
    };
    x.reshape([batch * channels, oh, sh, ow, sw])
        .slice([0..batch * channels, 0..oh, 0..1, 0..ow, 0..1])
        .reshape([batch, channels, oh, ow])
}

/// `x.swap_dims(1, 2)`, as a reshape when dimension 1 or 2 has size 1 (the same values in the same order).
/// Works around a burn 0.21 WGPU bug: a swap of a unit dimension followed by a reshape keeps only the first
/// values (`tests/wgpu_smoke.rs`), which SARL's attention pooling hits on a 1×1 feature map.
///
/// # Shapes
/// - `x`: `[a, b, c]`
/// - output: `[a, c, b]`
pub fn swap_dims_1_2<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [a, b, c] = x.dims();
    if b == 1 || c == 1 {
        x.reshape([a, c, b])
    } else {
        x.swap_dims(1, 2)
    }
}

/// Move `value` into type `T` when it already is a `T` (a type-checked, copy-free identity cast).
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
fn cast<A: 'static, T: 'static>(value: A) -> Result<T, A> {
    let mut slot = Some(value);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<T>>() {
        Some(target) => Ok(target.take().expect("filled just above")),
        None => Err(slot.expect("not taken")),
    }
}

/// Run `f` on backend `K` when `B` is `K` (else give the inputs back), giving the inputs and taking the output back.
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
fn on_backend<B: Backend, K: Backend, const N: usize>(
    inputs: [FloatTensor<B>; N],
    f: impl FnOnce([FloatTensor<K>; N]) -> FloatTensor<K>,
) -> Result<FloatTensor<B>, [FloatTensor<B>; N]> {
    let inputs = cast::<_, [FloatTensor<K>; N]>(inputs)?;
    Ok(cast::<FloatTensor<K>, FloatTensor<B>>(f(inputs))
        .unwrap_or_else(|_| unreachable!("B is K: the inputs were cast")))
}

/// Whether `B` is a backend with the fused kernels of this module (flex, or flex under autodiff).
fn runs_fused_kernels<B: Backend>() -> bool {
    #[cfg(feature = "flex")]
    if flex::is_fused::<B>() {
        return true;
    }
    false
}

/// Which implementation [`tanh_bilinear_score`] runs on backend `B`: `"fused"` or `"composed"`.
pub fn tanh_bilinear_score_implementation<B: Backend>() -> &'static str {
    if runs_fused_kernels::<B>() {
        return "fused";
    }
    "composed"
}

/// The attention logits of semantic decoupling, `out[n, c] = Σ_k weight[k] · tanh(image[n, k] · word[c, k])`:
/// the fused kernel of [`FusedKernels`] where `B` has one (see the [module docs](self)), else
/// [`tanh_bilinear_score_composed`].
///
/// # Shapes
/// - `image`: `[rows, dim]`, `word`: `[classes, dim]`, `weight`: `[dim]`
/// - output: `[rows, classes]`
pub fn tanh_bilinear_score<B: Backend>(
    image: Tensor<B, 2>,
    word: Tensor<B, 2>,
    weight: Tensor<B, 1>,
) -> Tensor<B, 2> {
    let inputs = [
        image.into_primitive().tensor(),
        word.into_primitive().tensor(),
        weight.into_primitive().tensor(),
    ];
    #[cfg(feature = "flex")]
    let inputs = match flex::tanh_bilinear_score::<B>(inputs) {
        Ok(out) => return float(out),
        Err(inputs) => inputs,
    };
    let [image, word, weight] = inputs;
    tanh_bilinear_score_composed::<B>(float(image), float(word), float(weight))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};

    type TB = burn::backend::Flex;
    type AB = burn::backend::Autodiff<TB>;

    #[test]
    fn cast_is_an_identity_on_the_same_type_only() {
        assert_eq!(cast::<u32, u32>(7), Ok(7));
        assert_eq!(cast::<u32, i32>(7), Err(7));
    }

    #[cfg(feature = "flex")]
    #[test]
    fn flex_and_its_autodiff_run_the_fused_kernel() {
        assert_eq!(tanh_bilinear_score_implementation::<TB>(), "fused");
        assert_eq!(tanh_bilinear_score_implementation::<AB>(), "fused");
    }

    /// The fused kernel (forward and every gradient, through a softmax so the upstream gradient is not
    /// uniform) against Burn's composed operations, to 1e-4.
    #[test]
    fn fused_matches_burn_forward_and_gradients() {
        let device = Default::default();
        for (rows, classes, dim) in [(98usize, 20usize, 64usize), (13, 3, 37)] {
            let image =
                Tensor::<AB, 2>::random([rows, dim], Distribution::Normal(0.0, 1.5), &device)
                    .require_grad();
            let word =
                Tensor::<AB, 2>::random([classes, dim], Distribution::Normal(0.0, 1.0), &device)
                    .require_grad();
            let weight = Tensor::<AB, 1>::random([dim], Distribution::Normal(0.0, 1.0), &device)
                .require_grad();
            let upstream = Tensor::<AB, 2>::random([rows, classes], Distribution::Default, &device);
            let run = |f: &dyn Fn(Tensor<AB, 2>, Tensor<AB, 2>, Tensor<AB, 1>) -> Tensor<AB, 2>| {
                let out = f(image.clone(), word.clone(), weight.clone());
                let loss =
                    (burn::tensor::activation::softmax(out.clone(), 1) * upstream.clone()).sum();
                let grads = loss.backward();
                (
                    out.inner(),
                    image.grad(&grads).unwrap(),
                    word.grad(&grads).unwrap(),
                    weight.grad(&grads).unwrap(),
                )
            };
            let fused = run(&|i, w, v| tanh_bilinear_score(i, w, v));
            let composed = run(&|i, w, v| tanh_bilinear_score_composed(i, w, v));
            let tol = Tolerance::<f32>::relative(1e-4).set_absolute(1e-5);
            fused
                .0
                .into_data()
                .assert_approx_eq::<f32>(&composed.0.into_data(), tol);
            fused
                .1
                .into_data()
                .assert_approx_eq::<f32>(&composed.1.into_data(), tol);
            fused
                .2
                .into_data()
                .assert_approx_eq::<f32>(&composed.2.into_data(), tol);
            fused
                .3
                .into_data()
                .assert_approx_eq::<f32>(&composed.3.into_data(), tol);
        }
    }

    /// The composed backward (the trait's default, what a backend without its own kernel inherits) against
    /// autodiff through the composed forward.
    #[test]
    fn composed_backward_matches_autodiff_of_the_composed_forward() {
        let device = Default::default();
        let (rows, classes, dim) = (11usize, 4usize, 9usize);
        let normal = Distribution::Normal(0.0, 1.0);
        let image = Tensor::<AB, 2>::random([rows, dim], normal, &device).require_grad();
        let word = Tensor::<AB, 2>::random([classes, dim], normal, &device).require_grad();
        let weight = Tensor::<AB, 1>::random([dim], normal, &device).require_grad();
        let upstream = Tensor::<AB, 2>::random([rows, classes], Distribution::Default, &device);
        let grads = (tanh_bilinear_score_composed(image.clone(), word.clone(), weight.clone())
            * upstream.clone())
        .sum()
        .backward();
        let (gi, gw, gv) = tanh_bilinear_score_backward_composed::<TB>(
            image.clone().inner(),
            word.clone().inner(),
            weight.clone().inner(),
            upstream.inner(),
        );
        let tol = Tolerance::<f32>::relative(1e-4).set_absolute(1e-5);
        gi.into_data()
            .assert_approx_eq::<f32>(&image.grad(&grads).unwrap().into_data(), tol);
        gw.into_data()
            .assert_approx_eq::<f32>(&word.grad(&grads).unwrap().into_data(), tol);
        gv.into_data()
            .assert_approx_eq::<f32>(&weight.grad(&grads).unwrap().into_data(), tol);
    }

    /// The fused depthwise convolution (forward, ∂x, ∂weight) against Burn's `Conv2d` with TF "same"
    /// padding (stride 1 and 2, kernels 3 and 5, asymmetric padding), to 1e-4.
    #[test]
    fn depthwise_matches_burn_conv2d_forward_and_gradients() {
        use burn::nn::conv::Conv2dConfig;
        let device = Default::default();
        for (size, kernel, stride) in [(7usize, 3usize, 1usize), (14, 5, 2), (9, 3, 2), (8, 5, 1)] {
            let channels = 6;
            let conv = Conv2dConfig::new([channels, channels], [kernel, kernel])
                .with_stride([stride, stride])
                .with_groups(channels)
                .with_padding(PaddingConfig2d::Same)
                .with_bias(false)
                .init::<AB>(&device);
            assert!(is_depthwise(&conv));
            let x = Tensor::<AB, 4>::random(
                [3, channels, size, size],
                Distribution::Normal(0.0, 1.0),
                &device,
            )
            .require_grad();
            let ours = depthwise_conv2d(&conv, x.clone());
            let theirs = conv.forward(x.clone());
            assert_eq!(ours.dims(), theirs.dims());
            let upstream = Tensor::<AB, 4>::random(ours.dims(), Distribution::Default, &device);
            let g1 = (ours.clone() * upstream.clone()).sum().backward();
            let g2 = (theirs.clone() * upstream).sum().backward();
            let tol = Tolerance::<f32>::relative(1e-4).set_absolute(1e-5);
            ours.inner()
                .into_data()
                .assert_approx_eq::<f32>(&theirs.clone().inner().into_data(), tol);
            x.grad(&g1)
                .unwrap()
                .into_data()
                .assert_approx_eq::<f32>(&x.grad(&g2).unwrap().into_data(), tol);
            conv.weight
                .grad(&g1)
                .unwrap()
                .into_data()
                .assert_approx_eq::<f32>(&conv.weight.grad(&g2).unwrap().into_data(), tol);
            // The composed backward (what other backends inherit) agrees too.
            let [cx, cw] = depthwise_conv2d_backward_composed::<TB>(
                x.clone().inner().into_primitive().tensor(),
                conv.weight.val().inner().into_primitive().tensor(),
                Tensor::<TB, 4>::ones(theirs.dims(), &device)
                    .into_primitive()
                    .tensor(),
                [stride, stride],
                {
                    let (t, b) = same_padding(size, kernel, stride);
                    [t, b, t, b]
                },
            );
            let g3 = conv.forward(x.clone()).sum().backward();
            float::<TB, 4>(cx)
                .into_data()
                .assert_approx_eq::<f32>(&x.grad(&g3).unwrap().into_data(), tol);
            float::<TB, 4>(cw)
                .into_data()
                .assert_approx_eq::<f32>(&conv.weight.grad(&g3).unwrap().into_data(), tol);
        }
    }

    /// The vectorised tanh and sigmoid against Burn's, values and gradients, over ±20 (saturation) and a NaN.
    #[test]
    fn activations_match_burn_values_and_gradients() {
        let device = Default::default();
        let mut values: Vec<f32> = (0..4001).map(|i| (i as f32 - 2000.0) / 100.0).collect();
        values.push(f32::NAN);
        let n = values.len();
        let x = Tensor::<AB, 1>::from_floats(values.as_slice(), &device).require_grad();
        let upstream = Tensor::<AB, 1>::random([n], Distribution::Normal(0.0, 1.0), &device);
        for (ours, theirs) in [
            (tanh(x.clone()), x.clone().tanh()),
            (
                sigmoid(x.clone()),
                burn::tensor::activation::sigmoid(x.clone()),
            ),
        ] {
            let (a, b) = (
                ours.clone().inner().into_data(),
                theirs.clone().inner().into_data(),
            );
            let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
            assert!(a[n - 1].is_nan(), "NaN in, NaN out");
            for (p, q) in a[..n - 1].iter().zip(&b[..n - 1]) {
                assert!((p - q).abs() <= 1e-6, "{p} vs {q}");
            }
            let g1 = (ours * upstream.clone()).sum().backward();
            let g2 = (theirs * upstream.clone()).sum().backward();
            let (a, b) = (x.grad(&g1).unwrap(), x.grad(&g2).unwrap());
            let (a, b) = (
                a.into_data().to_vec::<f32>().unwrap(),
                b.into_data().to_vec::<f32>().unwrap(),
            );
            for (p, q) in a[..n - 1].iter().zip(&b[..n - 1]) {
                assert!((p - q).abs() <= 2e-6, "gradient {p} vs {q}");
            }
        }
    }

    /// The dense convolution (im2col weight gradient) against Burn's `Conv2d`: forward, ∂x, ∂weight, over
    /// kernels 1/3/7, strides 1–3, padding 0–3, dilation 1–2 and odd sizes; a frozen weight gets no gradient.
    #[test]
    fn dense_matches_burn_conv2d_forward_and_gradients() {
        use burn::nn::conv::Conv2dConfig;
        let device = Default::default();
        let cases = [
            // (size, in, out, kernel, stride, padding, dilation)
            (9usize, 3usize, 5usize, 3usize, 1usize, 1usize, 1usize),
            (16, 4, 6, 3, 2, 1, 1),
            (17, 3, 4, 7, 2, 3, 1),
            (11, 2, 3, 3, 1, 2, 2),
            (8, 5, 7, 1, 1, 0, 1),
            (10, 3, 2, 3, 3, 0, 1),
        ];
        for (size, cin, cout, kernel, stride, padding, dilation) in cases {
            let conv = Conv2dConfig::new([cin, cout], [kernel, kernel])
                .with_stride([stride, stride])
                .with_dilation([dilation, dilation])
                .with_padding(PaddingConfig2d::Explicit(
                    padding, padding, padding, padding,
                ))
                .with_bias(false)
                .init::<AB>(&device);
            assert!(dense_options(&conv).is_some());
            let x = Tensor::<AB, 4>::random(
                [3, cin, size, size],
                Distribution::Normal(0.0, 1.0),
                &device,
            )
            .require_grad();
            let ours = dense_conv2d(&conv, x.clone());
            let theirs = conv.forward(x.clone());
            assert_eq!(ours.dims(), theirs.dims());
            let upstream = Tensor::<AB, 4>::random(ours.dims(), Distribution::Default, &device);
            let g1 = (ours.clone() * upstream.clone()).sum().backward();
            let g2 = (theirs.clone() * upstream).sum().backward();
            let tol = Tolerance::<f32>::relative(1e-4).set_absolute(1e-5);
            ours.inner()
                .into_data()
                .assert_approx_eq::<f32>(&theirs.inner().into_data(), tol);
            x.grad(&g1)
                .unwrap()
                .into_data()
                .assert_approx_eq::<f32>(&x.grad(&g2).unwrap().into_data(), tol);
            conv.weight
                .grad(&g1)
                .unwrap()
                .into_data()
                .assert_approx_eq::<f32>(&conv.weight.grad(&g2).unwrap().into_data(), tol);
        }
        // A frozen weight: only the input gets a gradient.
        let conv = Conv2dConfig::new([2, 3], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(false)
            .init::<AB>(&device)
            .no_grad();
        let x =
            Tensor::<AB, 4>::random([2, 2, 6, 6], Distribution::Default, &device).require_grad();
        let grads = dense_conv2d(&conv, x.clone()).sum().backward();
        assert!(conv.weight.grad(&grads).is_none());
        assert!(x.grad(&grads).is_some());
        // Grouped, biased or asymmetrically padded convolutions are not dense: they run `conv.forward`.
        let grouped = Conv2dConfig::new([4, 4], [3, 3])
            .with_groups(2)
            .init::<AB>(&device);
        let biased = Conv2dConfig::new([4, 4], [3, 3]).init::<AB>(&device);
        let same = Conv2dConfig::new([4, 4], [3, 3])
            .with_bias(false)
            .with_padding(PaddingConfig2d::Same)
            .init::<AB>(&device);
        assert!(dense_options(&grouped).is_none() && dense_options(&biased).is_none());
        assert!(dense_options(&same).is_none());
    }

    /// The side-by-side matmul other backends run for a pointwise convolution against the batched one
    /// flex runs, values and gradients: 3 × 7 columns, and 2 × 12 = 24 (an odd multiple of 8: padded).
    #[test]
    fn side_by_side_matmul_matches_batched_matmul() {
        let device = Default::default();
        for [batch, n] in [[3, 7], [2, 12]] {
            let weight = Tensor::<AB, 2>::random([6, 5], Distribution::Normal(0.0, 1.0), &device)
                .require_grad();
            let x = Tensor::<AB, 3>::random([batch, 5, n], Distribution::Normal(0.0, 1.0), &device)
                .require_grad();
            let upstream = Tensor::<AB, 3>::random([batch, 6, n], Distribution::Default, &device);
            let ours = side_by_side_matmul(weight.clone(), x.clone());
            let theirs = weight.clone().unsqueeze::<3>().matmul(x.clone());
            assert_eq!(ours.dims(), [batch, 6, n]);
            let tol = Tolerance::<f32>::relative(1e-5).set_absolute(1e-6);
            ours.clone()
                .inner()
                .into_data()
                .assert_approx_eq::<f32>(&theirs.clone().inner().into_data(), tol);
            let g1 = (ours * upstream.clone()).sum().backward();
            let g2 = (theirs * upstream).sum().backward();
            x.grad(&g1)
                .unwrap()
                .into_data()
                .assert_approx_eq::<f32>(&x.grad(&g2).unwrap().into_data(), tol);
            weight
                .grad(&g1)
                .unwrap()
                .into_data()
                .assert_approx_eq::<f32>(&weight.grad(&g2).unwrap().into_data(), tol);
        }
    }

    /// The matmul form of a pointwise convolution against Burn's `Conv2d` (forward, ∂x, ∂weight, ∂bias).
    #[test]
    fn pointwise_matches_burn_conv2d_forward_and_gradients() {
        use burn::nn::conv::Conv2dConfig;
        let device = Default::default();
        // Stride 1 with and without bias; stride 2 (ResNet's downsample) on even and odd maps; stride 3.
        for (bias, stride, [h, w]) in [
            (false, 1, [4, 6]),
            (true, 1, [4, 6]),
            (false, 2, [4, 6]),
            (false, 2, [5, 7]),
            (true, 3, [7, 4]),
        ] {
            let padding = if stride == 1 {
                PaddingConfig2d::Same
            } else {
                PaddingConfig2d::Valid
            };
            let conv = Conv2dConfig::new([5, 7], [1, 1])
                .with_stride([stride, stride])
                .with_padding(padding)
                .with_bias(bias)
                .init::<AB>(&device);
            assert!(is_pointwise(&conv));
            let x = Tensor::<AB, 4>::random([3, 5, h, w], Distribution::Normal(0.0, 1.0), &device)
                .require_grad();
            let ours = pointwise_conv2d(&conv, x.clone());
            let theirs = conv.forward(x.clone());
            assert_eq!(ours.dims(), theirs.dims(), "stride {stride}, {h}x{w}");
            let upstream = Tensor::<AB, 4>::random(ours.dims(), Distribution::Default, &device);
            let tol = Tolerance::<f32>::relative(1e-4).set_absolute(1e-5);
            ours.clone()
                .inner()
                .into_data()
                .assert_approx_eq::<f32>(&theirs.clone().inner().into_data(), tol);
            let g1 = (ours * upstream.clone()).sum().backward();
            let g2 = (theirs * upstream).sum().backward();
            x.grad(&g1)
                .unwrap()
                .into_data()
                .assert_approx_eq::<f32>(&x.grad(&g2).unwrap().into_data(), tol);
            conv.weight
                .grad(&g1)
                .unwrap()
                .into_data()
                .assert_approx_eq::<f32>(&conv.weight.grad(&g2).unwrap().into_data(), tol);
            if let Some(b) = &conv.bias {
                b.grad(&g1)
                    .unwrap()
                    .into_data()
                    .assert_approx_eq::<f32>(&b.grad(&g2).unwrap().into_data(), tol);
            }
        }
        let padded = Conv2dConfig::new([5, 7], [1, 1])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init::<AB>(&device);
        assert!(!is_pointwise(&padded));
    }

    #[test]
    fn swap_dims_1_2_with_unit_dims_is_a_swap() {
        let device = Default::default();
        for shape in [[2, 1, 5], [2, 5, 1], [2, 3, 4], [1, 1, 1]] {
            let n = shape.iter().product::<usize>();
            let values: Vec<f32> = (0..n).map(|v| v as f32).collect();
            let x = Tensor::<TB, 3>::from_data(TensorData::new(values, shape), &device);
            swap_dims_1_2(x.clone())
                .into_data()
                .assert_eq(&x.swap_dims(1, 2).into_data(), true);
        }
    }
}
