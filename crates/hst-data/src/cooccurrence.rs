//! The GGNN adjacency: label co-occurrence statistics of the training set's known positives.
//!
//! `A_ij = N_ij / N_ii`, where `N_ij` counts the images in which classes `i` and `j` are both
//! **known positive in the partial labels**: row `i` is the conditional probability of `j` given
//! `i`, the diagonal is 1. It is recomputed from the partial labels of each label proportion.
//!
//! The reference does not guard against a class without any known positive (`N_ii = 0`): its
//! row is `0 / 0 = NaN` (the code calls `nan_to_num` but discards the result).
//! [`NanPolicy::Keep`] reproduces that and is the default; [`NanPolicy::Zero`] replaces the NaNs
//! by 0.

use crate::labels::LabelMatrix;

/// What to do with the row of a class that has no known positive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NanPolicy {
    /// Leave the row NaN, as the reference does.
    #[default]
    Keep,
    /// Replace the NaNs by 0.
    Zero,
}

/// Co-occurrence counts `N_ij` of known positives, row-major `[classes, classes]`.
pub fn cooccurrence_counts(labels: &LabelMatrix) -> Vec<u64> {
    let c = labels.classes();
    let mut counts = vec![0u64; c * c];
    let mut positives = Vec::with_capacity(c);
    for n in 0..labels.images() {
        positives.clear();
        positives.extend(
            labels
                .row(n)
                .iter()
                .enumerate()
                .filter(|(_, &v)| v == 1)
                .map(|(j, _)| j),
        );
        for &i in &positives {
            for &j in &positives {
                counts[i * c + j] += 1;
            }
        }
    }
    counts
}

/// The adjacency `A_ij = N_ij / N_ii` of the partial labels, row-major `[classes, classes]`
/// (computed in float64, as numpy does, then rounded to float32).
pub fn adjacency(partial: &LabelMatrix, nan: NanPolicy) -> Vec<f32> {
    let c = partial.classes();
    let counts = cooccurrence_counts(partial);
    let mut out = Vec::with_capacity(c * c);
    for i in 0..c {
        let diag = counts[i * c + i] as f64;
        for j in 0..c {
            let a = counts[i * c + j] as f64 / diag;
            out.push(if a.is_nan() && nan == NanPolicy::Zero {
                0.0
            } else {
                a as f32
            });
        }
    }
    if let Some(empty) = (0..c).find(|&i| counts[i * c + i] == 0) {
        match nan {
            NanPolicy::Keep => tracing::warn!(
                class = empty,
                "a class has no known positive: its adjacency row is 0/0 (NaN, kept as the reference does)"
            ),
            NanPolicy::Zero => tracing::info!(
                class = empty,
                "a class has no known positive: its adjacency row is set to 0"
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_hand() {
        // 4 images x 3 classes; class 2 never known positive.
        let m = LabelMatrix::new(
            4,
            3,
            vec![
                1, 1, 0, //
                1, -1, -1, //
                1, 0, 0, //
                0, 1, -1,
            ],
        )
        .unwrap();
        assert_eq!(cooccurrence_counts(&m), vec![3, 1, 0, 1, 2, 0, 0, 0, 0]);
        let a = adjacency(&m, NanPolicy::Keep);
        assert_eq!(&a[..6], &[1.0, 1.0 / 3.0, 0.0, 0.5, 1.0, 0.0]);
        assert!(a[6..].iter().all(|v| v.is_nan()));
        let z = adjacency(&m, NanPolicy::Zero);
        assert_eq!(&z[..6], &a[..6]);
        assert_eq!(&z[6..], &[0.0, 0.0, 0.0]);
    }
}
