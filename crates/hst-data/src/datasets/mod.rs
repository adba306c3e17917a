//! Dataset readers and the [`MultiLabelSource`] trait shared by file datasets and the embedded
//! dataset.
//!
//! Each reader returns a [`FileDataset`]: image paths, full labels `[images, classes]` and class
//! names, in the order the reference uses.

pub mod coco;
pub mod manifest;
pub mod vg;
pub mod voc;

use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::error::{DataError, Result};
use crate::labels::LabelMatrix;

/// A multi-label image dataset: what the trainer needs from any data source.
pub trait MultiLabelSource: Send + Sync {
    /// Number of images.
    fn len(&self) -> usize;

    /// Whether there is no image.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Class names, `[classes]`.
    fn classes(&self) -> &[String];

    /// Full ground-truth labels, `[images, classes]`.
    fn full_labels(&self) -> &LabelMatrix;

    /// Decodes image `index` as 8-bit RGB.
    ///
    /// # Errors
    /// A missing or corrupt image gives an error naming the file.
    fn load_image(&self, index: usize) -> Result<RgbImage>;

    /// A name for image `index` (its path or id), for messages and exports.
    fn image_name(&self, index: usize) -> String;
}

/// A dataset of image files with full labels.
#[derive(Clone, Debug)]
pub struct FileDataset {
    classes: Vec<String>,
    images: Vec<PathBuf>,
    labels: LabelMatrix,
}

impl FileDataset {
    /// Pairs image paths with the rows of `labels`.
    ///
    /// # Errors
    /// [`DataError::Shape`] if the numbers of images, label rows or classes disagree.
    pub fn new(classes: Vec<String>, images: Vec<PathBuf>, labels: LabelMatrix) -> Result<Self> {
        if images.len() != labels.images() || classes.len() != labels.classes() {
            return Err(DataError::Shape(format!(
                "{} images and {} classes, but labels are {}x{}",
                images.len(),
                classes.len(),
                labels.images(),
                labels.classes()
            )));
        }
        Ok(Self {
            classes,
            images,
            labels,
        })
    }

    /// Image paths, `[images]`.
    pub fn image_paths(&self) -> &[PathBuf] {
        &self.images
    }

    /// Full labels, `[images, classes]`.
    pub fn labels(&self) -> &LabelMatrix {
        &self.labels
    }

    /// Class names, `[classes]`.
    pub fn class_names(&self) -> &[String] {
        &self.classes
    }

    /// The images `indices` (in that order) as a new dataset.
    pub fn select(&self, indices: &[usize]) -> Self {
        Self {
            classes: self.classes.clone(),
            images: indices.iter().map(|&i| self.images[i].clone()).collect(),
            labels: self.labels.select_rows(indices),
        }
    }
}

impl MultiLabelSource for FileDataset {
    fn len(&self) -> usize {
        self.images.len()
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }

    fn full_labels(&self) -> &LabelMatrix {
        &self.labels
    }

    fn load_image(&self, index: usize) -> Result<RgbImage> {
        decode_image_file(&self.images[index])
    }

    fn image_name(&self, index: usize) -> String {
        self.images[index].display().to_string()
    }
}

/// Reads and decodes an image file (format guessed from its content) as 8-bit RGB.
///
/// # Errors
/// [`DataError::Io`] if it cannot be read, [`DataError::Image`] if it cannot be decoded.
pub fn decode_image_file(path: &Path) -> Result<RgbImage> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if !meta.is_file() {
        return Err(DataError::invalid(
            path,
            "",
            "not a regular file (a directory, FIFO or device cannot be an image)",
        ));
    }
    if meta.len() > MAX_IMAGE_FILE_BYTES {
        return Err(DataError::invalid(
            path,
            "",
            format!(
                "{} bytes, more than the {} MiB an image file may have",
                meta.len(),
                MAX_IMAGE_FILE_BYTES >> 20
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if is_truncated_jpeg(&bytes) {
        return Err(DataError::invalid(
            path,
            "",
            "truncated JPEG: no end-of-image marker (FF D9) at the end of the file",
        ));
    }
    let img = image::load_from_memory(&bytes).map_err(|source| DataError::Image {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(img.into_rgb8())
}

/// The largest image file [`decode_image_file`] reads: 256 MiB (a 448-px JPEG is ~100 KiB).
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;

/// A JPEG (starts with SOI, FF D8) whose end-of-image marker FF D9 is missing from its last KiB, past
/// trailing padding: the decoder would fill the missing rows with grey and say nothing.
fn is_truncated_jpeg(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let end = bytes
        .iter()
        .rposition(|&b| !matches!(b, 0x00 | b' ' | b'\n' | b'\r' | b'\t'))
        .map_or(0, |i| i + 1);
    let tail = &bytes[end.saturating_sub(1024)..end];
    !tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Fails with [`DataError::MissingImage`] for the first path of `images` that is not a file.
pub(crate) fn check_images_exist(images: &[PathBuf], listed_in: &Path) -> Result<()> {
    match images.iter().find(|p| !p.is_file()) {
        Some(p) => Err(DataError::MissingImage {
            image: p.clone(),
            listed_in: listed_in.to_path_buf(),
        }),
        None => Ok(()),
    }
}

/// Reads a whole text file; bytes that are not UTF-8 are an error naming the line and column.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
        let column = 1 + valid.iter().rev().take_while(|&&b| b != b'\n').count();
        DataError::invalid(
            path,
            format!("line {line}"),
            format!("column {column}: not UTF-8 text (save the file as UTF-8)"),
        )
    })
}

/// Reads a JSON file into `T`.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| DataError::Json {
        path: path.to_path_buf(),
        source,
    })
}
