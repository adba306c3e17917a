//! MS-COCO 2014 / 2017 instances JSON (image-level labels).
//!
//! As in the reference: every image of the JSON is a row, in the JSON's `images` order (images
//! without annotations are all-negative rows); a category id maps to its position in the JSON's
//! `categories` list (the reference's `category.json` is that order); every annotation counts,
//! crowd annotations included (`getAnnIds` without an `iscrowd` filter).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::datasets::{check_images_exist, read_json, FileDataset};
use crate::error::{DataError, Result};
use crate::labels::LabelMatrix;

#[derive(Deserialize)]
struct InstancesJson {
    images: Vec<CocoImage>,
    annotations: Vec<CocoAnnotation>,
    categories: Vec<CocoCategory>,
}

#[derive(Deserialize)]
struct CocoImage {
    id: u64,
    file_name: String,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    image_id: u64,
    category_id: u64,
}

#[derive(Deserialize)]
struct CocoCategory {
    id: u64,
    name: String,
}

/// Reads a COCO instances JSON (`annotations/instances_train2017.json`, …) with its images in
/// `image_dir` (`train2017/`, …).
///
/// # Errors
/// [`DataError::Json`] (with line and column) for malformed or truncated JSON;
/// [`DataError::Invalid`] naming the JSON key for a duplicate image id, an annotation of an
/// unknown image or category; [`DataError::MissingImage`] for a missing image file.
pub fn read_coco(
    annotations: impl AsRef<Path>,
    image_dir: impl AsRef<Path>,
) -> Result<FileDataset> {
    let path = annotations.as_ref();
    let image_dir = image_dir.as_ref();
    let json: InstancesJson = read_json(path)?;

    let mut category_index = HashMap::with_capacity(json.categories.len());
    for (k, cat) in json.categories.iter().enumerate() {
        if category_index.insert(cat.id, k).is_some() {
            return Err(DataError::invalid(
                path,
                format!("categories[{k}].id"),
                format!("duplicate category id {}", cat.id),
            ));
        }
    }
    let mut row_of = HashMap::with_capacity(json.images.len());
    for (n, img) in json.images.iter().enumerate() {
        if row_of.insert(img.id, n).is_some() {
            return Err(DataError::invalid(
                path,
                format!("images[{n}].id"),
                format!("duplicate image id {}", img.id),
            ));
        }
    }

    let classes = json.categories.len();
    let mut values = vec![-1i8; json.images.len() * classes];
    for (k, ann) in json.annotations.iter().enumerate() {
        let n = *row_of.get(&ann.image_id).ok_or_else(|| {
            DataError::invalid(
                path,
                format!("annotations[{k}].image_id"),
                format!("image id {} is not in `images`", ann.image_id),
            )
        })?;
        let c = *category_index.get(&ann.category_id).ok_or_else(|| {
            DataError::invalid(
                path,
                format!("annotations[{k}].category_id"),
                format!("category id {} is not in `categories`", ann.category_id),
            )
        })?;
        values[n * classes + c] = 1;
    }

    let images: Vec<PathBuf> = json
        .images
        .iter()
        .map(|img| image_dir.join(&img.file_name))
        .collect();
    check_images_exist(&images, path)?;
    let labels = LabelMatrix::new(json.images.len(), classes, values)?;
    tracing::debug!(
        json = %path.display(),
        images = images.len(),
        classes,
        annotations = json.annotations.len(),
        "read COCO instances"
    );
    FileDataset::new(
        json.categories.into_iter().map(|c| c.name).collect(),
        images,
        labels,
    )
}
