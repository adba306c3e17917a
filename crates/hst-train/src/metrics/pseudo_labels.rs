//! Quality of the pseudo labels that IST or CST give the unknown entries of the partial labels, measured
//! against the hidden full labels.
//!
//! Only the entries whose partial label is unknown (0) count: a pseudo label `> 0` there is a positive
//! pseudo label; it is correct when the full label is positive (`> 0`). Precision = correct / positive
//! pseudo labels, recall = correct / unknown entries whose full label is positive. Both are ratios of totals
//! over every pushed batch (as the reference's `AverageMeter(sum, count)`), and 0.0 where the denominator is 0.
//!
//! The reference's `compute_pseudo_label_accuracy` counts every entry, known ones included (where pseudo
//! labels equal the known labels and so inflate both numbers); restricting to the unknown entries measures
//! what the transfer actually adds.

use serde::{Deserialize, Serialize};

use super::{rows_of, MetricValue};
use crate::error::TrainError;

/// Precision and recall of positive pseudo labels on unknown entries.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct PseudoLabelQuality {
    /// Correct positive pseudo labels / positive pseudo labels (0.0 when there is none).
    pub precision: f64,
    /// Correct positive pseudo labels / hidden positives among the unknown entries (0.0 when there is none).
    pub recall: f64,
    /// Number of positive pseudo labels.
    pub count: usize,
    /// Number of correct positive pseudo labels.
    pub correct: usize,
    /// Number of unknown entries whose full label is positive.
    pub hidden_positives: usize,
    /// Number of unknown entries.
    pub unknown: usize,
}

/// Sums pseudo-label counts over batches.
#[derive(Debug, Clone)]
pub struct PseudoLabelAccumulator {
    classes: usize,
    count: usize,
    correct: usize,
    hidden_positives: usize,
    unknown: usize,
}

impl PseudoLabelAccumulator {
    /// An empty accumulator for `classes` classes.
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            count: 0,
            correct: 0,
            hidden_positives: 0,
            unknown: 0,
        }
    }

    /// Adds a batch.
    ///
    /// # Shapes
    /// - `partial`: `[batch, classes]` in `{-1, 0, 1}`, the training labels (0 = unknown)
    /// - `pseudo`: `[batch, classes]`, the pseudo targets (`> 0` = positive pseudo label; e.g. the hard target
    ///   in `{-1, 0, 1}` or a soft score in `[0, 1]`)
    /// - `full`: `[batch, classes]` in `{-1, 0, 1}` or `{0, 1}`, the hidden full labels (`> 0` = positive)
    ///
    /// # Errors
    /// [`TrainError::BadShape`] / [`TrainError::LengthMismatch`] when the buffers do not all hold
    /// `[batch, classes]`; nothing is counted on error.
    pub fn push<P: MetricValue, Q: MetricValue, F: MetricValue>(
        &mut self,
        partial: &[P],
        pseudo: &[Q],
        full: &[F],
    ) -> Result<(), TrainError> {
        rows_of("pseudo labels: partial", partial.len(), self.classes)?;
        for (name, len) in [("pseudo", pseudo.len()), ("full", full.len())] {
            if len != partial.len() {
                return Err(TrainError::LengthMismatch {
                    what: "pseudo labels",
                    left_name: "partial",
                    left: partial.len(),
                    right_name: name,
                    right: len,
                });
            }
        }
        for ((p, q), f) in partial.iter().zip(pseudo).zip(full) {
            if p.to_f64() != 0.0 {
                continue;
            }
            let predicted = q.to_f64() > 0.0;
            let positive = f.to_f64() > 0.0;
            self.unknown += 1;
            self.count += usize::from(predicted);
            self.hidden_positives += usize::from(positive);
            self.correct += usize::from(predicted && positive);
        }
        Ok(())
    }

    /// Add counts gathered elsewhere (e.g. a window of training steps summed on the device); only the four
    /// counts of `counts` are used, its ratios are ignored.
    pub fn add(&mut self, counts: &PseudoLabelQuality) {
        self.count += counts.count;
        self.correct += counts.correct;
        self.hidden_positives += counts.hidden_positives;
        self.unknown += counts.unknown;
    }

    /// The precision and recall over everything pushed so far.
    pub fn finish(&self) -> PseudoLabelQuality {
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        PseudoLabelQuality {
            precision: ratio(self.correct, self.count),
            recall: ratio(self.correct, self.hidden_positives),
            count: self.count,
            correct: self.correct,
            hidden_positives: self.hidden_positives,
            unknown: self.unknown,
        }
    }
}

/// [`PseudoLabelAccumulator`] on one batch; see [`PseudoLabelAccumulator::push`] for shapes and errors.
pub fn pseudo_label_quality<P: MetricValue, Q: MetricValue, F: MetricValue>(
    partial: &[P],
    pseudo: &[Q],
    full: &[F],
    classes: usize,
) -> Result<PseudoLabelQuality, TrainError> {
    let mut acc = PseudoLabelAccumulator::new(classes);
    acc.push(partial, pseudo, full)?;
    Ok(acc.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2 × 3: partial [[1, 0, 0], [0, -1, 0]], pseudo [[1, 1, 0], [1, -1, 1]], full [[1, 1, -1], [-1, -1, 1]].
    /// Unknown entries: (0,1) pseudo + full + → correct; (0,2) no pseudo, full −; (1,0) pseudo +, full − → wrong;
    /// (1,2) pseudo +, full + → correct. Positive pseudo labels 3, correct 2, hidden positives 2.
    #[test]
    fn two_by_three_by_hand() {
        let partial = [1i8, 0, 0, 0, -1, 0];
        let pseudo = [1.0f32, 1.0, 0.0, 1.0, -1.0, 1.0];
        let full = [1i8, 1, -1, -1, -1, 1];
        let q = pseudo_label_quality(&partial, &pseudo, &full, 3).unwrap();
        assert_eq!(
            (q.count, q.correct, q.hidden_positives, q.unknown),
            (3, 2, 2, 4)
        );
        assert!((q.precision - 2.0 / 3.0).abs() < 1e-15);
        assert_eq!(q.recall, 1.0);
    }

    #[test]
    fn accumulates_totals_not_batch_means() {
        let mut acc = PseudoLabelAccumulator::new(2);
        // batch 1: one unknown, pseudo +, full − → 0/1
        acc.push(&[0i8, 1], &[1i8, 1], &[0i8, 1]).unwrap();
        // batch 2: three positive pseudo labels on unknowns, all correct → 3/3
        acc.push(&[0i8, 0, 0, 1], &[1i8, 1, 1, 1], &[1i8, 1, 1, 1])
            .unwrap();
        let q = acc.finish();
        assert!((q.precision - 0.75).abs() < 1e-15); // 3/4, not the batch mean 1/2
        assert_eq!(q.recall, 1.0);
    }

    #[test]
    fn empty_and_bad_inputs() {
        let q = PseudoLabelAccumulator::new(3).finish();
        assert_eq!((q.precision, q.recall, q.count), (0.0, 0.0, 0));
        let mut acc = PseudoLabelAccumulator::new(3);
        assert!(matches!(
            acc.push(&[0i8; 4], &[0i8; 4], &[0i8; 4]),
            Err(TrainError::BadShape { .. })
        ));
        assert!(matches!(
            acc.push(&[0i8; 3], &[0i8; 6], &[0i8; 3]),
            Err(TrainError::LengthMismatch {
                right_name: "pseudo",
                ..
            })
        ));
    }
}
