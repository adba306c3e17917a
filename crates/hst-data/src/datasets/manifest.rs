//! A generic manifest for users' own data: image paths with labels, as CSV or JSON Lines.
//!
//! **CSV** (`.csv`): a header `image,<class 1>,…,<class C>` (the first column's name is free),
//! then one row per image: its path and C values in {-1, 0, 1}.
//!
//! **JSON Lines** (`.jsonl`): a first line `{"classes": ["cat", "dog", …]}`, then one object per
//! image: `{"image": "a.jpg", "labels": ["cat"]}` (the listed classes positive, all others
//! negative) or `{"image": "a.jpg", "labels": [1, -1, 0, …]}` (C values in {-1, 0, 1}).
//!
//! Relative image paths are resolved against the manifest's directory (or `image_root`).
//! When any value is 0 (unknown) the file holds partial labels: [`Manifest::partial`] is set and
//! the full labels are the same matrix (unknown where the manifest says unknown).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::datasets::{check_images_exist, read_text, FileDataset};
use crate::error::{DataError, Result};
use crate::labels::LabelMatrix;

/// A manifest's dataset and, when it contains unknown entries, its partial labels.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// Images, classes and labels.
    pub dataset: FileDataset,
    /// The labels again when some are unknown (0), so that a run uses them as given instead of
    /// applying the partial-label protocol.
    pub partial: Option<LabelMatrix>,
}

/// Reads a manifest (format chosen by the extension: `.csv`, or `.jsonl` / `.ndjson`).
///
/// `image_root` overrides the directory that relative image paths are resolved against
/// (default: the manifest's directory).
///
/// # Errors
/// [`DataError::Invalid`] / [`DataError::LabelCount`] / [`DataError::UnknownClass`] naming the
/// file and line; [`DataError::MissingImage`] for a missing image.
pub fn read_manifest(path: impl AsRef<Path>, image_root: Option<&Path>) -> Result<Manifest> {
    let path = path.as_ref();
    let root = image_root
        .map(Path::to_path_buf)
        .unwrap_or_else(|| path.parent().map(Path::to_path_buf).unwrap_or_default());
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let (classes, images, values) = match ext.as_str() {
        "csv" => parse_csv(path)?,
        "jsonl" | "ndjson" => parse_jsonl(path)?,
        _ => {
            return Err(DataError::invalid(
                path,
                "",
                "unknown manifest format (expected a .csv or .jsonl file)",
            ))
        }
    };
    let images: Vec<PathBuf> = images
        .into_iter()
        .map(|p| {
            let p = PathBuf::from(p);
            if p.is_absolute() {
                p
            } else {
                root.join(p)
            }
        })
        .collect();
    check_images_exist(&images, path)?;
    let labels = LabelMatrix::new(images.len(), classes.len(), values)?;
    let partial = (!labels.is_fully_known()).then(|| labels.clone());
    Ok(Manifest {
        dataset: FileDataset::new(classes, images, labels)?,
        partial,
    })
}

type Parsed = (Vec<String>, Vec<String>, Vec<i8>);

fn parse_csv(path: &Path) -> Result<Parsed> {
    let text = read_text(path)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(text.as_bytes());
    let header = reader
        .headers()
        .map_err(|e| DataError::csv(path, e))?
        .clone();
    if header.len() < 2 {
        return Err(DataError::invalid(
            path,
            "line 1",
            "the header must be `image,<class 1>,…,<class C>`",
        ));
    }
    let classes: Vec<String> = header.iter().skip(1).map(str::to_string).collect();
    let mut images = Vec::new();
    let mut values = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| DataError::csv(path, e))?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let location = format!("line {line}");
        if record.len() == 1 && record[0].is_empty() {
            continue;
        }
        if record.len() != classes.len() + 1 {
            return Err(DataError::LabelCount {
                path: path.to_path_buf(),
                location,
                expected: classes.len(),
                found: record.len().saturating_sub(1),
            });
        }
        images.push(record[0].to_string());
        for (c, field) in record.iter().skip(1).enumerate() {
            values.push(parse_value(field, path, &location, &classes[c])?);
        }
    }
    Ok((classes, images, values))
}

