//! Plain-slice CPU kernels behind the [`FusedKernels`](super::FusedKernels) implementation for burn-flex.
//!
//! Each kernel has one `#[inline(always)]` body, compiled three times: for AVX-512, for AVX2 + FMA and for
//! the baseline target, and the widest one the processor supports is chosen at run time (the `hst` binary
//! is built for baseline x86-64, so without this the loops would run on 4-lane SSE). Rows are split across
//! rayon's pool, the pool burn-flex itself uses.

// Index loops over several equal-length slices read closer to the formulas than five-way zips, and they
// vectorise the same once the slices are re-cut to one length.
#![allow(clippy::needless_range_loop)]

use rayon::prelude::*;

/// `tanh(x)` as a rational function (the minimax approximation Eigen and XLA use for `float`): odd degree-13
/// numerator over even degree-6 denominator on `x` clamped to ±7.9053, where `tanh` rounds to ±1 in `f32`.
/// Branch-free, so the loops below vectorise; max abs error against `f64::tanh` ≈ 3e-7 (tested).
// The published coefficients, digit for digit (more digits than an f32 holds).
#[allow(clippy::excessive_precision)]
#[inline(always)]
pub fn tanh_approx(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    const A1: f32 = 4.893_524_5e-3;
    const A3: f32 = 6.372_619_3e-4;
    const A5: f32 = 1.485_722_4e-5;
    const A7: f32 = 5.122_297e-8;
    const A9: f32 = -8.604_671_5e-11;
    const A11: f32 = 2.000_187_9e-13;
    const A13: f32 = -2.760_768_5e-16;
    const B0: f32 = 4.893_525_2e-3;
    const B2: f32 = 2.268_434_6e-3;
    const B4: f32 = 1.185_347_1e-4;
    const B6: f32 = 1.198_258_4e-6;
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let p = ((((((A13 * x2 + A11) * x2 + A9) * x2 + A7) * x2 + A5) * x2 + A3) * x2 + A1) * x;
    let q = ((B6 * x2 + B4) * x2 + B2) * x2 + B0;
    p / q
}

/// Accumulator lanes of the forward dot products (two AVX-512 registers' worth, four of AVX2).
const LANES: usize = 32;

/// `Σ_k weight[k] · tanh(image[k] · word[k])`.
#[inline(always)]
fn dot_tanh(image: &[f32], word: &[f32], weight: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (i_chunks, w_chunks, v_chunks) = (
        image.chunks_exact(LANES),
        word.chunks_exact(LANES),
        weight.chunks_exact(LANES),
    );
    let (i_rest, w_rest, v_rest) = (
        i_chunks.remainder(),
        w_chunks.remainder(),
        v_chunks.remainder(),
    );
    for ((i, w), v) in i_chunks.zip(w_chunks).zip(v_chunks) {
        for l in 0..LANES {
            acc[l] += v[l] * tanh_approx(i[l] * w[l]);
        }
    }
    let mut sum = 0.0f32;
    for ((i, w), v) in i_rest.iter().zip(w_rest).zip(v_rest) {
        sum += v * tanh_approx(i * w);
    }
    sum + acc.iter().sum::<f32>()
}

#[inline(always)]
fn forward_rows_body(image: &[f32], word: &[f32], weight: &[f32], out: &mut [f32], dim: usize) {
    let classes = out.len() / (image.len() / dim);
    for (row, out_row) in image.chunks_exact(dim).zip(out.chunks_exact_mut(classes)) {
        for (c, o) in out_row.iter_mut().enumerate() {
            *o = dot_tanh(row, &word[c * dim..(c + 1) * dim], weight);
        }
    }
}

/// Per-block gradient accumulators of the backward pass: `∂/∂word` `[classes · dim]` and `∂/∂weight` `[dim]`.
struct Partial {
    word: Vec<f32>,
    weight: Vec<f32>,
}

#[inline(always)]
fn backward_rows_body(
    image: &[f32],
    word: &[f32],
    weight: &[f32],
    grad: &[f32],
    grad_image: &mut [f32],
    partial: &mut Partial,
    dim: usize,
) {
    let classes = grad.len() / (image.len() / dim);
    for ((row, g_row), gi_row) in image
        .chunks_exact(dim)
        .zip(grad.chunks_exact(classes))
        .zip(grad_image.chunks_exact_mut(dim))
    {
        for (c, &g) in g_row.iter().enumerate() {
            // Every slice re-cut to `dim` so the loop below runs without bounds checks and vectorises.
            let (row, weight, gi_row) = (&row[..dim], &weight[..dim], &mut gi_row[..dim]);
            let w_row = &word[c * dim..(c + 1) * dim];
            let gw_row = &mut partial.word[c * dim..(c + 1) * dim];
            let gv = &mut partial.weight[..dim];
            for k in 0..dim {
                let t = tanh_approx(row[k] * w_row[k]);
                let s = g * weight[k] * (1.0 - t * t);
                gi_row[k] += s * w_row[k];
                gw_row[k] += s * row[k];
                gv[k] += g * t;
            }
        }
    }
}

