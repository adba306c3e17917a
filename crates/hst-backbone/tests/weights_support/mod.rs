//! Helpers shared by the trunk/weights integration tests: the shared fixture folder, reading
//! `*.expected.safetensors` tensors, and the relative-error measure.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::prelude::*;

/// The test backend.
pub type TB = burn::backend::Flex;

#[path = "../../../../tests/support/shared.rs"]
mod support;

/// The `../shared` folder, or `None` after a counted skip note; a panic under CI (see
/// `tests/support/shared.rs`).
pub fn shared_dir() -> Option<PathBuf> {
    support::shared("")
}

/// A float32 tensor from a safetensors file, as a burn tensor of rank `D`.
pub fn read_tensor<const D: usize>(path: &Path, name: &str, device: &Device<TB>) -> Tensor<TB, D> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
    let view = file
        .tensor(name)
        .unwrap_or_else(|e| panic!("{}: tensor {name}: {e}", path.display()));
    assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name} must be F32");
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let shape: [usize; D] = view
        .shape()
        .try_into()
        .unwrap_or_else(|_| panic!("{name}: expected rank {D}, got {:?}", view.shape()));
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Max-normalised relative error: `max|actual − expected| / max(max|expected|, 1e-12)`.
pub fn relative_error<const D: usize>(actual: Tensor<TB, D>, expected: Tensor<TB, D>) -> f32 {
    assert_eq!(actual.dims(), expected.dims(), "shapes differ");
    let diff: f32 = (actual - expected.clone()).abs().max().into_scalar();
    let scale: f32 = expected.abs().max().into_scalar();
    diff / scale.max(1e-12)
}

/// Assert `relative_error(actual, expected) <= tolerance`, naming the tensor; returns the error.
pub fn assert_close<const D: usize>(
    what: &str,
    actual: Tensor<TB, D>,
    expected: Tensor<TB, D>,
    tolerance: f32,
) -> f32 {
    let error = relative_error(actual, expected);
    eprintln!("{what}: max-normalised relative error {error:.3e}");
    assert!(
        error <= tolerance,
        "{what}: max|actual - expected| / max|expected| = {error:.3e} > {tolerance:.0e}"
    );
    error
}
