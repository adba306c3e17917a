//! PASCAL VOC 2007 / 2012 (image-level labels).
//!
//! The image ids of a split come from `ImageSets/Main/<split>.txt`, images from
//! `JPEGImages/<id>.jpg`. Labels come from `Annotations/<id>.xml` when that directory exists
//! (objects marked difficult are skipped, so a class whose only objects are difficult is
//! **negative**, as in the reference), and otherwise from the per-class lists
//! `ImageSets/Main/<class>_<split>.txt` (`1` present, `-1` absent, `0` difficult only, which
//! also becomes negative).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::datasets::{check_images_exist, read_text, FileDataset};
use crate::error::{DataError, Result};
use crate::labels::LabelMatrix;

/// The 20 VOC classes in the official (alphabetical) order.
pub const VOC_CLASSES: [&str; 20] = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

/// A VOC image set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VocSplit {
    /// `train`
    Train,
    /// `val`
    Val,
    /// `trainval` (the reference's VOC2007 training set)
    Trainval,
    /// `test` (the reference's VOC2007 test set)
    Test,
}

impl VocSplit {
    /// The name used in `ImageSets/Main` file names.
    pub fn name(self) -> &'static str {
        match self {
            VocSplit::Train => "train",
            VocSplit::Val => "val",
            VocSplit::Trainval => "trainval",
            VocSplit::Test => "test",
        }
    }
}

impl FromStr for VocSplit {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "train" => Ok(VocSplit::Train),
            "val" => Ok(VocSplit::Val),
            "trainval" => Ok(VocSplit::Trainval),
            "test" => Ok(VocSplit::Test),
            other => Err(format!(
                "unknown VOC split {other:?} (expected train, val, trainval or test)"
            )),
        }
    }
}

/// Reads split `split` of the VOC tree at `root` (the directory holding `ImageSets`,
/// `JPEGImages` and, when present, `Annotations`).
///
/// # Errors
/// A [`DataError`] naming the file and line (or XML element) on a missing file, a malformed
/// line, an unknown class name, an annotation without `<object>`, or a missing image.
pub fn read_voc(root: impl AsRef<Path>, split: VocSplit) -> Result<FileDataset> {
    let root = root.as_ref();
    let split_file = root
        .join("ImageSets")
        .join("Main")
        .join(format!("{}.txt", split.name()));
    let ids = read_id_list(&split_file)?;
    let annotations = root.join("Annotations");
    let labels = if annotations.is_dir() {
        labels_from_xml(&annotations, &ids)?
    } else {
        labels_from_class_lists(root, split, &ids)?
    };
    let images: Vec<PathBuf> = ids
        .iter()
        .map(|id| root.join("JPEGImages").join(format!("{id}.jpg")))
        .collect();
    check_images_exist(&images, &split_file)?;
    tracing::debug!(
        root = %root.display(),
        split = split.name(),
        images = ids.len(),
        "read VOC split"
    );
    FileDataset::new(
        VOC_CLASSES.iter().map(|s| s.to_string()).collect(),
        images,
        labels,
    )
}

/// The ids of a split file, one per line (blank lines ignored).
fn read_id_list(path: &Path) -> Result<Vec<String>> {
    let text = read_text(path)?;
    let mut ids = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut fields = line.split_whitespace();
        let Some(id) = fields.next() else { continue };
        if fields.next().is_some() {
            return Err(DataError::invalid(
                path,
                format!("line {}", i + 1),
                format!("expected one image id, found {line:?}"),
            ));
        }
        ids.push(id.to_string());
    }
    if ids.is_empty() {
        return Err(DataError::invalid(path, "", "no image ids"));
    }
    Ok(ids)
}

/// Labels from `Annotations/<id>.xml`.
fn labels_from_xml(dir: &Path, ids: &[String]) -> Result<LabelMatrix> {
    let classes = VOC_CLASSES.len();
    let mut values = vec![-1i8; ids.len() * classes];
    for (n, id) in ids.iter().enumerate() {
        let path = dir.join(format!("{id}.xml"));
        for class in parse_annotation(&path)? {
            values[n * classes + class] = 1;
        }
    }
    LabelMatrix::new(ids.len(), classes, values)
}

