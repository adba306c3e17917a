//! Unordered pairs `i < j` in the reference order `(0,1), (0,2), …, (0,n−1), (1,2), …`.

use burn::prelude::*;

/// Number of unordered pairs of `n` items, `n(n−1)/2`.
pub fn pair_count(n: usize) -> usize {
    n * n.saturating_sub(1) / 2
}

/// The first and second members of every pair `i < j`, in the reference order
/// (`getConcatIndex` in HCP-MLR-PL).
pub fn pair_indices(n: usize) -> (Vec<usize>, Vec<usize>) {
    let mut first = Vec::with_capacity(pair_count(n));
    let mut second = Vec::with_capacity(pair_count(n));
    for i in 0..n.saturating_sub(1) {
        for j in i + 1..n {
            first.push(i);
            second.push(j);
        }
    }
    (first, second)
}

/// Index of the pair `(i, j)`, `i < j < n`, in the order of [`pair_indices`].
pub fn pair_index(n: usize, i: usize, j: usize) -> usize {
    debug_assert!(i < j && j < n);
    i * (2 * n - i - 1) / 2 + (j - i - 1)
}

/// [`pair_indices`] as two int tensors of length `pairs`.
pub fn pair_index_tensors<B: Backend>(
    n: usize,
    device: &B::Device,
) -> (Tensor<B, 1, Int>, Tensor<B, 1, Int>) {
    let (first, second) = pair_indices(n);
    (index_tensor(&first, device), index_tensor(&second, device))
}

/// A host index list as an int tensor.
pub(crate) fn index_tensor<B: Backend>(indices: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let data: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(data, [indices.len()]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_index() {
        let (f, s) = pair_indices(4);
        assert_eq!(f, vec![0, 0, 0, 1, 1, 2]);
        assert_eq!(s, vec![1, 2, 3, 2, 3, 3]);
        for (p, (&i, &j)) in f.iter().zip(&s).enumerate() {
            assert_eq!(pair_index(4, i, j), p);
        }
        assert_eq!(pair_count(20), 190);
        assert_eq!(pair_count(80), 3160);
        assert_eq!(pair_count(200), 19900);
        assert_eq!(pair_indices(1).0.len(), 0);
    }
}
