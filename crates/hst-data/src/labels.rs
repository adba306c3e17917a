//! Label matrices with the reference's tri-state encoding.
//!
//! For image `n` and class `c`: `1` known positive, `-1` known negative, `0` unknown. A dataset
//! keeps two such matrices of the same shape `[images, classes]`: the full ground truth (in
//! {-1, 1} for the datasets of the paper) and the partial labels a run trains on
//! ([`PartialLabels`]).

use crate::error::{DataError, Result};

/// One entry of a label matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Label {
    /// Known positive (`1`).
    Positive,
    /// Known negative (`-1`).
    Negative,
    /// Unknown (`0`).
    Unknown,
}

impl Label {
    /// The reference's encoding: 1, -1 or 0.
    pub fn value(self) -> i8 {
        match self {
            Label::Positive => 1,
            Label::Negative => -1,
            Label::Unknown => 0,
        }
    }

    /// Decodes 1, -1 or 0.
    ///
    /// # Errors
    /// [`DataError::LabelValue`] for any other value.
    pub fn from_value(value: i64) -> Result<Self> {
        match value {
            1 => Ok(Label::Positive),
            -1 => Ok(Label::Negative),
            0 => Ok(Label::Unknown),
            other => Err(DataError::LabelValue(other)),
        }
    }

    /// Whether the label is known (positive or negative).
    pub fn is_known(self) -> bool {
        self != Label::Unknown
    }
}

/// A dense `[images, classes]` matrix of labels in {-1, 0, 1}, row-major (image by image).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelMatrix {
    images: usize,
    classes: usize,
    values: Vec<i8>,
}

impl LabelMatrix {
    /// A matrix from row-major values in {-1, 0, 1}.
    ///
    /// # Errors
    /// [`DataError::Shape`] if `values.len() != images * classes`, [`DataError::LabelValue`] for a
    /// value outside {-1, 0, 1}.
    pub fn new(images: usize, classes: usize, values: Vec<i8>) -> Result<Self> {
        if values.len() != images * classes {
            return Err(DataError::Shape(format!(
                "{} label values for {images} images x {classes} classes",
                values.len()
            )));
        }
        if let Some(&bad) = values.iter().find(|v| !(-1..=1).contains(*v)) {
            return Err(DataError::LabelValue(bad as i64));
        }
        Ok(Self {
            images,
            classes,
            values,
        })
    }

    /// A matrix with every entry set to `label`.
    pub fn filled(images: usize, classes: usize, label: Label) -> Self {
        Self {
            images,
            classes,
            values: vec![label.value(); images * classes],
        }
    }

    /// Number of images (rows).
    pub fn images(&self) -> usize {
        self.images
    }

    /// Number of classes (columns).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The entry of `image`, `class`.
    ///
    /// # Panics
    /// If the index is out of range.
    pub fn get(&self, image: usize, class: usize) -> Label {
        match self.value(image, class) {
            1 => Label::Positive,
            -1 => Label::Negative,
            _ => Label::Unknown,
        }
    }

    /// The raw value (1, -1, 0) of `image`, `class`.
    ///
    /// # Panics
    /// If the index is out of range.
    pub fn value(&self, image: usize, class: usize) -> i8 {
        assert!(
            image < self.images && class < self.classes,
            "label index ({image}, {class}) out of range for {}x{}",
            self.images,
            self.classes
        );
        self.values[image * self.classes + class]
    }

    /// Sets the entry of `image`, `class`.
    ///
    /// # Panics
    /// If the index is out of range.
    pub fn set(&mut self, image: usize, class: usize, label: Label) {
        assert!(
            image < self.images && class < self.classes,
            "label index ({image}, {class}) out of range for {}x{}",
            self.images,
            self.classes
        );
        self.values[image * self.classes + class] = label.value();
    }

    /// The labels of one image, `[classes]`.
    pub fn row(&self, image: usize) -> &[i8] {
        &self.values[image * self.classes..(image + 1) * self.classes]
    }

    /// All values, row-major `[images, classes]`.
    pub fn values(&self) -> &[i8] {
        &self.values
    }

    /// The rows `indices`, in that order, as `f32` (row-major `[indices.len(), classes]`).
    pub fn rows_f32(&self, indices: &[usize]) -> Vec<f32> {
        let mut out = Vec::with_capacity(indices.len() * self.classes);
        for &i in indices {
            out.extend(self.row(i).iter().map(|&v| v as f32));
        }
        out
    }

    /// A new matrix made of the rows `indices`, in that order.
    pub fn select_rows(&self, indices: &[usize]) -> Self {
        let mut values = Vec::with_capacity(indices.len() * self.classes);
        for &i in indices {
            values.extend_from_slice(self.row(i));
        }
        Self {
            images: indices.len(),
            classes: self.classes,
            values,
        }
    }

    /// Whether no entry is unknown.
    pub fn is_fully_known(&self) -> bool {
        !self.values.contains(&0)
    }

