//! # hst-data
//!
//! Data for HST (Heterogeneous Semantic Transfer, multi-label recognition with partial labels):
//!
//! - [`labels`]: [`Label`], [`LabelMatrix`] (tri-state `1` / `-1` / `0`) and [`PartialLabels`]
//!   (partial labels with the full labels beside them), with statistics;
//! - [`protocol`]: the reference's partial-label protocol, bit-identical to numpy
//!   (`np.random.seed(0)`, `u < p`);
//! - [`label_file`]: label matrices as CSV;
//! - [`datasets`]: readers for VOC 2007/2012, COCO 2014/2017, VG-200 and a generic manifest, all
//!   implementing [`MultiLabelSource`];
//! - [`embedded`]: the built-in mosaic dataset (20 classes, 4,000 + 2,000 images, no files
//!   needed);
//! - [`embeddings`]: GloVe and `.npy` word vectors and the class matrix;
//! - [`transform`]: the reference's train/test image transforms, seeded per sample;
//! - [`batcher`]: parallel decoding into [`HstBatch`]es of tensors;
//! - [`cooccurrence`]: the GGNN adjacency from partial labels.
//!
//! ## Quick start
//!
//! ```no_run
//! use hst_data::{EmbeddedDataset, MultiLabelSource, PartialLabels, TransformConfig, HstBatcher, BatchMode};
//! # fn main() -> Result<(), hst_data::DataError> {
//! let data = EmbeddedDataset::load()?;
//! let labels = PartialLabels::from_protocol(data.train.full_labels().clone(), 0.3, 0);
//! let adjacency = hst_data::cooccurrence::adjacency(labels.partial(), Default::default());
//! let transform = TransformConfig::embedded().init();
//! let batcher = HstBatcher::new(transform, BatchMode::Train);
//! for indices in hst_data::batcher::epoch_batches(data.train.len(), 32, true, true, 0, 0) {
//!     let prepared = batcher.prepare(&data.train, labels.partial(), &indices, 0)?;
//!     // let batch = prepared.into_batch::<B>(&device);
//! #   let _ = (prepared, &adjacency);
//! }
//! # Ok(())
//! # }
//! ```

pub mod batcher;
pub mod cooccurrence;
pub mod datasets;
pub mod embedded;
pub mod embeddings;
pub mod error;
pub mod label_file;
pub mod labels;
pub mod protocol;
pub mod rng;
pub mod transform;

pub use batcher::{BatchMode, HstBatch, HstBatcher, PreparedBatch};
pub use cooccurrence::NanPolicy;
pub use datasets::{FileDataset, MultiLabelSource};
pub use embedded::{EmbeddedConfig, EmbeddedDataset, EmbeddedImages, EmbeddedSplit};
pub use embeddings::{ClassEmbeddings, WordVectors};
pub use error::DataError;
pub use labels::{Label, LabelMatrix, LabelStats, PartialLabels};
pub use transform::{ImageTransform, Normalization, TransformConfig};
