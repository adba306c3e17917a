//! [`FusedKernels`] for burn-flex (the [`cpu`](super::cpu) kernels) and for `Autodiff<B>` (a custom backward
//! step that calls `B`'s backward kernel).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::prelude::*;
use burn::tensor::ops::{ConvOptions, FloatTensor, FloatTensorOps, ModuleOps};
use burn::tensor::{DType, TensorMetadata};

use super::{cpu, on_backend, Activation, FusedKernels};

/// The row-major `f32` values of a flex tensor (a copy only when it is not contiguous or not `f32`).
fn values(tensor: FlexTensor) -> Vec<f32> {
    let shape = tensor.shape();
    let data = tensor.into_data();
    match data.dtype {
        DType::F32 => data.into_vec::<f32>(),
        _ => data.convert::<f32>().into_vec::<f32>(),
    }
    .unwrap_or_else(|e| panic!("flex tensor {shape:?} as f32: {e:?}"))
}

/// `f(values)` on the contiguous `f32` values of a flex tensor, borrowed when they can be, else copied.
fn with_values<R>(tensor: &FlexTensor, f: impl FnOnce(&[f32]) -> R) -> R {
    if tensor.dtype() == DType::F32 {
        if let Some((start, end)) = tensor.layout().contiguous_offsets() {
            return f(&tensor.storage::<f32>()[start..end]);
        }
    }
    f(&values(tensor.clone()))
}

fn tensor(values: Vec<f32>, shape: impl Into<burn::tensor::Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}

impl FusedKernels for Flex {
    fn activation(x: FloatTensor<Self>, kind: Activation) -> FloatTensor<Self> {
        let out = with_values(&x, |x| cpu::activation_forward(x, kind));
        tensor(out, x.shape())
    }

    fn activation_backward(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        kind: Activation,
    ) -> FloatTensor<Self> {
        let out = with_values(&x, |x| {
            with_values(&grad, |grad| cpu::activation_backward(x, grad, kind))
        });
        tensor(out, x.shape())
    }

    fn tanh_bilinear_score(
        image: FloatTensor<Self>,
        word: FloatTensor<Self>,
        weight: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let [rows, dim] = image.shape().dims();
        let [classes, _] = word.shape().dims();
        let out = cpu::tanh_bilinear_forward(&values(image), &values(word), &values(weight), dim);
        tensor(out, [rows, classes])
    }

    fn tanh_bilinear_score_backward(
        image: FloatTensor<Self>,
        word: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        let [rows, dim] = image.shape().dims();
        let [classes, _] = word.shape().dims();
        let (gi, gw, gv) = cpu::tanh_bilinear_backward(
            &values(image),
            &values(word),
            &values(weight),
            &values(grad),
            dim,
        );
        [
            tensor(gi, [rows, dim]),
            tensor(gw, [classes, dim]),
            tensor(gv, [dim]),
        ]
    }

    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 4],
    ) -> FloatTensor<Self> {
        let g = geometry(&x, &weight, stride, padding);
        let [oh, ow] = g.output();
        let out = cpu::depthwise_forward(&values(x), &values(weight), &g);
        tensor(out, [g.batch, g.channels, oh, ow])
    }

    fn depthwise_conv2d_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 4],
    ) -> [FloatTensor<Self>; 2] {
        let g = geometry(&x, &weight, stride, padding);
        let w_shape = weight.shape();
        let (gx, gw) = cpu::depthwise_backward(&values(x), &values(weight), &values(grad), &g);
        [
            tensor(gx, [g.batch, g.channels, g.input[0], g.input[1]]),
            tensor(gw, w_shape),
        ]
    }

    fn dense_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let [_, channels_in, _, _] = x.shape().dims();
        if channels_in <= SMALL_CHANNELS {
            dense_forward(x, weight, &options, IM2COL_FLOATS)
        } else {
            Flex::conv2d(x, weight, None, options)
        }
    }

    fn dense_conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        dense_weight_grad(x, weight, grad, &options, IM2COL_FLOATS)
    }

    fn dense_conv2d_x_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        dense_input_grad(x, weight, grad, &options, IM2COL_FLOATS)
    }
}

/// Most `f32` values of one im2col matrix of [`FusedKernels::dense_conv2d_weight_grad`] on flex (64 MiB):
/// a larger batch is done in chunks of images whose gradients are summed.
const IM2COL_FLOATS: usize = 16 << 20;