fn parse_value(field: &str, path: &Path, location: &str, class: &str) -> Result<i8> {
    match field {
        "1" | "+1" => Ok(1),
        "-1" => Ok(-1),
        "0" => Ok(0),
        other => Err(DataError::invalid(
            path,
            location,
            format!("label {other:?} of class {class:?} is not -1, 0 or 1"),
        )),
    }
}

fn parse_jsonl(path: &Path) -> Result<Parsed> {
    let text = read_text(path)?;
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty());
    let json_err = |line: usize, e: serde_json::Error| {
        DataError::invalid(path, format!("line {line}"), format!("invalid JSON: {e}"))
    };

    #[derive(serde::Deserialize)]
    struct Header {
        classes: Vec<String>,
    }
    let (line, first) = lines
        .next()
        .ok_or_else(|| DataError::invalid(path, "", "empty manifest"))?;
    let header: Header = serde_json::from_str(first).map_err(|e| {
        DataError::invalid(
            path,
            format!("line {line}"),
            format!("expected {{\"classes\": [...]}}: {e}"),
        )
    })?;
    let classes = header.classes;
    let index: HashMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();

    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Labels {
        Names(Vec<String>),
        Values(Vec<i64>),
    }
    #[derive(serde::Deserialize)]
    struct Row {
        image: String,
        labels: Labels,
    }
    let mut images = Vec::new();
    let mut values = Vec::new();
    for (line, text) in lines {
        let row: Row = serde_json::from_str(text).map_err(|e| json_err(line, e))?;
        let location = format!("line {line}");
        let start = values.len();
        match row.labels {
            Labels::Names(names) => {
                values.resize(start + classes.len(), -1i8);
                for name in names {
                    let c = *index
                        .get(name.as_str())
                        .ok_or_else(|| DataError::UnknownClass {
                            path: path.to_path_buf(),
                            location: location.clone(),
                            name: name.clone(),
                        })?;
                    values[start + c] = 1;
                }
            }
            Labels::Values(v) => {
                if v.len() != classes.len() {
                    return Err(DataError::LabelCount {
                        path: path.to_path_buf(),
                        location,
                        expected: classes.len(),
                        found: v.len(),
                    });
                }
                for (c, x) in v.into_iter().enumerate() {
                    if !(-1..=1).contains(&x) {
                        return Err(DataError::invalid(
                            path,
                            location,
                            format!("label {x} of class {:?} is not -1, 0 or 1", classes[c]),
                        ));
                    }
                    values.push(x as i8);
                }
            }
        }
        images.push(row.image);
    }
    Ok((classes, images, values))
}

/// Writes a CSV manifest (`image,<classes>` header, one row per image) for `images` (paths
/// written as given) with `labels`.
///
/// # Errors
/// [`DataError::Shape`] if the sizes disagree, [`DataError::Io`] on write failure.
pub fn write_manifest_csv(
    path: impl AsRef<Path>,
    images: &[String],
    classes: &[String],
    labels: &LabelMatrix,
) -> Result<()> {
    let path = path.as_ref();
    if images.len() != labels.images() || classes.len() != labels.classes() {
        return Err(DataError::Shape(format!(
            "{} images and {} classes for labels of {}x{}",
            images.len(),
            classes.len(),
            labels.images(),
            labels.classes()
        )));
    }
    let io = |e| DataError::csv(path, e);
    let mut writer = csv::Writer::from_path(path).map_err(io)?;
    let mut header = vec!["image".to_string()];
    header.extend(classes.iter().cloned());
    writer.write_record(&header).map_err(io)?;
    for (n, image) in images.iter().enumerate() {
        let mut record = vec![image.clone()];
        record.extend(labels.row(n).iter().map(|v| v.to_string()));
        writer.write_record(&record).map_err(io)?;
    }
    writer.flush().map_err(|e| DataError::io(path, e))
}
