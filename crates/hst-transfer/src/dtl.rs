//! DTL (differentiable threshold learning): the learnable thresholds τ_ist and τ_cst.

use burn::module::Param;
use burn::prelude::*;

/// Configuration of [`Thresholds`].
#[derive(Config, Debug)]
pub struct ThresholdsConfig {
    /// Initial (or fixed) τ_ist. Default: 1.0 (the reference hard-initialises learnable thresholds to 1.0;
    /// fixed thresholds take the `--intraMargin` value).
    #[config(default = 1.0)]
    pub ist: f64,
    /// Initial (or fixed) τ_cst. Default: 1.0.
    #[config(default = 1.0)]
    pub cst: f64,
    /// Whether the thresholds are trained (DTL). When false they are constants (the "fixed thresholds"
    /// ablation). Default: true.
    #[config(default = true)]
    pub learnable: bool,
}

/// The two thresholds of HST (reference `intraMargin`, `interMargin`). They are `Param`s, trained with the
/// rest of the model (reference: same Adam group, same lr and weight decay) when learnable.
#[derive(Module, Debug)]
pub struct Thresholds<B: Backend> {
    /// τ_ist, `[1]` (reference `model.intraMargin`).
    #[doc(alias = "intraMargin")]
    pub ist: Param<Tensor<B, 1>>,
    /// τ_cst, `[1]` (reference `model.interMargin`).
    #[doc(alias = "interMargin")]
    pub cst: Param<Tensor<B, 1>>,
}

impl ThresholdsConfig {
    /// Build the thresholds on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Thresholds<B> {
        let make = |v: f64| {
            Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![v as f32], [1]),
                device,
            ))
            .set_require_grad(self.learnable)
        };
        Thresholds {
            ist: make(self.ist),
            cst: make(self.cst),
        }
    }
}

impl<B: Backend> Thresholds<B> {
    /// τ_ist as a `[1]` tensor (tracked when learnable).
    #[doc(alias = "intraMargin")]
    pub fn ist(&self) -> Tensor<B, 1> {
        self.ist.val()
    }

    /// τ_cst as a `[1]` tensor (tracked when learnable).
    #[doc(alias = "interMargin")]
    pub fn cst(&self) -> Tensor<B, 1> {
        self.cst.val()
    }

    /// Both values read back to the host, `(τ_ist, τ_cst)`, for logging.
    pub fn values(&self) -> (f64, f64) {
        (
            self.ist.val().into_scalar().to_f64(),
            self.cst.val().into_scalar().to_f64(),
        )
    }
}