/// Input channels up to which [`FusedKernels::dense_conv2d`] on flex runs its own im2col + GEMM forward:
/// burn-flex sends such convolutions (a stem on RGB images) to a direct kernel whose strided inner loop is
/// scalar, ~17% of the embedded main job's training step with ResNet's 7×7/2 stem.
const SMALL_CHANNELS: usize = 4;

/// The geometry of `conv2d(x, weight, options)`.
fn conv_geometry(
    x: &FlexTensor,
    weight: &FlexTensor,
    options: &ConvOptions<2>,
) -> cpu::ConvGeometry {
    let [batch, channels_in, h, w] = x.shape().dims();
    let [channels_out, _, kh, kw] = weight.shape().dims();
    let out = |size: usize, k: usize, i: usize| {
        (size + 2 * options.padding[i]).saturating_sub(options.dilation[i] * (k - 1) + 1)
            / options.stride[i]
            + 1
    };
    cpu::ConvGeometry {
        batch,
        channels_in,
        channels_out,
        input: [h, w],
        kernel: [kh, kw],
        output: [out(h, kh, 0), out(w, kw, 1)],
        stride: options.stride,
        padding: options.padding,
        dilation: options.dilation,
    }
}

/// The batch split into ranges of images whose im2col matrices hold at most `chunk_floats` values each (at
/// least one image per range).
fn image_chunks(
    g: &cpu::ConvGeometry,
    chunk_floats: usize,
) -> impl Iterator<Item = std::ops::Range<usize>> {
    let per_image = (g.patch() * g.pixels()).max(1);
    let chunk = (chunk_floats / per_image).clamp(1, g.batch.max(1));
    let batch = g.batch;
    (0..batch)
        .step_by(chunk)
        .map(move |start| start..(start + chunk).min(batch))
}

/// `out[n] = weight [out, in · kh · kw] · im2col(x[n])`, as one GEMM per chunk of images of at most
/// `chunk_floats` im2col values (at least one image).
fn dense_forward(
    x: FlexTensor,
    weight: FlexTensor,
    options: &ConvOptions<2>,
    chunk_floats: usize,
) -> FlexTensor {
    let g = conv_geometry(&x, &weight, options);
    let weight = Flex::float_reshape(weight, [g.channels_out, g.patch()].into());
    let mut out = vec![0.0f32; g.batch * g.channels_out * g.pixels()];
    with_values(&x, |x| {
        for images in image_chunks(&g, chunk_floats) {
            let columns = images.len() * g.pixels();
            let cols = tensor(cpu::im2col(x, &g, images.clone()), [g.patch(), columns]);
            let rows = values(Flex::float_matmul(weight.clone(), cols)); // [out, images · pixels]
            cpu::scatter_channel_major(&rows, g.channels_out, g.pixels(), images, &mut out);
        }
    });
    tensor(out, [g.batch, g.channels_out, g.output[0], g.output[1]])
}

/// `∂x = col2im(weightᵀ [in · kh · kw, out] · grad)`, one GEMM per chunk of images of at most `chunk_floats`
/// column values (at least one image).
fn dense_input_grad(
    x: FlexTensor,
    weight: FlexTensor,
    grad: FlexTensor,
    options: &ConvOptions<2>,
    chunk_floats: usize,
) -> FlexTensor {
    let g = conv_geometry(&x, &weight, options);
    let weight_t = Flex::float_transpose(Flex::float_reshape(
        weight,
        [g.channels_out, g.patch()].into(),
    )); // [in · kh · kw, out]
    let [h, w] = g.input;
    let mut dx = vec![0.0f32; g.batch * g.channels_in * h * w];
    with_values(&grad, |grad| {
        for images in image_chunks(&g, chunk_floats) {
            let columns = images.len() * g.pixels();
            let rows = tensor(
                cpu::channel_major(grad, g.channels_out, g.pixels(), images.clone()),
                [g.channels_out, columns],
            );
            let cols = values(Flex::float_matmul(weight_t.clone(), rows)); // [in · kh · kw, columns]
            cpu::col2im(&cols, &g, images, &mut dx);
        }
    });
    tensor(dx, [g.batch, g.channels_in, h, w])
}