/// The classes of the non-difficult objects of one VOC annotation file.
///
/// # Errors
/// [`DataError::Xml`] if it does not parse; [`DataError::Invalid`] if it has no `<object>` or an
/// object without `<name>`; [`DataError::UnknownClass`] for a name outside [`VOC_CLASSES`].
pub fn parse_annotation(path: &Path) -> Result<Vec<usize>> {
    let text = read_text(path)?;
    let doc = roxmltree::Document::parse(&text).map_err(|source| DataError::Xml {
        path: path.to_path_buf(),
        source,
    })?;
    let objects: Vec<_> = doc
        .root_element()
        .children()
        .filter(|n| n.has_tag_name("object"))
        .collect();
    if objects.is_empty() {
        return Err(DataError::invalid(
            path,
            "",
            "annotation has no <object> element",
        ));
    }
    let mut classes = Vec::new();
    for (k, object) in objects.iter().enumerate() {
        let line = doc.text_pos_at(object.range().start).row;
        let location = format!("line {line} (<object> {})", k + 1);
        let child_text = |tag: &str| {
            object
                .children()
                .find(|c| c.has_tag_name(tag))
                .map(|c| c.text().unwrap_or("").trim().to_string())
        };
        let name = child_text("name")
            .ok_or_else(|| DataError::invalid(path, location.clone(), "<object> without <name>"))?;
        let difficult = match child_text("difficult").as_deref() {
            None | Some("") | Some("0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(DataError::invalid(
                    path,
                    location,
                    format!("<difficult> is {other:?}, expected 0 or 1"),
                ))
            }
        };
        let class =
            VOC_CLASSES
                .iter()
                .position(|c| *c == name)
                .ok_or_else(|| DataError::UnknownClass {
                    path: path.to_path_buf(),
                    location: location.clone(),
                    name: name.clone(),
                })?;
        if !difficult && !classes.contains(&class) {
            classes.push(class);
        }
    }
    Ok(classes)
}

/// Labels from the per-class lists `ImageSets/Main/<class>_<split>.txt`.
fn labels_from_class_lists(root: &Path, split: VocSplit, ids: &[String]) -> Result<LabelMatrix> {
    let classes = VOC_CLASSES.len();
    let row_of: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut values = vec![0i8; ids.len() * classes];
    for (c, class) in VOC_CLASSES.iter().enumerate() {
        let path = root
            .join("ImageSets")
            .join("Main")
            .join(format!("{class}_{}.txt", split.name()));
        let text = read_text(&path)?;
        let mut seen = vec![false; ids.len()];
        for (i, line) in text.lines().enumerate() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.is_empty() {
                continue;
            }
            let location = format!("line {}", i + 1);
            if fields.len() != 2 {
                return Err(DataError::invalid(
                    &path,
                    location,
                    format!("expected `<id> <1|0|-1>`, found {line:?}"),
                ));
            }
            let value: i8 = match fields[1] {
                "1" => 1,
                // 0 = only difficult objects: negative, as in the reference.
                "-1" | "0" => -1,
                other => {
                    return Err(DataError::invalid(
                        &path,
                        location,
                        format!("label {other:?} is not 1, 0 or -1"),
                    ))
                }
            };
            // Lists may hold ids of other splits' files only if they share a name; ignore ids
            // that are not in the split.
            if let Some(&n) = row_of.get(fields[0]) {
                values[n * classes + c] = value;
                seen[n] = true;
            }
        }
        if let Some(n) = seen.iter().position(|s| !s) {
            return Err(DataError::invalid(
                &path,
                "",
                format!("image id {} of {}.txt is missing", ids[n], split.name()),
            ));
        }
    }
    LabelMatrix::new(ids.len(), classes, values)
}
