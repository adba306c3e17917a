//! K-means on the device: greedy k-means++ initialisation and Lloyd iterations, following scikit-learn's
//! `KMeans` defaults (what the reference calls).

use burn::prelude::*;

use crate::pairs::index_tensor;
use hst_data::rng::SeededRng;

/// K-means settings. Defaults follow scikit-learn's `KMeans` (≥ 1.4): `init="k-means++"` (greedy, with
/// `2 + ⌊ln k⌋` local trials), `n_init=1` (sklearn's "auto" for k-means++; the reference ran sklearn
/// versions whose default was 10 restarts: this project runs one, seeded), `max_iter=300`, `tol=1e-4`
/// relative to the mean per-feature variance.
#[derive(Config, Debug)]
pub struct KMeansConfig {
    /// Number of clusters. Default: 10.
    #[config(default = 10)]
    pub k: usize,
    /// Maximum Lloyd iterations. Default: 300.
    #[config(default = 300)]
    pub max_iter: usize,
    /// Convergence tolerance on the total squared center shift, relative to the mean per-feature variance
    /// of the data. Default: 1e-4.
    #[config(default = 1e-4)]
    pub tol: f64,
    /// Seed of the initialisation. Default: 0.
    #[config(default = 0)]
    pub seed: u64,
}

/// The result of [`kmeans`].
#[derive(Debug, Clone)]
pub struct KMeansFit<B: Backend> {
    /// Cluster centers, `[min(k, n), dim]`.
    pub centers: Tensor<B, 2>,
    /// Lloyd iterations run (0 when the points themselves are the centers).
    pub iterations: usize,
    /// Whether the labels stopped changing or the shift fell under the tolerance before `max_iter`.
    pub converged: bool,
    /// Sum of squared distances of the points to their closest center.
    pub inertia: f64,
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().iter::<f64>().collect()
}

/// Squared euclidean distances `‖x‖² − 2 x·c + ‖c‖²`, clamped at 0.
///
/// # Shapes
/// - x: `[n, dim]`, x_sq: `[n, 1]`, centers: `[m, dim]`
/// - output: `[n, m]`
fn squared_distances<B: Backend>(
    x: Tensor<B, 2>,
    x_sq: Tensor<B, 2>,
    centers: Tensor<B, 2>,
) -> Tensor<B, 2> {
    let c_sq = centers.clone().square().sum_dim(1).transpose(); // [1, m]
    let cross = x.matmul(centers.transpose()); // [n, m]
    (x_sq + c_sq - cross * 2.0).clamp_min(0.0)
}

