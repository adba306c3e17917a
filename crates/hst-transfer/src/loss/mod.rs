//! HST's losses (reference `loss/HST.py`).

pub mod asymmetric;
pub mod dtl;
pub mod instance;
pub mod partial_bce;
pub mod prototype;

pub use asymmetric::{AsymmetricLoss, AsymmetricLossConfig};
pub use dtl::DtlLoss;
pub use instance::{InstanceContrastiveLoss, InstanceContrastiveLossConfig};
pub use partial_bce::{PartialBceLoss, PartialBceLossConfig};
pub use prototype::{PrototypeLoss, PrototypeLossConfig, PrototypeLossSign};
