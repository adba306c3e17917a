//! Precision, recall and F1 at a fixed decision rule: OP, OR, OF1 (over all entries) and CP, CR, CF1
//! (per class, averaged), as the reference's `AveragePrecisionMeter.evaluation`.

use serde::{Deserialize, Serialize};

use super::map::descending_order;

/// OP, OR, OF1, CP, CR, CF1 of one decision rule. All fractions in `[0, 1]`.
///
/// With, per class c, `Nc` correct predictions, `Np` predictions and `Ng` positives, and `Np = 0` replaced
/// by 1 (as the reference does, before both the overall and the per-class sums):
/// - OP = ΣNc / ΣNp, OR = ΣNc / ΣNg, OF1 = 2·OP·OR / (OP + OR)
/// - CP = mean_c Nc/Np, CR = mean_c Nc/Ng, CF1 = 2·CP·CR / (CP + CR)
///
/// Departures from the reference, only where it gives NaN: CR averages over the classes with `Ng > 0`;
/// OR is 0 when there is no positive at all; an F1 whose P + R is 0 is 0.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct F1Metrics {
    /// Overall precision.
    pub op: f64,
    /// Overall recall.
    pub or: f64,
    /// Overall F1.
    pub of1: f64,
    /// Per-class precision, averaged over classes.
    pub cp: f64,
    /// Per-class recall, averaged over the classes with a positive.
    pub cr: f64,
    /// F1 of `cp` and `cr`.
    pub cf1: f64,
}

/// 2·p·r / (p + r), 0 when p + r is 0.
fn f1(p: f64, r: f64) -> f64 {
    if p + r > 0.0 {
        2.0 * p * r / (p + r)
    } else {
        0.0
    }
}

impl F1Metrics {
    /// Metrics from per-class counts: correct predictions, predictions, positives.
    ///
    /// # Shapes
    /// - `correct`, `predicted`, `positives`: `[classes]` (extra entries of a longer slice are ignored)
    pub fn from_counts(correct: &[usize], predicted: &[usize], positives: &[usize]) -> Self {
        let classes = correct.len().min(predicted.len()).min(positives.len());
        let (mut sum_nc, mut sum_np, mut sum_ng) = (0.0, 0.0, 0.0);
        let (mut sum_cp, mut sum_cr, mut with_gt) = (0.0, 0.0, 0usize);
        for c in 0..classes {
            let nc = correct[c] as f64;
            let np = predicted[c].max(1) as f64;
            let ng = positives[c] as f64;
            sum_nc += nc;
            sum_np += np;
            sum_ng += ng;
            sum_cp += nc / np;
            if positives[c] > 0 {
                sum_cr += nc / ng;
                with_gt += 1;
            }
        }
        let op = if sum_np > 0.0 { sum_nc / sum_np } else { 0.0 };
        let or = if sum_ng > 0.0 { sum_nc / sum_ng } else { 0.0 };
        let cp = if classes > 0 {
            sum_cp / classes as f64
        } else {
            0.0
        };
        let cr = if with_gt > 0 {
            sum_cr / with_gt as f64
        } else {
            0.0
        };
        Self {
            op,
            or,
            of1: f1(op, or),
            cp,
            cr,
            cf1: f1(cp, cr),
        }
    }

    /// Metrics of the rule "predict a positive where score >= 0".
    ///
    /// # Shapes
    /// - `scores`, `positives`: `[n, classes]` row-major, `positives` 1.0 or 0.0, equal lengths (checked by the caller)
    pub(crate) fn at_threshold(scores: &[f64], positives: &[f64], classes: usize) -> Self {
        Self::from_rule(scores, positives, classes, |row| {
            row.iter().map(|&s| s >= 0.0).collect()
        })
    }

    /// Metrics of the rule "predict a positive where the score is among the image's `k` best and >= 0"
    /// (ties: the lower class index ranks first).
    ///
    /// # Shapes
    /// - `scores`, `positives`: `[n, classes]` row-major, as [`Self::at_threshold`]
    pub(crate) fn top_k(scores: &[f64], positives: &[f64], classes: usize, k: usize) -> Self {
        Self::from_rule(scores, positives, classes, |row| {
            let mut predicted = vec![false; row.len()];
            for c in descending_order(row).into_iter().take(k) {
                predicted[c] = row[c] >= 0.0;
            }
            predicted
        })
    }