/// `∂weight = Σ_images grad [out, pixels] · im2col(x)ᵀ [pixels, in · kh · kw]`, as one GEMM per chunk of
/// images of at most `chunk_floats` im2col values (at least one image).
fn dense_weight_grad(
    x: FlexTensor,
    weight: FlexTensor,
    grad: FlexTensor,
    options: &ConvOptions<2>,
    chunk_floats: usize,
) -> FlexTensor {
    let g = conv_geometry(&x, &weight, options);
    let (batch, channels_out) = (g.batch, g.channels_out);
    let w_shape = weight.shape();
    debug_assert_eq!(
        grad.shape().dims::<4>(),
        [batch, channels_out, g.output[0], g.output[1]]
    );
    let mut total: Option<FlexTensor> = None;
    with_values(&x, |x| {
        with_values(&grad, |grad| {
            for images in image_chunks(&g, chunk_floats) {
                let columns = images.len() * g.pixels();
                let cols = tensor(cpu::im2col(x, &g, images.clone()), [g.patch(), columns]);
                let rows = tensor(
                    cpu::channel_major(grad, channels_out, g.pixels(), images),
                    [channels_out, columns],
                );
                let part = Flex::float_matmul(rows, Flex::float_transpose(cols)); // [out, in · kh · kw]
                total = Some(match total.take() {
                    Some(sum) => Flex::float_add(sum, part),
                    None => part,
                });
            }
        })
    });
    let total = total
        .unwrap_or_else(|| tensor(vec![0.0; w_shape.num_elements()], [channels_out, g.patch()]));
    Flex::float_reshape(total, w_shape)
}

fn geometry(
    x: &FlexTensor,
    weight: &FlexTensor,
    stride: [usize; 2],
    padding: [usize; 4],
) -> cpu::DepthwiseGeometry {
    let [batch, channels, h, w] = x.shape().dims();
    let [_, _, kh, kw] = weight.shape().dims();
    cpu::DepthwiseGeometry {
        batch,
        channels,
        input: [h, w],
        kernel: [kh, kw],
        stride,
        padding,
    }
}

/// The custom backward step of [`FusedKernels::depthwise_conv2d`] on `Autodiff<B>`.
#[derive(Debug)]
struct DepthwiseConv2dBackward;

impl<B: FusedKernels> Backward<B, 2> for DepthwiseConv2dBackward {
    /// The checkpointed input and weight, the stride and the padding.
    type State = (NodeId, NodeId, [usize; 2], [usize; 4]);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let (x, weight, stride, padding) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x);
        let weight: FloatTensor<B> = checkpointer.retrieve_node_output(weight);
        let partials = B::depthwise_conv2d_backward(x, weight, grad, stride, padding);
        for (parent, partial) in ops.parents.into_iter().zip(partials) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, partial);
            }
        }
    }
}

/// The custom backward step of [`FusedKernels::activation`] on `Autodiff<B>`.
#[derive(Debug)]
struct ActivationBackward;

impl<B: FusedKernels> Backward<B, 1> for ActivationBackward {
    /// The checkpointed input and the activation.
    type State = (NodeId, Activation);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let (x, kind) = ops.state;
        let [parent] = ops.parents;
        if let Some(node) = parent {
            let x: FloatTensor<B> = checkpointer.retrieve_node_output(x);
            grads.register::<B>(node.id, B::activation_backward(x, grad, kind));
        }
    }
}

/// The custom backward step of [`FusedKernels::dense_conv2d`] on `Autodiff<B>`.
#[derive(Debug)]
struct DenseConv2dBackward;

impl<B: FusedKernels> Backward<B, 2> for DenseConv2dBackward {
    /// The checkpointed input and weight, and the options.
    type State = (NodeId, NodeId, ConvOptions<2>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let (x, weight, options) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x);
        let weight: FloatTensor<B> = checkpointer.retrieve_node_output(weight);
        let [x_parent, weight_parent] = ops.parents;
        if let Some(node) = weight_parent {
            let partial = B::dense_conv2d_weight_grad(
                x.clone(),
                weight.clone(),
                grad.clone(),
                options.clone(),
            );
            grads.register::<B>(node.id, partial);
        }
        if let Some(node) = x_parent {
            grads.register::<B>(node.id, B::dense_conv2d_x_grad(x, weight, grad, options));
        }
    }
}

/// The custom backward step of [`FusedKernels::tanh_bilinear_score`] on `Autodiff<B>`.
#[derive(Debug)]
struct TanhBilinearScoreBackward;

impl<B: FusedKernels> Backward<B, 3> for TanhBilinearScoreBackward {
    /// The checkpointed inputs (image, word, weight).
    type State = (NodeId, NodeId, NodeId);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let (image, word, weight) = ops.state;
        let image: FloatTensor<B> = checkpointer.retrieve_node_output(image);
        let word: FloatTensor<B> = checkpointer.retrieve_node_output(word);
        let weight: FloatTensor<B> = checkpointer.retrieve_node_output(weight);
        let partials = B::tanh_bilinear_score_backward(image, word, weight, grad);
        for (parent, partial) in ops.parents.into_iter().zip(partials) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, partial);
            }
        }
    }
}

