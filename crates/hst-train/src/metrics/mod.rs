//! Evaluation metrics of multi-label recognition, as the reference (HCP-MLR-PL `utils/metrics.py`) logs them.
//!
//! Everything works in `f64` on a row-major `[n, classes]` score matrix (logits: a score `>= 0` is a
//! positive prediction, i.e. probability `>= 0.5`) and a target matrix in `{-1, 0, 1}` or `{0, 1}`: a target
//! `> 0` is a positive, anything else (`-1`, `0`, VOC "difficult") a negative, as the reference's `Validate`
//! maps `-1 → 0` before evaluating.
//!
//! * [`map`]: per-class VOC2012 AP and its mean (`mAP`, the number the papers report) and the
//!   non-interpolated average precision (`averageAP`).
//! * [`f1`]: OP, OR, OF1, CP, CR, CF1 at threshold 0 and for each image's top-3 scores.
//! * [`pseudo_labels`]: precision and recall of the positive pseudo labels on the unknown entries.
//!
//! `averageAP` rounds each class's value to `f32` before averaging, because the reference keeps them in a
//! float32 tensor; the fixture's value is reproduced exactly that way (and differs by 4e-10 without it).
//!
//! All values are fractions in `[0, 1]` (the reference fixture stores fractions too; multiply by 100 for the
//! percentages of the papers' tables).
//!
//! # Ties and NaN
//! Rankings use a *stable* descending sort: equal scores keep their input order (lower row first in a class
//! column, lower class first in an image row). NumPy's default `argsort` (used by the reference's VOC2012 mAP)
//! is not stable for more than 16 elements, so with tied scores the reference's result itself depends on
//! NumPy's sort kernel; the stable order is the deterministic choice and matches the fixture, which has no ties.
//! A NaN score ranks below every other score (as −∞) and never predicts a positive (`NaN >= 0` is false).
//!
//! # Classes without positives
//! The reference divides by the number of positives and gives NaN (VOC2012 AP, CR) or raises
//! `ZeroDivisionError` (averageAP) for a class with no positive. Here such a class gets AP 0.0 in
//! [`MultiLabelMetrics::per_class_ap`], is listed in [`MultiLabelMetrics::classes_without_positives`], and is
//! left out of `map`, `average_ap` and `cr` (means over the classes that have positives). When every class
//! has a positive (all real test sets) the numbers equal the reference's exactly. Every other `0/0`
//! (an F1 with P + R = 0, OR with no positive at all) is 0.0: no metric is ever NaN.

pub mod f1;
pub mod map;
pub mod pseudo_labels;

pub use f1::F1Metrics;
pub use pseudo_labels::{PseudoLabelAccumulator, PseudoLabelQuality};

use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// A number type that metric inputs may come in (`f32`/`f64` scores, `f32`/`i8`/… targets).
pub trait MetricValue: Copy {
    /// The value as `f64`.
    fn to_f64(self) -> f64;
}

macro_rules! metric_value {
    ($($t:ty),*) => {$(
        impl MetricValue for $t {
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
    )*};
}
metric_value!(f32, f64, i8, i16, i32, i64, u8, u16, u32);

/// All evaluation numbers of one test pass. Every value is a fraction in `[0, 1]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiLabelMetrics {
    /// Mean over classes (with a positive) of the VOC2012 AP: the paper's mAP (reference `mAP`).
    pub map: f64,
    /// Mean over classes (with a positive) of the non-interpolated AP (reference `averageAP`), each class's value
    /// rounded to `f32` first, as the reference stores them.
    pub average_ap: f64,
    /// VOC2012 AP of each class, `[classes]` (0.0 for a class without positives).
    pub per_class_ap: Vec<f64>,
    /// Classes with no positive among the evaluated images, left out of `map`, `average_ap` and `cr`.
    #[serde(default)]
    pub classes_without_positives: Vec<usize>,
    /// Number of images evaluated.
    pub images: usize,
    /// Overall precision at threshold 0.
    pub op: f64,
    /// Overall recall at threshold 0.
    pub or: f64,
    /// Overall F1 at threshold 0.
    pub of1: f64,
    /// Per-class precision at threshold 0, averaged over classes.
    pub cp: f64,
    /// Per-class recall at threshold 0, averaged over classes.
    pub cr: f64,
    /// F1 of `cp` and `cr`.
    pub cf1: f64,
    /// The same six numbers when only each image's top-3 scores may predict.
    pub top3: F1Metrics,
}

