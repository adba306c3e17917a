//! Visual Genome VG-200 in the reference's format.
//!
//! - an image list (`train_list_500.txt`, `test_list_500.txt`): one image file name per line;
//! - a labels JSON (`vg_category_200_labels_index.json`): `{ "<file name>": [class indices] }`
//!   with indices in `0..classes`; listed classes are positive, all others negative;
//! - the class names: a text file with one name per line, or a JSON array of names, or a JSON
//!   object `{ "<name>": index }`;
//! - images under `image_dir` (`VG_100K/`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::datasets::{check_images_exist, read_json, read_text, FileDataset};
use crate::error::{DataError, Result};
use crate::labels::LabelMatrix;

/// Reads a VG-200 split.
///
/// # Errors
/// [`DataError::Invalid`] naming the file and line (image list) or key (labels JSON) for an
/// image without labels or an index out of range; [`DataError::Json`] for malformed JSON;
/// [`DataError::MissingImage`] for a missing image file.
pub fn read_vg(
    image_list: impl AsRef<Path>,
    labels_json: impl AsRef<Path>,
    class_names: impl AsRef<Path>,
    image_dir: impl AsRef<Path>,
) -> Result<FileDataset> {
    let list_path = image_list.as_ref();
    let labels_path = labels_json.as_ref();
    let image_dir = image_dir.as_ref();
    let classes = read_class_names(class_names.as_ref())?;
    let labels_of: HashMap<String, Vec<i64>> = read_json(labels_path)?;

    let mut names = Vec::new();
    let mut values = Vec::new();
    for (i, line) in read_text(list_path)?.lines().enumerate() {
        let name = line.trim();
        if name.is_empty() {
            continue;
        }
        let indices = labels_of.get(name).ok_or_else(|| {
            DataError::invalid(
                list_path,
                format!("line {}", i + 1),
                format!("image {name:?} has no entry in {}", labels_path.display()),
            )
        })?;
        let start = values.len();
        values.resize(start + classes.len(), -1i8);
        for &c in indices {
            if c < 0 || c as usize >= classes.len() {
                return Err(DataError::invalid(
                    labels_path,
                    format!("key {name:?}"),
                    format!("class index {c} is outside 0..{}", classes.len()),
                ));
            }
            values[start + c as usize] = 1;
        }
        names.push(name.to_string());
    }
    let images: Vec<PathBuf> = names.iter().map(|n| image_dir.join(n)).collect();
    check_images_exist(&images, list_path)?;
    let labels = LabelMatrix::new(names.len(), classes.len(), values)?;
    FileDataset::new(classes, images, labels)
}

/// Reads class names: one per line, a JSON array, or a JSON object name → index.
///
/// # Errors
/// [`DataError::Invalid`] for an empty file, duplicate names or non-contiguous indices.
pub fn read_class_names(path: &Path) -> Result<Vec<String>> {
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let names = if is_json {
        let value: serde_json::Value = read_json(path)?;
        match value {
            serde_json::Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    serde_json::Value::String(s) => Ok(s),
                    other => Err(DataError::invalid(
                        path,
                        format!("[{i}]"),
                        format!("expected a class name, found {other}"),
                    )),
                })
                .collect::<Result<Vec<_>>>()?,
            serde_json::Value::Object(map) => {
                let mut names = vec![None; map.len()];
                for (name, v) in map {
                    let i = v
                        .as_u64()
                        .filter(|&i| (i as usize) < names.len())
                        .ok_or_else(|| {
                            DataError::invalid(
                                path,
                                format!("key {name:?}"),
                                format!("expected an index below {}, found {v}", names.len()),
                            )
                        })?;
                    names[i as usize] = Some(name);
                }
                names
                    .into_iter()
                    .enumerate()
                    .map(|(i, n)| {
                        n.ok_or_else(|| {
                            DataError::invalid(path, "", format!("no class has index {i}"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?
            }
            _ => {
                return Err(DataError::invalid(
                    path,
                    "",
                    "expected a JSON array of names or an object name -> index",
                ))
            }
        }
    } else {
        read_text(path)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    if names.is_empty() {
        return Err(DataError::invalid(path, "", "no class names"));
    }
    let mut seen = HashMap::new();
    for (i, n) in names.iter().enumerate() {
        if let Some(j) = seen.insert(n.as_str(), i) {
            return Err(DataError::invalid(
                path,
                "",
                format!("class name {n:?} appears twice (entries {j} and {i})"),
            ));
        }
    }
    Ok(names)
}