/// The forward methods record a custom backward step; the backward methods keep the trait's composed
/// defaults (differentiable, for a second-order use).
impl<B: FusedKernels, C: CheckpointStrategy> FusedKernels for Autodiff<B, C> {
    fn tanh_bilinear_score(
        image: FloatTensor<Self>,
        word: FloatTensor<Self>,
        weight: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        match TanhBilinearScoreBackward
            .prepare::<C>([image.node.clone(), word.node.clone(), weight.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (
                    prep.checkpoint(&image),
                    prep.checkpoint(&word),
                    prep.checkpoint(&weight),
                );
                let out = B::tanh_bilinear_score(image.primitive, word.primitive, weight.primitive);
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::tanh_bilinear_score(
                image.primitive,
                word.primitive,
                weight.primitive,
            )),
        }
    }

    fn activation(x: FloatTensor<Self>, kind: Activation) -> FloatTensor<Self> {
        match ActivationBackward
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), kind);
                prep.finish(state, B::activation(x.primitive, kind))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::activation(x.primitive, kind)),
        }
    }

    fn dense_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        match DenseConv2dBackward
            .prepare::<C>([x.node.clone(), weight.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (
                    prep.checkpoint(&x),
                    prep.checkpoint(&weight),
                    options.clone(),
                );
                let out = B::dense_conv2d(x.primitive, weight.primitive, options);
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::dense_conv2d(x.primitive, weight.primitive, options))
            }
        }
    }

    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 4],
    ) -> FloatTensor<Self> {
        match DepthwiseConv2dBackward
            .prepare::<C>([x.node.clone(), weight.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (
                    prep.checkpoint(&x),
                    prep.checkpoint(&weight),
                    stride,
                    padding,
                );
                let out = B::depthwise_conv2d(x.primitive, weight.primitive, stride, padding);
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::depthwise_conv2d(
                x.primitive,
                weight.primitive,
                stride,
                padding,
            )),
        }
    }
}

/// Whether `B` is a backend with the fused kernels (flex, or flex under autodiff).
pub(super) fn is_fused<B: Backend>() -> bool {
    use std::any::TypeId;
    let b = TypeId::of::<B>();
    b == TypeId::of::<Flex>() || b == TypeId::of::<Autodiff<Flex>>()
}

/// [`FusedKernels::tanh_bilinear_score`] when `B` is flex or `Autodiff<Flex>`; the inputs back otherwise.
pub(super) fn tanh_bilinear_score<B: Backend>(
    inputs: [FloatTensor<B>; 3],
) -> Result<FloatTensor<B>, [FloatTensor<B>; 3]> {
    on_backend::<B, Autodiff<Flex>, 3>(inputs, |[i, w, v]| {
        <Autodiff<Flex> as FusedKernels>::tanh_bilinear_score(i, w, v)
    })
    .or_else(|inputs| {
        on_backend::<B, Flex, 3>(inputs, |[i, w, v]| {
            <Flex as FusedKernels>::tanh_bilinear_score(i, w, v)
        })
    })
}

/// [`FusedKernels::depthwise_conv2d`] when `B` is flex or `Autodiff<Flex>`; the inputs back otherwise.
pub(super) fn depthwise_conv2d<B: Backend>(
    inputs: [FloatTensor<B>; 2],
    stride: [usize; 2],
    padding: [usize; 4],
) -> Result<FloatTensor<B>, [FloatTensor<B>; 2]> {
    on_backend::<B, Autodiff<Flex>, 2>(inputs, |[x, w]| {
        <Autodiff<Flex> as FusedKernels>::depthwise_conv2d(x, w, stride, padding)
    })
    .or_else(|inputs| {
        on_backend::<B, Flex, 2>(inputs, |[x, w]| {
            <Flex as FusedKernels>::depthwise_conv2d(x, w, stride, padding)
        })
    })
}

/// [`FusedKernels::activation`] when `B` is flex or `Autodiff<Flex>`; the input back otherwise.
pub(super) fn activation<B: Backend>(
    inputs: [FloatTensor<B>; 1],
    kind: Activation,
) -> Result<FloatTensor<B>, [FloatTensor<B>; 1]> {
    on_backend::<B, Autodiff<Flex>, 1>(inputs, |[x]| {
        <Autodiff<Flex> as FusedKernels>::activation(x, kind)
    })
    .or_else(|inputs| {
        on_backend::<B, Flex, 1>(inputs, |[x]| <Flex as FusedKernels>::activation(x, kind))
    })
}