/// One function compiled for several instruction sets; `$name` dispatches at run time.
macro_rules! multiversion {
    ($name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the processor supports AVX-512F (checked just above).
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the processor supports AVX2 and FMA (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

multiversion!(forward_rows, forward_rows_body, (image: &[f32], word: &[f32], weight: &[f32], out: &mut [f32], dim: usize));
multiversion!(backward_rows, backward_rows_body, (image: &[f32], word: &[f32], weight: &[f32], grad: &[f32], grad_image: &mut [f32], partial: &mut Partial, dim: usize));

/// Rows per parallel task: enough work per task (≈ 64k multiply-tanh-adds) to hide the scheduling.
fn rows_per_task(classes: usize, dim: usize) -> usize {
    (65_536 / (classes * dim).max(1)).max(1)
}

/// `out[n, c] = Σ_k weight[k] · tanh(image[n, k] · word[c, k])`.
///
/// # Shapes
/// - `image`: `[rows, dim]`, `word`: `[classes, dim]`, `weight`: `[dim]` (row-major slices)
/// - output: `[rows, classes]`
pub fn tanh_bilinear_forward(image: &[f32], word: &[f32], weight: &[f32], dim: usize) -> Vec<f32> {
    let rows = image.len() / dim;
    let classes = word.len() / dim;
    let mut out = vec![0.0f32; rows * classes];
    let block = rows_per_task(classes, dim);
    out.par_chunks_mut(block * classes)
        .zip(image.par_chunks(block * dim))
        .for_each(|(out, image)| forward_rows(image, word, weight, out, dim));
    out
}

/// The gradients of [`tanh_bilinear_forward`] for the upstream gradient `grad` `[rows, classes]`:
/// `(∂/∂image [rows, dim], ∂/∂word [classes, dim], ∂/∂weight [dim])`, with `t = tanh(image · word)`,
/// `s = grad · weight · (1 − t²)`: `∂image = Σ_c s · word`, `∂word = Σ_n s · image`, `∂weight = Σ_{n,c} grad · t`.
pub fn tanh_bilinear_backward(
    image: &[f32],
    word: &[f32],
    weight: &[f32],
    grad: &[f32],
    dim: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let rows = image.len() / dim;
    let classes = word.len() / dim;
    let mut grad_image = vec![0.0f32; rows * dim];
    let block = rows_per_task(classes, dim);
    let new_partial = || Partial {
        word: vec![0.0; classes * dim],
        weight: vec![0.0; dim],
    };
    let total = grad_image
        .par_chunks_mut(block * dim)
        .zip(image.par_chunks(block * dim))
        .zip(grad.par_chunks(block * classes))
        .fold(new_partial, |mut partial, ((grad_image, image), grad)| {
            backward_rows(image, word, weight, grad, grad_image, &mut partial, dim);
            partial
        })
        .reduce(new_partial, |mut a, b| {
            a.word.iter_mut().zip(&b.word).for_each(|(x, y)| *x += y);
            a.weight
                .iter_mut()
                .zip(&b.weight)
                .for_each(|(x, y)| *x += y);
            a
        });
    (grad_image, total.word, total.weight)
}

/// The geometry of a depthwise 2-D convolution: one `kernel`-sized filter per channel, dilation 1, zero
/// padding `[top, bottom, left, right]` (asymmetric for TensorFlow's "same").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepthwiseGeometry {
    /// Batch size.
    pub batch: usize,
    /// Channels (= groups = output channels).
    pub channels: usize,
    /// Input `[height, width]`.
    pub input: [usize; 2],
    /// Filter `[height, width]`.
    pub kernel: [usize; 2],
    /// `[vertical, horizontal]` stride.
    pub stride: [usize; 2],
    /// Zero padding `[top, bottom, left, right]`.
    pub padding: [usize; 4],
}

impl DepthwiseGeometry {
    /// Output `[height, width]`.
    pub fn output(&self) -> [usize; 2] {
        let [h, w] = self.input;
        let [kh, kw] = self.kernel;
        let [t, b, l, r] = self.padding;
        [
            (h + t + b - kh) / self.stride[0] + 1,
            (w + l + r - kw) / self.stride[1] + 1,
        ]
    }

    /// `[rows, columns]` of the zero-padded input plane that the filter windows read.
    fn padded(&self) -> [usize; 2] {
        let [oh, ow] = self.output();
        [
            (oh - 1) * self.stride[0] + self.kernel[0],
            (ow - 1) * self.stride[1] + self.kernel[1],
        ]
    }
}

/// Index tables of one depthwise call, computed once, so the loops have no division and no bounds logic.
///
/// The zero-padded input plane `xp` `[hp, wp]` is stored as `stride[0] · stride[1]` phase blocks,
/// `block[(pr, pc)][qr][qc] = xp[s0·qr + pr][s1·qc + pc]`, each `[qh, qw]`. A filter tap `(i, j)` then reads
/// one contiguous run of `oh · qw` values of one block for the whole output plane (output rows padded to
/// `qw` columns; the extra columns are computed and dropped), so each tap is a single long multiply-add
/// whatever the plane size or stride.
struct Plan {
    g: DepthwiseGeometry,
    /// Output `[rows, columns]`.
    out: [usize; 2],
    /// Columns of a phase block (= padded output row length).
    qw: usize,
    /// Length of the padded-output run of one tap: `out rows · qw`.
    run: usize,
    /// Length of a phase buffer (blocks plus slack for the last tap's overrun).
    phase_len: usize,
    /// Per tap `i · kw + j`: where its run starts in the phase buffer.
    tap: Vec<usize>,
    /// Per input row: its offset in the phase buffer (`None`: never read).
    row: Vec<Option<usize>>,
    /// Per input column: its offset within a row (`None`: never read).
    column: Vec<Option<usize>>,
}

impl Plan {
    fn new(g: &DepthwiseGeometry) -> Self {
        let [hp, wp] = g.padded();
        let [s0, s1] = g.stride;
        let (qh, qw) = (hp.div_ceil(s0), wp.div_ceil(s1));
        let block = qh * qw;
        let (top, left) = (g.padding[0], g.padding[2]);
        let out = g.output();
        let [kh, kw] = g.kernel;
        Plan {
            g: *g,
            out,
            qw,
            run: out[0] * qw,
            phase_len: s0 * s1 * block + qw + kw,
            tap: (0..kh * kw)
                .map(|t| {
                    let (i, j) = (t / kw, t % kw);
                    ((i % s0) * s1 + j % s1) * block + (i / s0) * qw + j / s1
                })
                .collect(),
            row: (0..g.input[0])
                .map(|ih| {
                    let r = ih + top;
                    (r < hp).then(|| (r % s0) * s1 * block + (r / s0) * qw)
                })
                .collect(),
            column: (0..g.input[1])
                .map(|iw| {
                    let c = iw + left;
                    (c < wp).then(|| (c % s1) * block + c / s1)
                })
                .collect(),
        }
    }

    /// Fill `phases` from one input plane.
    #[inline(always)]
    fn fill(&self, x_plane: &[f32], phases: &mut [f32]) {
        phases.fill(0.0);
        let w = self.g.input[1];
        for (x_row, row) in x_plane.chunks_exact(w).zip(&self.row) {
            let Some(row) = row else { continue };
            for (&v, col) in x_row.iter().zip(&self.column) {
                if let Some(col) = col {
                    phases[row + col] = v;
                }
            }
        }
    }

    /// The input-plane gradient from a phase buffer of padded-plane gradients.
    #[inline(always)]
    fn read(&self, phases: &[f32], gx_plane: &mut [f32]) {
        let w = self.g.input[1];
        for (gx_row, row) in gx_plane.chunks_exact_mut(w).zip(&self.row) {
            for (v, col) in gx_row.iter_mut().zip(&self.column) {
                *v = match (row, col) {
                    (Some(row), Some(col)) => phases[row + col],
                    _ => 0.0,
                };
            }
        }
    }

    /// An output-shaped plane `[oh, ow]` as padded rows `[oh, qw]` (zeros in the extra columns).
    #[inline(always)]
    fn pad_rows(&self, plane: &[f32], padded: &mut [f32]) {
        let ow = self.out[1];
        padded.fill(0.0);
        for (dst, src) in padded.chunks_exact_mut(self.qw).zip(plane.chunks_exact(ow)) {
            dst[..ow].copy_from_slice(src);
        }
    }
}

#[inline(always)]
fn depthwise_forward_planes_body(
    x: &[f32],
    weight: &[f32],
    out: &mut [f32],
    plan: &Plan,
    first_plane: usize,
) {
    let g = &plan.g;
    let [h, w] = g.input;
    let taps = g.kernel[0] * g.kernel[1];
    let [oh_n, ow_n] = plan.out;
    let mut phases = vec![0.0f32; plan.phase_len];
    let mut acc = vec![0.0f32; plan.run];
    for (p, out_plane) in out.chunks_exact_mut(oh_n * ow_n).enumerate() {
        let plane = first_plane + p;
        let c = plane % g.channels;
        plan.fill(&x[plane * h * w..(plane + 1) * h * w], &mut phases);
        acc.fill(0.0);
        for (&wv, &start) in weight[c * taps..(c + 1) * taps].iter().zip(&plan.tap) {
            for (o, &v) in acc.iter_mut().zip(&phases[start..start + plan.run]) {
                *o += wv * v;
            }
        }
        for (dst, src) in out_plane
            .chunks_exact_mut(ow_n)
            .zip(acc.chunks_exact(plan.qw))
        {
            dst.copy_from_slice(&src[..ow_n]);
        }
    }
}

#[inline(always)]
fn depthwise_input_grad_planes_body(
    grad: &[f32],
    weight: &[f32],
    grad_x: &mut [f32],
    plan: &Plan,
    first_plane: usize,
) {
    let g = &plan.g;
    let [h, w] = g.input;
    let taps = g.kernel[0] * g.kernel[1];
    let [oh_n, ow_n] = plan.out;
    let mut phases = vec![0.0f32; plan.phase_len];
    let mut g_rows = vec![0.0f32; plan.run];
    for (p, gx_plane) in grad_x.chunks_exact_mut(h * w).enumerate() {
        let plane = first_plane + p;
        let c = plane % g.channels;
        plan.pad_rows(
            &grad[plane * oh_n * ow_n..(plane + 1) * oh_n * ow_n],
            &mut g_rows,
        );
        phases.fill(0.0);
        for (&wv, &start) in weight[c * taps..(c + 1) * taps].iter().zip(&plan.tap) {
            for (d, &v) in phases[start..start + plan.run].iter_mut().zip(&g_rows) {
                *d += wv * v;
            }
        }
        plan.read(&phases, gx_plane);
    }
}

/// `∂weight` of the channels `first_channel..`, one `[kh · kw]` filter each, summed over the batch.
#[inline(always)]
fn depthwise_weight_grad_channels_body(
    x: &[f32],
    grad: &[f32],
    grad_w: &mut [f32],
    plan: &Plan,
    first_channel: usize,
) {
    let g = &plan.g;
    let [h, w] = g.input;
    let taps = g.kernel[0] * g.kernel[1];
    let [oh_n, ow_n] = plan.out;
    let mut phases = vec![0.0f32; plan.phase_len];
    let mut g_rows = vec![0.0f32; plan.run];
    for (k, gw) in grad_w.chunks_exact_mut(taps).enumerate() {
        let c = first_channel + k;
        for n in 0..g.batch {
            let plane = n * g.channels + c;
            plan.fill(&x[plane * h * w..(plane + 1) * h * w], &mut phases);
            plan.pad_rows(
                &grad[plane * oh_n * ow_n..(plane + 1) * oh_n * ow_n],
                &mut g_rows,
            );
            for (gw, &start) in gw.iter_mut().zip(&plan.tap) {
                let mut lanes = [0.0f32; 16];
                let src = &phases[start..start + plan.run];
                let (a_chunks, b_chunks) = (g_rows.chunks_exact(16), src.chunks_exact(16));
                let tail: f32 = a_chunks
                    .remainder()
                    .iter()
                    .zip(b_chunks.remainder())
                    .map(|(a, b)| a * b)
                    .sum();
                for (a, b) in a_chunks.zip(b_chunks) {
                    for l in 0..16 {
                        lanes[l] += a[l] * b[l];
                    }
                }
                *gw += tail + lanes.iter().sum::<f32>();
            }
        }
    }
}

multiversion!(depthwise_forward_planes, depthwise_forward_planes_body, (x: &[f32], weight: &[f32], out: &mut [f32], plan: &Plan, first_plane: usize));
multiversion!(depthwise_input_grad_planes, depthwise_input_grad_planes_body, (grad: &[f32], weight: &[f32], grad_x: &mut [f32], plan: &Plan, first_plane: usize));
multiversion!(depthwise_weight_grad_channels, depthwise_weight_grad_channels_body, (x: &[f32], grad: &[f32], grad_w: &mut [f32], plan: &Plan, first_channel: usize));

/// Planes (or channels) per parallel task for about 32k multiply-adds per task.
fn items_per_task(per_item: usize) -> usize {
    (32_768 / per_item.max(1)).max(1)
}

/// Depthwise convolution: `out[n, c, oh, ow] = Σ_{i,j} x[n, c, oh·s + i − top, ow·s + j − left] · weight[c, i, j]`
/// (zero outside the input).
///
/// # Shapes
/// - `x`: `[batch, channels, h, w]`, `weight`: `[channels, 1, kh, kw]` (row-major slices)
/// - output: `[batch, channels, oh, ow]` ([`DepthwiseGeometry::output`])
pub fn depthwise_forward(x: &[f32], weight: &[f32], g: &DepthwiseGeometry) -> Vec<f32> {
    let plan = Plan::new(g);
    let [oh, ow] = plan.out;
    let planes = items_per_task(oh * ow * g.kernel[0] * g.kernel[1]);
    let mut out = vec![0.0f32; g.batch * g.channels * oh * ow];
    out.par_chunks_mut(planes * oh * ow)
        .enumerate()
        .for_each(|(t, out)| depthwise_forward_planes(x, weight, out, &plan, t * planes));
    out
}

/// The gradients of [`depthwise_forward`] for the upstream gradient `grad` `[batch, channels, oh, ow]`:
/// `(∂x [batch, channels, h, w], ∂weight [channels, 1, kh, kw])`.
pub fn depthwise_backward(
    x: &[f32],
    weight: &[f32],
    grad: &[f32],
    g: &DepthwiseGeometry,
) -> (Vec<f32>, Vec<f32>) {
    let plan = Plan::new(g);
    let [oh, ow] = plan.out;
    let [h, w] = g.input;
    let per_plane = oh * ow * g.kernel[0] * g.kernel[1];
    let planes = items_per_task(per_plane);
    let mut grad_x = vec![0.0f32; g.batch * g.channels * h * w];
    grad_x
        .par_chunks_mut(planes * h * w)
        .enumerate()
        .for_each(|(t, gx)| depthwise_input_grad_planes(grad, weight, gx, &plan, t * planes));
    let taps = g.kernel[0] * g.kernel[1];
    let channels = items_per_task(per_plane * g.batch);
    let mut grad_w = vec![0.0f32; g.channels * taps];
    grad_w
        .par_chunks_mut(channels * taps)
        .enumerate()
        .for_each(|(t, gw)| depthwise_weight_grad_channels(x, grad, gw, &plan, t * channels));
    (grad_x, grad_w)
}

use super::Activation;

/// `kind(x)` for one value (through [`tanh_approx`]; the sigmoid as `(1 + tanh(x / 2)) / 2`, max abs error
/// ≈ 1.5e-7).
#[inline(always)]
pub fn activation(kind: Activation, x: f32) -> f32 {
    match kind {
        Activation::Tanh => tanh_approx(x),
        Activation::Sigmoid => 0.5 + 0.5 * tanh_approx(0.5 * x),
    }
}

/// The upstream gradient `grad` times `kind'(x)`.
#[inline(always)]
pub fn activation_grad(kind: Activation, x: f32, grad: f32) -> f32 {
    let y = activation(kind, x);
    match kind {
        Activation::Tanh => grad * (1.0 - y * y),
        Activation::Sigmoid => grad * y * (1.0 - y),
    }
}

#[inline(always)]
fn activation_forward_body(x: &[f32], out: &mut [f32], kind: Activation) {
    let out = &mut out[..x.len()];
    match kind {
        // One loop per kind, so that each vectorises without a branch inside.
        Activation::Tanh => {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = activation(Activation::Tanh, v);
            }
        }
        Activation::Sigmoid => {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = activation(Activation::Sigmoid, v);
            }
        }
    }
}