/// Checks that `len` values make whole rows of `classes` and returns the row count.
pub(crate) fn rows_of(what: &'static str, len: usize, classes: usize) -> Result<usize, TrainError> {
    if classes == 0 || !len.is_multiple_of(classes) {
        return Err(TrainError::BadShape { what, len, classes });
    }
    Ok(len / classes)
}

/// Evaluates a score matrix against its targets.
///
/// # Shapes
/// - `scores`: `[n, classes]` row-major (logits; `>= 0` predicts a positive)
/// - `targets`: `[n, classes]` row-major in `{-1, 0, 1}` or `{0, 1}` (`> 0` is a positive)
///
/// # Errors
/// [`TrainError::BadShape`] when `classes` is 0 or does not divide the lengths,
/// [`TrainError::LengthMismatch`] when the two buffers differ in length.
pub fn evaluate<S: MetricValue, T: MetricValue>(
    scores: &[S],
    targets: &[T],
    classes: usize,
) -> Result<MultiLabelMetrics, TrainError> {
    let mut acc = MetricAccumulator::new(classes);
    acc.push(scores, targets)?;
    Ok(acc.finish())
}

/// Collects score and target batches of a test pass, then evaluates them all at once.
///
/// ```
/// use hst_train::metrics::MetricAccumulator;
/// let mut acc = MetricAccumulator::new(2);
/// acc.push(&[2.0f32, -1.0], &[1.0f32, -1.0]).unwrap();
/// acc.push(&[-0.5f32, 0.5], &[-1.0f32, 1.0]).unwrap();
/// let m = acc.finish();
/// assert_eq!(m.map, 1.0);
/// ```
#[derive(Debug, Clone)]
pub struct MetricAccumulator {
    classes: usize,
    /// `[rows, classes]`
    scores: Vec<f64>,
    /// `[rows, classes]`, 1.0 for a positive, 0.0 otherwise.
    positives: Vec<f64>,
}