/// Cluster `points` into `min(k, n)` clusters. `None` when there is no point.
///
/// With `n ≤ k` points the points themselves are the centers. Deterministic for a given seed and input.
/// Everything but the sampling runs on the points' device; each step reads a few values back (the
/// candidates' potentials, the cluster sizes, the center shift).
///
/// Empty clusters (possible with duplicate points) are moved to the points farthest from their centers,
/// as scikit-learn does (without its adjustment of the donor clusters).
///
/// # Shapes
/// - points: `[n, dim]`
/// - output centers: `[min(k, n), dim]`
pub fn kmeans<B: Backend>(points: Tensor<B, 2>, config: &KMeansConfig) -> Option<KMeansFit<B>> {
    let [n, dim] = points.dims();
    if n == 0 || config.k == 0 {
        return None;
    }
    let device = points.device();
    let k = config.k;
    if n <= k {
        return Some(KMeansFit {
            centers: points,
            iterations: 0,
            converged: true,
            inertia: 0.0,
        });
    }

    // Center the data for precision (sklearn does the same); shift the centers back at the end.
    let mean = points.clone().mean_dim(0); // [1, dim]
    let x = points - mean.clone(); // [n, dim]
    let x_sq = x.clone().square().sum_dim(1); // [n, 1]
    let tol = config.tol * x.clone().var_bias(0).mean().into_scalar().to_f64(); // absolute tolerance

    // Greedy k-means++.
    let mut rng = SeededRng::new(config.seed);
    let trials = 2 + (k as f64).ln().floor() as usize;
    let first = rng.below_unbiased(n);
    let mut chosen = vec![first];
    let mut closest = squared_distances(
        x.clone(),
        x_sq.clone(),
        x.clone().select(0, index_tensor::<B>(&[first], &device)),
    ); // [n, 1]
    let mut closest_host = host(closest.clone());
    let mut potential: f64 = closest_host.iter().sum();
    for _ in 1..k {
        let mut cumulative = Vec::with_capacity(n);
        let mut acc = 0.0f64;
        for v in &closest_host {
            acc += v;
            cumulative.push(acc);
        }
        let candidates: Vec<usize> = (0..trials)
            .map(|_| {
                let r = rng.next_f64() * potential;
                cumulative.partition_point(|&c| c < r).min(n - 1)
            })
            .collect();
        let to_candidates = squared_distances(
            x.clone(),
            x_sq.clone(),
            x.clone().select(0, index_tensor::<B>(&candidates, &device)),
        ); // [n, trials]
        let updated = to_candidates.min_pair(closest.clone().expand([n, trials])); // [n, trials]
        let potentials = host(updated.clone().sum_dim(0)); // trials values
        let best = potentials
            .iter()
            .enumerate()
            .fold(0, |b, (i, &p)| if p < potentials[b] { i } else { b });
        closest = updated.slice([0..n, best..best + 1]); // [n, 1]
        closest_host = host(closest.clone());
        potential = potentials[best];
        chosen.push(candidates[best]);
    }

    // Lloyd iterations.
    let mut centers = x.clone().select(0, index_tensor::<B>(&chosen, &device)); // [k, dim]
    let mut previous: Option<Tensor<B, 2, Int>> = None;
    let mut iterations = 0;
    let mut converged = false;
    for _ in 0..config.max_iter {
        iterations += 1;
        let distances = squared_distances(x.clone(), x_sq.clone(), centers.clone()); // [n, k]
        let (nearest, labels) = distances.min_dim_with_indices(1); // [n, 1], [n, 1]
        let assignment = labels.clone().reshape([n]).one_hot::<2>(k).float(); // [n, k]
        let sizes = assignment.clone().sum_dim(0); // [1, k]
        let sums = assignment.transpose().matmul(x.clone()); // [k, dim]
        let mut updated = sums / sizes.clone().transpose().clamp_min(1.0); // [k, dim]

        let sizes_host = host(sizes);
        let empty: Vec<usize> = (0..k).filter(|&j| sizes_host[j] == 0.0).collect();
        if !empty.is_empty() {
            let far = host(nearest.reshape([n]));
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| far[b].total_cmp(&far[a]).then(a.cmp(&b)));
            for (slot, &j) in empty.iter().enumerate() {
                let point = x
                    .clone()
                    .select(0, index_tensor::<B>(&[order[slot]], &device));
                updated = updated.slice_assign([j..j + 1, 0..dim], point);
            }
        }

        let shift = (updated.clone() - centers)
            .square()
            .sum()
            .into_scalar()
            .to_f64();
        centers = updated;
        let unchanged = match &previous {
            Some(prev) => !labels
                .clone()
                .not_equal(prev.clone())
                .any()
                .into_scalar()
                .to_bool(),
            None => false,
        };
        if unchanged || shift <= tol {
            converged = true;
            break;
        }
        previous = Some(labels);
    }

    let final_distances = squared_distances(x, x_sq, centers.clone()); // [n, k]
    let inertia = final_distances.min_dim(1).sum().into_scalar().to_f64();
    Some(KMeansFit {
        centers: centers + mean,
        iterations,
        converged,
        inertia,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type TB = burn::backend::Flex;

    /// Three well separated blobs of 8 points in 2-D.
    fn blobs(device: &Device<TB>) -> Tensor<TB, 2> {
        let mut rng = SeededRng::new(99);
        let mut v = Vec::new();
        for (cx, cy) in [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)] {
            for _ in 0..8 {
                v.push(cx + rng.next_f64() as f32 - 0.5);
                v.push(cy + rng.next_f64() as f32 - 0.5);
            }
        }
        Tensor::<TB, 1>::from_floats(v.as_slice(), device).reshape([24, 2])
    }

    #[test]
    fn finds_separated_blobs_deterministically() {
        let device = Default::default();
        let config = KMeansConfig::new().with_k(3).with_seed(5);
        let a = kmeans(blobs(&device), &config).unwrap();
        let b = kmeans(blobs(&device), &config).unwrap();
        assert!(a.converged);
        let ca = a.centers.into_data().to_vec::<f32>().unwrap();
        assert_eq!(ca, b.centers.into_data().to_vec::<f32>().unwrap());
        let mut found: Vec<(i32, i32)> = ca
            .chunks(2)
            .map(|c| (c[0].round() as i32, c[1].round() as i32))
            .collect();
        found.sort();
        assert_eq!(found, vec![(0, 0), (0, 10), (10, 0)]);
        assert!(a.inertia < 24.0 * 0.5, "inertia {}", a.inertia);
    }

    #[test]
    fn fewer_points_than_k_and_none() {
        let device = Default::default();
        let pts = Tensor::<TB, 2>::from_data([[1.0, 2.0], [3.0, 4.0]], &device);
        let fit = kmeans(pts.clone(), &KMeansConfig::new()).unwrap();
        assert_eq!(fit.iterations, 0);
        fit.centers.into_data().assert_eq(&pts.into_data(), true);
        let empty = Tensor::<TB, 2>::zeros([0, 2], &device);
        assert!(kmeans(empty, &KMeansConfig::new()).is_none());
    }

    #[test]
    fn duplicate_points_do_not_crash() {
        let device = Default::default();
        let pts = Tensor::<TB, 2>::ones([12, 3], &device);
        let fit = kmeans(pts, &KMeansConfig::new().with_k(4)).unwrap();
        assert_eq!(fit.centers.dims(), [4, 3]);
        let c = fit.centers.into_data().to_vec::<f32>().unwrap();
        assert!(c.iter().all(|v| (v - 1.0).abs() < 1e-6));
    }
}
