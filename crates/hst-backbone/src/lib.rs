//! CNN trunks (torchvision-layout ResNet, EfficientNet-Lite), weight import and the SARL head of HST.
//!
//! Data flow: an image batch `[batch, 3, height, width]` enters a [`trunk::Trunk`], whose final feature map
//! `[batch, channels, height/32, width/32]` feeds [`sarl::Sarl`] (semantic decoupling → GGNN → per-class classifier).

pub mod error;
pub mod kernels;
pub mod linear;
pub mod sarl;
pub mod trunk;
pub mod weights;

pub use error::BackboneError;
pub use trunk::{Trunk, TrunkConfig, TrunkFeatures, TrunkKind};
