//! Average precision of one class: the VOC2012 AP (the reported mAP) and the non-interpolated AP
//! (the reference's `averageAP`).
//!
//! Both take one class column *in ranking order* (rank the column with [`descending_order`]: by score,
//! descending, stable; see the module doc of [`crate::metrics`] for ties and NaN) and return `None` for a
//! column without positives.

/// Indices of `scores` ordered by score, descending; ties keep their input order; NaN ranks last.
pub fn descending_order(scores: &[f64]) -> Vec<usize> {
    let key = |x: f64| if x.is_nan() { f64::NEG_INFINITY } else { x };
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // `sort_by` is stable; `total_cmp` is a total order, so no comparison can be inconsistent.
    order.sort_by(|&a, &b| key(scores[b]).total_cmp(&key(scores[a])));
    order
}

/// VOC2012 average precision of one class.
///
/// As the reference's `Compute_mAP_VOC2012` + `ComputeAP_VOC`: walk the ranking accumulating TP and FP,
/// recall = TP / #positives and precision = TP / (TP + FP); pad recall with 0 and 1 and precision with 0 and 0,
/// make precision monotone from the right (each value the maximum of those after it), and sum
/// Δrecall × precision over the points where recall changes.
///
/// # Shapes
/// - `ranked`: `[n]`, whether the image at each rank (best score first) is a positive
///
/// Returns `None` when the class has no positive (the reference gives NaN).
pub fn voc2012_ap(ranked: &[bool]) -> Option<f64> {
    let n = ranked.len();
    let npos = ranked.iter().filter(|&&p| p).count();
    if npos == 0 {
        return None;
    }
    // mrec = [0, rec_1..rec_n, 1], mpre = [0, prec_1..prec_n, 0]
    let mut mrec = Vec::with_capacity(n + 2);
    let mut mpre = Vec::with_capacity(n + 2);
    mrec.push(0.0);
    mpre.push(0.0);
    let (mut tp, mut fp) = (0.0f64, 0.0f64);
    for &positive in ranked {
        if positive {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        mrec.push(tp / npos as f64);
        mpre.push(tp / (tp + fp).max(f64::EPSILON));
    }
    mrec.push(1.0);
    mpre.push(0.0);
    for k in (1..mpre.len()).rev() {
        mpre[k - 1] = mpre[k - 1].max(mpre[k]);
    }
    let ap = (0..mrec.len() - 1)
        .filter(|&k| mrec[k + 1] != mrec[k])
        .map(|k| (mrec[k + 1] - mrec[k]) * mpre[k + 1])
        .sum();
    Some(ap)
}

/// Non-interpolated average precision of one class: the mean, over the positives, of the precision at the
/// rank of each positive (the reference's `AveragePrecisionMeter.average_precision` with
/// `difficult_examples = False`, as `Validate` uses it).
///
/// # Shapes
/// - `ranked`: `[n]`, whether the image at each rank (best score first) is a positive
///
/// Returns `None` when the class has no positive (the reference raises `ZeroDivisionError`).
pub fn noninterpolated_ap(ranked: &[bool]) -> Option<f64> {
    let (mut pos, mut total, mut sum) = (0.0f64, 0.0f64, 0.0f64);
    for &positive in ranked {
        total += 1.0;
        if positive {
            pos += 1.0;
            sum += pos / total;
        }
    }
    (pos > 0.0).then(|| sum / pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_stable_and_descending() {
        let s = [0.5, 1.0, 0.5, f64::NAN, -1.0, 1.0];
        assert_eq!(descending_order(&s), vec![1, 5, 0, 2, 4, 3]);
    }

    #[test]
    fn voc_ap_by_hand() {
        // ranking: +, -, +, -  → precision at the positives 1, 2/3; envelope makes the 2nd step 2/3.
        let p = [true, false, true, false];
        let ap = voc2012_ap(&p).unwrap();
        assert!((ap - (0.5 * 1.0 + 0.5 * 2.0 / 3.0)).abs() < 1e-15);
        let nonint = noninterpolated_ap(&p).unwrap();
        assert!((nonint - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-15);
    }

    #[test]
    fn envelope_differs_from_noninterpolated() {
        // ranking: -, +, -, +, + → precisions at positives 1/2, 2/4, 3/5; envelope from the right: 3/5 for all.
        let p = [false, true, false, true, true];
        let ap = voc2012_ap(&p).unwrap();
        assert!((ap - 3.0 / 5.0).abs() < 1e-15, "{ap}");
        let nonint = noninterpolated_ap(&p).unwrap();
        assert!((nonint - (0.5 + 0.5 + 0.6) / 3.0).abs() < 1e-15, "{nonint}");
    }

    #[test]
    fn no_positive_is_none() {
        assert_eq!(voc2012_ap(&[false, false]), None);
        assert_eq!(noninterpolated_ap(&[false, false]), None);
        assert_eq!(voc2012_ap(&[]), None);
        assert_eq!(noninterpolated_ap(&[]), None);
    }
}