    /// Statistics of the matrix (see [`LabelStats`]).
    pub fn stats(&self) -> LabelStats {
        let mut known = 0;
        let mut positives = 0;
        let mut negatives = 0;
        let mut images_without_known = 0;
        let mut images_with_known_positive = 0;
        let mut positives_per_class = vec![0usize; self.classes];
        for n in 0..self.images {
            let row = self.row(n);
            let mut row_known = 0;
            let mut row_pos = 0;
            for (c, &v) in row.iter().enumerate() {
                match v {
                    1 => {
                        row_known += 1;
                        row_pos += 1;
                        positives_per_class[c] += 1;
                    }
                    -1 => {
                        row_known += 1;
                        negatives += 1;
                    }
                    _ => {}
                }
            }
            known += row_known;
            positives += row_pos;
            if row_known == 0 {
                images_without_known += 1;
            }
            if row_pos > 0 {
                images_with_known_positive += 1;
            }
        }
        let total = self.images * self.classes;
        LabelStats {
            images: self.images,
            classes: self.classes,
            known,
            positives,
            negatives,
            known_fraction: if total == 0 {
                0.0
            } else {
                known as f64 / total as f64
            },
            images_without_known,
            images_with_known_positive,
            positives_per_class,
        }
    }
}

/// Counts over a label matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelStats {
    /// Number of images.
    pub images: usize,
    /// Number of classes.
    pub classes: usize,
    /// Number of known entries (positive or negative).
    pub known: usize,
    /// Number of known positive entries.
    pub positives: usize,
    /// Number of known negative entries.
    pub negatives: usize,
    /// Realised known fraction, `known / (images * classes)`.
    pub known_fraction: f64,
    /// Images with no known label at all.
    pub images_without_known: usize,
    /// Images with at least one known positive.
    pub images_with_known_positive: usize,
    /// Known positives of each class, `[classes]`.
    pub positives_per_class: Vec<usize>,
}

/// The partial labels a run trains on, with the full labels beside them.
///
/// Invariant: both matrices have the same shape and every known partial entry equals the full
/// entry (`partial ∈ {0, full}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartialLabels {
    full: LabelMatrix,
    partial: LabelMatrix,
}

impl PartialLabels {
    /// Pairs full and partial labels.
    ///
    /// # Errors
    /// [`DataError::Shape`] if the shapes differ or a known partial entry disagrees with the full
    /// one (naming the first such entry).
    pub fn new(full: LabelMatrix, partial: LabelMatrix) -> Result<Self> {
        if full.images != partial.images || full.classes != partial.classes {
            return Err(DataError::Shape(format!(
                "full labels are {}x{}, partial labels {}x{}",
                full.images, full.classes, partial.images, partial.classes
            )));
        }
        if let Some(i) = (0..full.values.len())
            .find(|&i| partial.values[i] != 0 && partial.values[i] != full.values[i])
        {
            return Err(DataError::Shape(format!(
                "partial label {} of image {} class {} disagrees with the full label {}",
                partial.values[i],
                i / full.classes,
                i % full.classes,
                full.values[i]
            )));
        }
        Ok(Self { full, partial })
    }

    /// Every full label known (label proportion 1.0: the test sets of the reference).
    pub fn fully_known(full: LabelMatrix) -> Self {
        Self {
            partial: full.clone(),
            full,
        }
    }

    /// `full` and a `partial` derived from it by a protocol that keeps or hides entries, unchecked.
    pub(crate) fn derived(full: LabelMatrix, partial: LabelMatrix) -> Self {
        Self { full, partial }
    }

    /// The full labels `[images, classes]`.
    pub fn full(&self) -> &LabelMatrix {
        &self.full
    }

    /// The partial labels `[images, classes]`.
    pub fn partial(&self) -> &LabelMatrix {
        &self.partial
    }

    /// Statistics of the partial labels.
    pub fn stats(&self) -> LabelStats {
        self.partial.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_round_trip_and_rejects_bad_values() {
        for l in [Label::Positive, Label::Negative, Label::Unknown] {
            assert_eq!(Label::from_value(l.value() as i64).unwrap(), l);
        }
        assert!(matches!(
            Label::from_value(2),
            Err(DataError::LabelValue(2))
        ));
        assert!(LabelMatrix::new(1, 2, vec![1, 3]).is_err());
        assert!(LabelMatrix::new(1, 3, vec![1, 0]).is_err());
    }

    #[test]
    fn stats_count_by_hand() {
        // 3 images x 3 classes.
        let m = LabelMatrix::new(3, 3, vec![1, 0, -1, 0, 0, 0, -1, 1, 1]).unwrap();
        let s = m.stats();
        assert_eq!(s.known, 5);
        assert_eq!(s.positives, 3);
        assert_eq!(s.negatives, 2);
        assert!((s.known_fraction - 5.0 / 9.0).abs() < 1e-12);
        assert_eq!(s.images_without_known, 1);
        assert_eq!(s.images_with_known_positive, 2);
        assert_eq!(s.positives_per_class, vec![1, 1, 1]);
        assert_eq!(m.get(2, 0), Label::Negative);
        assert_eq!(m.rows_f32(&[2, 0]), vec![-1.0, 1.0, 1.0, 1.0, 0.0, -1.0]);
        assert_eq!(m.select_rows(&[1]).values(), &[0, 0, 0]);
        assert!(!m.is_fully_known());
    }

    #[test]
    fn partial_must_agree_with_full() {
        let full = LabelMatrix::new(1, 3, vec![1, -1, 1]).unwrap();
        let ok = LabelMatrix::new(1, 3, vec![1, 0, 0]).unwrap();
        let bad = LabelMatrix::new(1, 3, vec![0, 1, 0]).unwrap();
        assert!(PartialLabels::new(full.clone(), ok).is_ok());
        let err = PartialLabels::new(full.clone(), bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("class 1"), "{err}");
        let wrong_shape = LabelMatrix::new(3, 1, vec![1, 0, 0]).unwrap();
        assert!(PartialLabels::new(full, wrong_shape).is_err());
    }
}