    /// Counts `Nc`, `Np`, `Ng` with `rule` mapping a score row to predictions.
    fn from_rule(
        scores: &[f64],
        positives: &[f64],
        classes: usize,
        rule: impl Fn(&[f64]) -> Vec<bool>,
    ) -> Self {
        let (mut nc, mut np, mut ng) = (
            vec![0usize; classes],
            vec![0usize; classes],
            vec![0usize; classes],
        );
        if classes > 0 {
            for (row, gt) in scores
                .chunks_exact(classes)
                .zip(positives.chunks_exact(classes))
            {
                for (c, pred) in rule(row).into_iter().enumerate() {
                    let pos = gt[c] > 0.0;
                    np[c] += usize::from(pred);
                    ng[c] += usize::from(pos);
                    nc[c] += usize::from(pred && pos);
                }
            }
        }
        Self::from_counts(&nc, &np, &ng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_prediction_counts_one_predicted_also_in_op() {
        // class 0: 2 predictions, 1 correct; class 1: no prediction (Np → 1), 1 positive.
        let m = F1Metrics::from_counts(&[1, 0], &[2, 0], &[1, 1]);
        assert!((m.op - 1.0 / 3.0).abs() < 1e-15); // ΣNc / (2 + 1)
        assert!((m.or - 0.5).abs() < 1e-15);
        assert!((m.cp - 0.25).abs() < 1e-15);
        assert!((m.cr - 0.5).abs() < 1e-15);
        assert!((m.of1 - 2.0 * (1.0 / 3.0) * 0.5 / (1.0 / 3.0 + 0.5)).abs() < 1e-15);
        assert!((m.cf1 - 2.0 * 0.25 * 0.5 / 0.75).abs() < 1e-15);
    }

    /// 2 × 3 by hand for the top-k rule with k = 1:
    /// scores [[0.5, 2.0, 1.0], [-1.0, -0.5, -2.0]], positives [[1, 1, 0], [0, 1, 0]].
    /// top-1: row 0 → class 1 (2.0 ≥ 0, predicted); row 1 → class 1 (−0.5 < 0, not predicted).
    #[test]
    fn top_k_two_by_three() {
        let s = [0.5, 2.0, 1.0, -1.0, -0.5, -2.0];
        let p = [1.0, 1.0, 0.0, 0.0, 1.0, 0.0];
        let m = F1Metrics::top_k(&s, &p, 3, 1);
        // Nc = [0,1,0], Np = [0→1, 1, 0→1], Ng = [1,2,0]
        assert!((m.op - 1.0 / 3.0).abs() < 1e-15);
        assert!((m.or - 1.0 / 3.0).abs() < 1e-15);
        assert!((m.cp - 1.0 / 3.0).abs() < 1e-15);
        assert!((m.cr - 0.25).abs() < 1e-15); // (0/1 + 1/2) / 2 classes with positives
                                              // threshold rule: predictions [[1,1,1],[0,0,0]] → Nc = [1,1,0], Np = [1,1,1], Ng = [1,2,0]
        let t = F1Metrics::at_threshold(&s, &p, 3);
        assert!((t.op - 2.0 / 3.0).abs() < 1e-15);
        assert!((t.or - 2.0 / 3.0).abs() < 1e-15);
        assert!((t.cp - 2.0 / 3.0).abs() < 1e-15);
        assert!((t.cr - 0.75).abs() < 1e-15);
    }

    #[test]
    fn top_k_ties_prefer_lower_class() {
        let s = [1.0, 1.0, 1.0];
        let p = [0.0, 0.0, 1.0];
        assert_eq!(F1Metrics::top_k(&s, &p, 3, 2).or, 0.0);
        assert_eq!(F1Metrics::top_k(&s, &p, 3, 3).or, 1.0);
    }

    #[test]
    fn degenerate_inputs_are_zero_not_nan() {
        let m = F1Metrics::from_counts(&[0, 0], &[0, 0], &[0, 0]);
        assert_eq!(m, F1Metrics::default());
        let m = F1Metrics::at_threshold(&[], &[], 0);
        assert_eq!(m, F1Metrics::default());
    }
}