#[inline(always)]
fn activation_backward_body(x: &[f32], grad: &[f32], out: &mut [f32], kind: Activation) {
    let (grad, out) = (&grad[..x.len()], &mut out[..x.len()]);
    match kind {
        Activation::Tanh => {
            for ((o, &v), &g) in out.iter_mut().zip(x).zip(grad) {
                *o = activation_grad(Activation::Tanh, v, g);
            }
        }
        Activation::Sigmoid => {
            for ((o, &v), &g) in out.iter_mut().zip(x).zip(grad) {
                *o = activation_grad(Activation::Sigmoid, v, g);
            }
        }
    }
}

multiversion!(activation_forward_chunk, activation_forward_body, (x: &[f32], out: &mut [f32], kind: Activation));
multiversion!(activation_backward_chunk, activation_backward_body, (x: &[f32], grad: &[f32], out: &mut [f32], kind: Activation));

/// Values per parallel task of the element-wise kernels.
const ELEMENTWISE_TASK: usize = 1 << 15;

/// `kind(x)` element by element.
pub fn activation_forward(x: &[f32], kind: Activation) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(ELEMENTWISE_TASK)
        .zip(x.par_chunks(ELEMENTWISE_TASK))
        .for_each(|(out, x)| activation_forward_chunk(x, out, kind));
    out
}