/// [`FusedKernels::dense_conv2d`] when `B` is flex or `Autodiff<Flex>`; the inputs back otherwise.
pub(super) fn dense_conv2d<B: Backend>(
    inputs: [FloatTensor<B>; 2],
    options: ConvOptions<2>,
) -> Result<FloatTensor<B>, [FloatTensor<B>; 2]> {
    let again = options.clone();
    on_backend::<B, Autodiff<Flex>, 2>(inputs, |[x, w]| {
        <Autodiff<Flex> as FusedKernels>::dense_conv2d(x, w, options)
    })
    .or_else(|inputs| {
        on_backend::<B, Flex, 2>(inputs, |[x, w]| {
            <Flex as FusedKernels>::dense_conv2d(x, w, again)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};

    fn primitive(t: &Tensor<Flex, 4>) -> FlexTensor {
        t.clone().into_primitive().tensor()
    }

    /// `ours` equals `expected` to 1e-4 relative (1e-5 absolute).
    fn assert_close(ours: FlexTensor, expected: FlexTensor) {
        let tensor = |t| Tensor::<Flex, 4>::from_primitive(burn::tensor::TensorPrimitive::Float(t));
        tensor(ours).into_data().assert_approx_eq::<f32>(
            &tensor(expected).into_data(),
            Tolerance::<f32>::relative(1e-4).set_absolute(1e-5),
        );
    }

    fn normal(shape: [usize; 4]) -> Tensor<Flex, 4> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    /// The col2im input gradient, in chunks of images or in one, equals Burn's.
    #[test]
    fn chunked_input_grad_matches_burn() {
        for (stride, padding, dilation) in [(1, 1, 1), (2, 1, 1), (1, 2, 2), (3, 0, 1)] {
            let (x, weight) = (normal([5, 3, 11, 11]), normal([4, 3, 3, 3]));
            let options = ConvOptions::new([stride; 2], [padding; 2], [dilation; 2], 1);
            let out = Flex::conv2d(primitive(&x), primitive(&weight), None, options.clone());
            let grad = normal(out.shape().dims());
            let expected = || {
                Flex::conv2d_x_backward(
                    primitive(&x),
                    primitive(&weight),
                    primitive(&grad),
                    options.clone(),
                )
            };
            for chunk_floats in [1, usize::MAX] {
                let ours = dense_input_grad(
                    primitive(&x),
                    primitive(&weight),
                    primitive(&grad),
                    &options,
                    chunk_floats,
                );
                assert_close(ours, expected());
            }
        }
    }

    /// The im2col forward, in chunks of images or in one, equals Burn's convolution.
    #[test]
    fn chunked_forward_matches_burn() {
        let (x, weight) = (normal([5, 3, 13, 13]), normal([6, 3, 7, 7]));
        let options = ConvOptions::new([2, 2], [3, 3], [1, 1], 1);
        for chunk_floats in [1, 2 * 147 * 49, usize::MAX] {
            let ours = dense_forward(primitive(&x), primitive(&weight), &options, chunk_floats);
            let expected = Flex::conv2d(primitive(&x), primitive(&weight), None, options.clone());
            assert_close(ours, expected);
        }
    }

    /// The weight gradient summed over chunks of images (as a large batch is done) equals the one-chunk
    /// gradient and Burn's own.
    #[test]
    fn chunked_weight_grad_matches_burn() {
        let (x, weight, grad) = (
            normal([5, 3, 9, 9]),
            normal([4, 3, 3, 3]),
            normal([5, 4, 5, 5]),
        );
        let options = ConvOptions::new([2, 2], [1, 1], [1, 1], 1);
        // 27 · 25 im2col values per image: chunks of 1, 2 and all 5 images.
        for chunk_floats in [1, 2 * 27 * 25, usize::MAX] {
            let ours = dense_weight_grad(
                primitive(&x),
                primitive(&weight),
                primitive(&grad),
                &options,
                chunk_floats,
            );
            let expected = <Flex as ModuleOps<Flex>>::conv2d_weight_backward(
                primitive(&x),
                primitive(&weight),
                primitive(&grad),
                options.clone(),
            );
            assert_close(ours, expected);
        }
    }
}