impl MetricAccumulator {
    /// An empty accumulator for `classes` classes.
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            scores: Vec::new(),
            positives: Vec::new(),
        }
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Number of images pushed so far.
    pub fn len(&self) -> usize {
        self.scores.len().checked_div(self.classes).unwrap_or(0)
    }

    /// Whether no image was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// Forgets every pushed batch.
    pub fn reset(&mut self) {
        self.scores.clear();
        self.positives.clear();
    }

    /// Appends a batch.
    ///
    /// # Shapes
    /// - `scores`: `[batch, classes]` row-major
    /// - `targets`: `[batch, classes]` row-major in `{-1, 0, 1}` or `{0, 1}`
    ///
    /// # Errors
    /// As [`evaluate`]; nothing is appended on error.
    pub fn push<S: MetricValue, T: MetricValue>(
        &mut self,
        scores: &[S],
        targets: &[T],
    ) -> Result<(), TrainError> {
        rows_of("metrics: scores", scores.len(), self.classes)?;
        rows_of("metrics: targets", targets.len(), self.classes)?;
        if scores.len() != targets.len() {
            return Err(TrainError::LengthMismatch {
                what: "metrics",
                left_name: "scores",
                left: scores.len(),
                right_name: "targets",
                right: targets.len(),
            });
        }
        self.scores.extend(scores.iter().map(|s| s.to_f64()));
        self.positives.extend(
            targets
                .iter()
                .map(|t| if t.to_f64() > 0.0 { 1.0 } else { 0.0 }),
        );
        Ok(())
    }

    /// Evaluates everything pushed so far (all zeros, every class without positives, when empty).
    pub fn finish(&self) -> MultiLabelMetrics {
        let classes = self.classes;
        let n = self.len();
        let mut per_class_ap = Vec::with_capacity(classes);
        let mut without = Vec::new();
        let (mut voc_sum, mut nonint_sum, mut counted) = (0.0, 0.0, 0usize);
        let mut column = vec![0.0; n];
        for c in 0..classes {
            for (i, v) in column.iter_mut().enumerate() {
                *v = self.scores[i * classes + c];
            }
            let ranked: Vec<bool> = map::descending_order(&column)
                .into_iter()
                .map(|i| self.positives[i * classes + c] > 0.0)
                .collect();
            match (map::voc2012_ap(&ranked), map::noninterpolated_ap(&ranked)) {
                (Some(voc), Some(nonint)) => {
                    per_class_ap.push(voc);
                    voc_sum += voc;
                    // The reference keeps the per-class values in a float32 tensor (`torch.zeros(K)`) and the
                    // fixture averages those in f64: rounding here reproduces it exactly (a change < 1e-7).
                    nonint_sum += f64::from(nonint as f32);
                    counted += 1;
                }
                _ => {
                    per_class_ap.push(0.0);
                    without.push(c);
                }
            }
        }
        let mean = |sum: f64| {
            if counted == 0 {
                0.0
            } else {
                sum / counted as f64
            }
        };
        let all = F1Metrics::at_threshold(&self.scores, &self.positives, classes);
        let top3 = F1Metrics::top_k(&self.scores, &self.positives, classes, 3);
        MultiLabelMetrics {
            map: mean(voc_sum),
            average_ap: mean(nonint_sum),
            per_class_ap,
            classes_without_positives: without,
            images: n,
            op: all.op,
            or: all.or,
            of1: all.of1,
            cp: all.cp,
            cr: all.cr,
            cf1: all.cf1,
            top3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2 images × 3 classes, hand-computed.
    /// scores  [[ 2.0, -1.0, 0.5],
    ///          [-0.5,  1.0, 0.0]]
    /// targets [[ 1, -1,  1],
    ///          [ 1,  1, -1]]
    #[test]
    fn two_by_three_by_hand() {
        let s = [2.0f64, -1.0, 0.5, -0.5, 1.0, 0.0];
        let t = [1i8, -1, 1, 1, 1, -1];
        let m = evaluate(&s, &t, 3).unwrap();
        // class 0: both positive → AP 1; class 1: positive ranked first → 1; class 2: positive first → 1.
        assert_eq!(m.per_class_ap, vec![1.0, 1.0, 1.0]);
        assert_eq!(m.map, 1.0);
        assert_eq!(m.average_ap, 1.0);
        // predictions (>= 0): [1,0,1],[0,1,1]; Nc = [1,1,1], Np = [1,1,2], Ng = [2,1,1].
        assert!((m.op - 3.0 / 4.0).abs() < 1e-15);
        assert!((m.or - 3.0 / 4.0).abs() < 1e-15);
        assert!((m.of1 - 0.75).abs() < 1e-15);
        let cp = (1.0 + 1.0 + 0.5) / 3.0;
        let cr = (0.5 + 1.0 + 1.0) / 3.0;
        assert!((m.cp - cp).abs() < 1e-15);
        assert!((m.cr - cr).abs() < 1e-15);
        assert!((m.cf1 - 2.0 * cp * cr / (cp + cr)).abs() < 1e-15);
        // top-3 of 3 classes = all classes: identical to the threshold metrics.
        assert_eq!(m.top3.op, m.op);
        assert_eq!(m.top3.cf1, m.cf1);
        assert!(m.classes_without_positives.is_empty());
        assert_eq!(m.images, 2);
    }

    #[test]
    fn ties_keep_input_order() {
        // equal scores: the negative first in the input ranks first → AP 1/2; reversed → 1.
        let m = evaluate(&[1.0f64, 1.0], &[0.0f64, 1.0], 1).unwrap();
        assert!((m.map - 0.5).abs() < 1e-15);
        let m = evaluate(&[1.0f64, 1.0], &[1.0f64, 0.0], 1).unwrap();
        assert_eq!(m.map, 1.0);
    }

    #[test]
    fn wrong_ranking_lowers_ap() {
        // class 0: negative ranked above the positive → precision 1/2 at the positive.
        let s = [0.9f32, 0.1];
        let t = [0.0f32, 1.0];
        let m = evaluate(&s, &t, 1).unwrap();
        assert!((m.map - 0.5).abs() < 1e-15);
        assert!((m.average_ap - 0.5).abs() < 1e-15);
    }

    #[test]
    fn class_without_positives_is_skipped_not_nan() {
        let s = [1.0f64, -1.0, 0.5, 2.0];
        let t = [1.0f64, -1.0, 1.0, 0.0]; // class 1 has no positive
        let m = evaluate(&s, &t, 2).unwrap();
        assert_eq!(m.classes_without_positives, vec![1]);
        assert_eq!(m.per_class_ap, vec![1.0, 0.0]);
        assert_eq!(m.map, 1.0);
        assert_eq!(m.average_ap, 1.0);
        // class 1 predicted once (score 2.0), never correct: CP = (1 + 0) / 2; CR over class 0 only.
        assert!((m.cp - 0.5).abs() < 1e-15);
        assert!((m.cr - 1.0).abs() < 1e-15);
        for v in [m.op, m.or, m.of1, m.cp, m.cr, m.cf1, m.map, m.average_ap] {
            assert!(v.is_finite());
        }
    }

    #[test]
    fn accumulator_equals_one_shot() {
        let s = [0.3f32, -0.2, 1.5, 0.1, -2.0, 0.7, 0.0, 0.4, -0.1];
        let t = [1.0f32, 0.0, 1.0, -1.0, 1.0, 1.0, 1.0, -1.0, 0.0];
        let one = evaluate(&s, &t, 3).unwrap();
        let mut acc = MetricAccumulator::new(3);
        acc.push(&s[..3], &t[..3]).unwrap();
        acc.push(&s[3..], &t[3..]).unwrap();
        assert_eq!(acc.len(), 3);
        assert_eq!(acc.finish(), one);
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(matches!(
            evaluate(&[1.0f32; 5], &[1.0f32; 5], 3),
            Err(TrainError::BadShape {
                len: 5,
                classes: 3,
                ..
            })
        ));
        assert!(matches!(
            evaluate(&[1.0f32; 6], &[1.0f32; 3], 3),
            Err(TrainError::LengthMismatch {
                left: 6,
                right: 3,
                ..
            })
        ));
        assert!(matches!(
            evaluate(&[1.0f32; 0], &[1.0f32; 0], 0),
            Err(TrainError::BadShape { .. })
        ));
        let mut acc = MetricAccumulator::new(2);
        assert!(acc.push(&[1.0f32; 3], &[1.0f32; 3]).is_err());
        assert!(acc.is_empty());
    }

    #[test]
    fn empty_accumulator_is_all_zero() {
        let m = MetricAccumulator::new(4).finish();
        assert_eq!(m.map, 0.0);
        assert_eq!(m.of1, 0.0);
        assert_eq!(m.classes_without_positives, vec![0, 1, 2, 3]);
        assert_eq!(m.images, 0);
    }

    #[test]
    fn serde_round_trip() {
        let m = evaluate(&[0.5f64, -0.5, -1.0, 1.0], &[1.0f64, 0.0, 0.0, 1.0], 2).unwrap();
        let json = serde_json::to_string(&m).unwrap();
        let back: MultiLabelMetrics = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }
}