/// `grad · kind'(x)` element by element.
pub fn activation_backward(x: &[f32], grad: &[f32], kind: Activation) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(ELEMENTWISE_TASK)
        .zip(
            x.par_chunks(ELEMENTWISE_TASK)
                .zip(grad.par_chunks(ELEMENTWISE_TASK)),
        )
        .for_each(|(out, (x, grad))| activation_backward_chunk(x, grad, out, kind));
    out
}

/// The shape of a dense (one-group) 2-D convolution: `[batch, in, h, w] → [batch, out, oh, ow]` with a
/// `[out, in, kh, kw]` weight and symmetric zero padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Images.
    pub batch: usize,
    /// Input channels.
    pub channels_in: usize,
    /// Output channels.
    pub channels_out: usize,
    /// Input `[h, w]`.
    pub input: [usize; 2],
    /// Kernel `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Output `[oh, ow]`.
    pub output: [usize; 2],
    /// Stride `[sh, sw]`.
    pub stride: [usize; 2],
    /// Zero padding `[ph, pw]`, the same on both sides.
    pub padding: [usize; 2],
    /// Dilation `[dh, dw]`.
    pub dilation: [usize; 2],
}

impl ConvGeometry {
    /// Rows of the im2col matrix: `in · kh · kw`.
    pub fn patch(&self) -> usize {
        self.channels_in * self.kernel[0] * self.kernel[1]
    }

