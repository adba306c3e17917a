//! A batch's partial labels, on the device and on the host.

use burn::prelude::*;

use crate::error::TransferError;

/// The partial labels `y ∈ {−1, 0, 1}` of a batch, as a device tensor and (when known) the same values on
/// the host.
///
/// The losses run on the tensor; the instance contrastive loss builds its term lists from label values, and
/// takes them from the host copy when there is one, so that a training step never waits for the device.
/// Built from a tensor alone ([`From<Tensor<B, 2>>`]), the labels are read back once, when first needed.
///
/// # Shapes
/// - tensor: `[batch, classes]`
/// - host: `batch · classes` values, row-major
#[derive(Debug, Clone)]
pub struct BatchLabels<B: Backend> {
    tensor: Tensor<B, 2>,
    host: Option<Vec<f32>>,
}

impl<B: Backend> BatchLabels<B> {
    /// Labels with both copies. `host` must hold the tensor's values, row-major.
    ///
    /// # Errors
    /// [`TransferError::Shape`] if `host` does not hold `batch · classes` values.
    pub fn new(tensor: Tensor<B, 2>, host: Vec<f32>) -> Result<Self, TransferError> {
        let [batch, classes] = tensor.dims();
        if host.len() != batch * classes {
            return Err(TransferError::Shape {
                what: "batch labels: host copy",
                expected: vec![batch * classes],
                got: vec![host.len()],
            });
        }
        Ok(Self {
            tensor,
            host: Some(host),
        })
    }

    /// Upload host labels `[batch, classes]` (row-major) to `device`, keeping the host copy.
    ///
    /// # Errors
    /// [`TransferError::Shape`] if `host` does not hold `batch · classes` values.
    pub fn from_host(
        host: Vec<f32>,
        [batch, classes]: [usize; 2],
        device: &B::Device,
    ) -> Result<Self, TransferError> {
        if host.len() != batch * classes {
            return Err(TransferError::Shape {
                what: "batch labels: host values",
                expected: vec![batch * classes],
                got: vec![host.len()],
            });
        }
        let tensor = Tensor::from_data(TensorData::new(host.clone(), [batch, classes]), device);
        Ok(Self {
            tensor,
            host: Some(host),
        })
    }

    /// The device tensor, `[batch, classes]`.
    pub fn tensor(&self) -> &Tensor<B, 2> {
        &self.tensor
    }

    /// `[batch, classes]`.
    pub fn dims(&self) -> [usize; 2] {
        self.tensor.dims()
    }

    /// Whether the host copy is present (no device read is needed for [`host`](Self::host)).
    pub fn has_host(&self) -> bool {
        self.host.is_some()
    }

    /// The host values, row-major; read back from the device if this value was built from a tensor alone.
    pub fn host(&self) -> std::borrow::Cow<'_, [f32]> {
        match &self.host {
            Some(h) => std::borrow::Cow::Borrowed(h),
            None => std::borrow::Cow::Owned(
                self.tensor
                    .clone()
                    .detach()
                    .into_data()
                    .convert::<f32>()
                    .into_vec()
                    .expect("float labels convert to f32"),
            ),
        }
    }
}

impl<B: Backend> From<Tensor<B, 2>> for BatchLabels<B> {
    fn from(tensor: Tensor<B, 2>) -> Self {
        Self { tensor, host: None }
    }
}