    /// Output pixels per image: `oh · ow`.
    pub fn pixels(&self) -> usize {
        self.output[0] * self.output[1]
    }
}

/// For kernel column `j`: the input column offset (`ix = ox · sw + offset`) and the output columns `[x0, x1)`
/// whose input column lies inside the image.
fn valid_columns(g: &ConvGeometry, j: usize) -> (isize, usize, usize) {
    let (w, ow, sw) = (g.input[1], g.output[1], g.stride[1]);
    let offset = (j * g.dilation[1]) as isize - g.padding[1] as isize;
    let x0 = (0..ow)
        .find(|&ox| (ox * sw) as isize + offset >= 0)
        .unwrap_or(ow);
    let x1 = (0..ow)
        .rev()
        .find(|&ox| (ox * sw) as isize + offset < w as isize)
        .map_or(0, |ox| ox + 1)
        .max(x0);
    (offset, x0, x1)
}

/// The im2col matrix of `images` (a range of the batch): row `(c, i, j)` holds, for every image and output
/// pixel `(y, x)`, the input value the kernel tap `(i, j)` of channel `c` reads there (0 in the padding).
///
/// # Shapes
/// - `x`: `[batch, in, h, w]` (row-major)
/// - output: `[in · kh · kw, images · oh · ow]`
pub fn im2col(x: &[f32], g: &ConvGeometry, images: std::ops::Range<usize>) -> Vec<f32> {
    let [h, w] = g.input;
    let [kh, kw] = g.kernel;
    let [oh, ow] = g.output;
    let [sh, sw] = g.stride;
    let [ph, _] = g.padding;
    let [dh, _] = g.dilation;
    let row_len = images.len() * g.pixels();
    let mut cols = vec![0.0f32; g.patch() * row_len];
    if row_len == 0 {
        return cols;
    }
    cols.par_chunks_mut(row_len)
        .enumerate()
        .for_each(|(row, out)| {
            let (c, i, j) = (row / (kh * kw), (row / kw) % kh, row % kw);
            let (offset, x0, x1) = valid_columns(g, j);
            for (k, n) in images.clone().enumerate() {
                let plane = &x[(n * g.channels_in + c) * h * w..][..h * w];
                let out = &mut out[k * g.pixels()..][..g.pixels()];
                for oy in 0..oh {
                    let iy = (oy * sh + i * dh) as isize - ph as isize;
                    if iy < 0 || iy >= h as isize {
                        continue; // padding: the zeros are already there
                    }
                    let src = &plane[iy as usize * w..][..w];
                    let dst = &mut out[oy * ow..][..ow];
                    if sw == 1 {
                        let start = (x0 as isize + offset) as usize;
                        dst[x0..x1].copy_from_slice(&src[start..start + (x1 - x0)]);
                    } else {
                        for ox in x0..x1 {
                            dst[ox] = src[((ox * sw) as isize + offset) as usize];
                        }
                    }
                }
            }
        });
    cols
}

/// The adjoint of [`im2col`]: adds every column value back onto the input position it was read from, for the
/// images `images` of `dx` (the input gradient of a convolution from `Wᵀ · grad`'s columns).
///
/// # Shapes
/// - `cols`: `[in · kh · kw, images · oh · ow]`
/// - `dx`: `[batch, in, h, w]` (row-major), added to
pub fn col2im(cols: &[f32], g: &ConvGeometry, images: std::ops::Range<usize>, dx: &mut [f32]) {
    let [h, w] = g.input;
    let [kh, kw] = g.kernel;
    let [oh, ow] = g.output;
    let [sh, sw] = g.stride;
    let [ph, _] = g.padding;
    let [dh, _] = g.dilation;
    let row_len = images.len() * g.pixels();
    if row_len == 0 || h * w == 0 {
        return;
    }
    let planes = &mut dx[images.start * g.channels_in * h * w..images.end * g.channels_in * h * w];
    planes
        .par_chunks_mut(h * w)
        .enumerate()
        .for_each(|(index, plane)| {
            let (k, c) = (index / g.channels_in, index % g.channels_in);
            for i in 0..kh {
                for j in 0..kw {
                    let (offset, x0, x1) = valid_columns(g, j);
                    let row = (c * kh + i) * kw + j;
                    let taps = &cols[row * row_len + k * g.pixels()..][..g.pixels()];
                    for oy in 0..oh {
                        let iy = (oy * sh + i * dh) as isize - ph as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        let src = &taps[oy * ow..][..ow];
                        let dst = &mut plane[iy as usize * w..][..w];
                        if sw == 1 {
                            let start = (x0 as isize + offset) as usize;
                            for (d, s) in dst[start..start + (x1 - x0)].iter_mut().zip(&src[x0..x1])
                            {
                                *d += *s;
                            }
                        } else {
                            for ox in x0..x1 {
                                dst[((ox * sw) as isize + offset) as usize] += src[ox];
                            }
                        }
                    }
                }
            }
        });
}

/// The rows of `images` of `grad` grouped by channel: row `c` holds channel `c` of each image in turn.
///
/// # Shapes
/// - `grad`: `[batch, channels, pixels]` (row-major)
/// - output: `[channels, images · pixels]`
pub fn channel_major(
    grad: &[f32],
    channels: usize,
    pixels: usize,
    images: std::ops::Range<usize>,
) -> Vec<f32> {
    let row_len = images.len() * pixels;
    let mut out = vec![0.0f32; channels * row_len];
    if row_len == 0 {
        return out;
    }
    out.par_chunks_mut(row_len)
        .enumerate()
        .for_each(|(c, row)| {
            for (k, n) in images.clone().enumerate() {
                row[k * pixels..][..pixels]
                    .copy_from_slice(&grad[(n * channels + c) * pixels..][..pixels]);
            }
        });
    out
}

/// The inverse of [`channel_major`]: row `c` of `rows` (`[channels, images · pixels]`) back into channel `c`
/// of each of `images` in `out` (`[batch, channels, pixels]`).
pub fn scatter_channel_major(
    rows: &[f32],
    channels: usize,
    pixels: usize,
    images: std::ops::Range<usize>,
    out: &mut [f32],
) {
    let row_len = images.len() * pixels;
    let first = images.start;
    if row_len == 0 {
        return;
    }
    out[first * channels * pixels..images.end * channels * pixels]
        .par_chunks_mut(channels * pixels)
        .enumerate()
        .for_each(|(k, image)| {
            for c in 0..channels {
                image[c * pixels..][..pixels]
                    .copy_from_slice(&rows[c * row_len + k * pixels..][..pixels]);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tanh_approx_is_within_4e_7_of_f64_tanh() {
        let mut worst = 0.0f64;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4; // −20 … 20
            let err = (tanh_approx(x) as f64 - (x as f64).tanh()).abs();
            worst = worst.max(err);
        }
        assert!(worst < 4e-7, "max abs error {worst}");
        // Odd, exact at 0, saturates to ±1.
        assert_eq!(tanh_approx(0.0), 0.0);
        assert_eq!(tanh_approx(-0.3), -tanh_approx(0.3));
        assert!((tanh_approx(50.0) - 1.0).abs() < 1e-6);
    }

    /// The kernels against a direct f64 evaluation of the formulas, with odd sizes (remainder lanes, one
    /// partial task).
    #[test]
    fn forward_and_backward_match_the_formulas() {
        let (rows, classes, dim) = (37usize, 5usize, 45usize);
        let value = |i: usize, scale: f32| ((i as f32 * 0.618_034).fract() - 0.5) * scale;
        let image: Vec<f32> = (0..rows * dim).map(|i| value(i, 3.0)).collect();
        let word: Vec<f32> = (0..classes * dim).map(|i| value(i + 7, 2.0)).collect();
        let weight: Vec<f32> = (0..dim).map(|i| value(i + 3, 1.0)).collect();
        let grad: Vec<f32> = (0..rows * classes).map(|i| value(i + 11, 1.0)).collect();
        let out = tanh_bilinear_forward(&image, &word, &weight, dim);
        let (gi, gw, gv) = tanh_bilinear_backward(&image, &word, &weight, &grad, dim);
        let mut e_gi = vec![0.0f64; rows * dim];
        let mut e_gw = vec![0.0f64; classes * dim];
        let mut e_gv = vec![0.0f64; dim];
        for n in 0..rows {
            for c in 0..classes {
                let mut o = 0.0f64;
                let g = grad[n * classes + c] as f64;
                for k in 0..dim {
                    let (i, w, v) = (
                        image[n * dim + k] as f64,
                        word[c * dim + k] as f64,
                        weight[k] as f64,
                    );
                    let t = (i * w).tanh();
                    o += v * t;
                    let s = g * v * (1.0 - t * t);
                    e_gi[n * dim + k] += s * w;
                    e_gw[c * dim + k] += s * i;
                    e_gv[k] += g * t;
                }
                assert!(
                    (out[n * classes + c] as f64 - o).abs() < 1e-5,
                    "out[{n},{c}]"
                );
            }
        }
        for (name, got, want) in [
            ("image", &gi, &e_gi),
            ("word", &gw, &e_gw),
            ("weight", &gv, &e_gv),
        ] {
            for (a, b) in got.iter().zip(want.iter()) {
                assert!(
                    (*a as f64 - b).abs() < 1e-4 * (1.0 + b.abs()),
                    "∂{name}: {a} vs {b}"
                );
            }
        }
    }

    /// The depthwise kernels against a direct evaluation, for TF-"same" geometries (stride 1 and 2,
    /// asymmetric padding) and a padded-on-every-side one.
    #[test]
    fn depthwise_matches_the_formulas() {
        let value = |i: usize, scale: f32| ((i as f32 * 0.618_034).fract() - 0.5) * scale;
        for (input, kernel, stride, padding) in [
            (
                [7usize, 7usize],
                [3usize, 3usize],
                [1usize, 1usize],
                [1usize, 1, 1, 1],
            ),
            ([14, 14], [5, 5], [2, 2], [1, 2, 1, 2]),
            ([8, 9], [3, 3], [2, 2], [0, 1, 1, 1]),
            ([5, 6], [5, 3], [1, 2], [2, 2, 0, 3]),
        ] {
            let g = DepthwiseGeometry {
                batch: 3,
                channels: 4,
                input,
                kernel,
                stride,
                padding,
            };
            let [h, w] = input;
            let [kh, kw] = kernel;
            let [oh_n, ow_n] = g.output();
            let x: Vec<f32> = (0..3 * 4 * h * w).map(|i| value(i, 2.0)).collect();
            let weight: Vec<f32> = (0..4 * kh * kw).map(|i| value(i + 5, 1.0)).collect();
            let grad: Vec<f32> = (0..3 * 4 * oh_n * ow_n)
                .map(|i| value(i + 9, 1.0))
                .collect();
            let out = depthwise_forward(&x, &weight, &g);
            let (gx, gw) = depthwise_backward(&x, &weight, &grad, &g);
            let mut e_out = vec![0.0f64; out.len()];
            let mut e_gx = vec![0.0f64; gx.len()];
            let mut e_gw = vec![0.0f64; gw.len()];
            for n in 0..3 {
                for c in 0..4 {
                    let plane = n * 4 + c;
                    for oh in 0..oh_n {
                        for ow in 0..ow_n {
                            let o = plane * oh_n * ow_n + oh * ow_n + ow;
                            for i in 0..kh {
                                for j in 0..kw {
                                    let ih = (oh * stride[0] + i) as isize - padding[0] as isize;
                                    let iw = (ow * stride[1] + j) as isize - padding[2] as isize;
                                    if ih < 0 || iw < 0 || ih >= h as isize || iw >= w as isize {
                                        continue;
                                    }
                                    let xi = plane * h * w + ih as usize * w + iw as usize;
                                    let wi = c * kh * kw + i * kw + j;
                                    e_out[o] += x[xi] as f64 * weight[wi] as f64;
                                    e_gx[xi] += grad[o] as f64 * weight[wi] as f64;
                                    e_gw[wi] += grad[o] as f64 * x[xi] as f64;
                                }
                            }
                        }
                    }
                }
            }
            for (name, got, want) in [
                ("out", &out, &e_out),
                ("∂x", &gx, &e_gx),
                ("∂w", &gw, &e_gw),
            ] {
                assert_eq!(got.len(), want.len());
                for (a, b) in got.iter().zip(want.iter()) {
                    assert!(
                        (*a as f64 - b).abs() < 1e-5 * (1.0 + b.abs()),
                        "{name} {g:?}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
