//! Data-parallel training with several flex peers in one process (burn-collective's local collective):
//! equivalence with one peer on the doubled batch, interrupt + resume, the run folder written once, and
//! layouts that cannot work.
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, Tensor};
use hst_train::data_parallel::Peer;
use hst_train::trainer::Silent;
use hst_train::{train, train_data_parallel, DataParallel, TrainConfig, TrainError, TrainOptions};

mod common;
use common::*;

/// Two flex peers on this CPU.
fn two_peers() -> DataParallel<burn::tensor::Device<B>> {
    DataParallel::new(vec![Default::default(), Default::default()])
        .with_timeout(std::time::Duration::from_secs(120))
}

/// A configuration in which two shares of a batch compute exactly the doubled batch's objective: the
/// partial-BCE baseline (no IST/CST terms, whose pair sampling and per-batch normalisation depend on the
/// batch), every label known (the BCE's mean over known entries is then the same for shares and whole
/// batch), and no BatchNorm on batch statistics: a frozen trunk (running statistics) and SARL's feature
/// size equal to the trunk's channels (32), which leaves out SARL's 1×1 conv + BatchNorm (as the reference
/// does for equal sizes). Per-replica BatchNorm statistics (PyTorch DDP's default, and ours) are what makes
/// the general case differ.
fn comparable() -> TrainConfig {
    let mut c = tiny().baseline();
    c.data.proportion = 1.0;
    c.model.trunk.frozen_stages = 4;
    c.model.sarl.feature_dim = 32;
    c.epochs = 2;
    // Adam turns float rounding of a near-zero gradient into up to ±lr per step: keep lr small.
    c.optimizer.lr = 1e-3;
    c
}

fn relative_difference(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    let worst = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()));
    worst / scale.max(1e-12)
}

#[test]
fn two_peers_end_where_one_peer_with_the_doubled_batch_ends() {
    let _guard = serial();
    let config = comparable();
    let data = hst_train::data::load(&config.data).unwrap();
    let device = Default::default();

    // One peer, batches of 16.
    let one = out_dir("dp-one");
    train::<B>(
        &config,
        &data,
        &one,
        &TrainOptions::default(),
        &device,
        &mut Silent,
    )
    .unwrap();
    // Two peers, each with 8 images of every batch of 16.
    let two = out_dir("dp-two");
    let summary = train_data_parallel::<B>(
        &config,
        &data,
        &two,
        &TrainOptions::default(),
        &two_peers(),
        &mut Silent,
    )
    .unwrap();
    assert_eq!(summary.epochs_completed, 2);

    let (a, b) = (weights(&one), weights(&two));
    let differing = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count();
    // The trained weights moved (lr 1e-2, 6 steps) and the two runs agree to float rounding of the
    // gradient mean.
    assert!(
        differing > 0,
        "the two runs are bit-identical: was anything trained?"
    );
    let rel = relative_difference(&a, &b);
    assert!(
        rel <= 1e-5,
        "two peers vs one peer: relative difference {rel:e}"
    );

    // The logged losses are those of all shares: the same means as the one-peer run's.
    let logs = |dir: &std::path::Path| hst_train::trainer::read_logs(dir).unwrap();
    for (x, y) in logs(&one).iter().zip(&logs(&two)) {
        for (k, v) in &x.record.losses {
            let w = y.record.losses[k];
            assert!((v - w).abs() <= 1e-5 * v.abs().max(1e-3), "{k}: {v} vs {w}");
        }
        assert!((x.metrics.map - y.metrics.map).abs() < 1e-3);
    }
}

#[test]
fn two_peers_of_full_hst_resume_exactly_and_write_the_run_once() {
    let _guard = serial();
    let mut config = tiny();
    config.log_every = 2;
    let data = hst_train::data::load(&config.data).unwrap();

    let full = out_dir("dp-full");
    let summary = train_data_parallel::<B>(
        &config,
        &data,
        &full,
        &TrainOptions::default(),
        &two_peers(),
        &mut Silent,
    )
    .unwrap();
    assert_eq!(summary.epochs_completed, 3);
    assert!(
        summary.last.is_some(),
        "the main peer's summary has the metrics"
    );
    let logs = hst_train::trainer::read_logs(&full).unwrap();
    assert_eq!(
        logs.len(),
        3,
        "one metrics line per epoch, written by one peer"
    );
    assert!(logs[2].record.cst_pseudo.is_some() && logs[2].record.ist_pseudo.is_some());

    // Stop after the 4th batch (a log point with log_every = 2), then resume.
    let resumed = out_dir("dp-resumed");
    let flag = Arc::new(AtomicBool::new(false));
    let options = TrainOptions {
        stop: Some(flag.clone()),
        ..TrainOptions::default()
    };
    let mut observer = StopAfter {
        flag,
        after: 4,
        seen: 0,
    };
    let first = train_data_parallel::<B>(
        &config,
        &data,
        &resumed,
        &options,
        &two_peers(),
        &mut observer,
    )
    .unwrap();
    assert!(first.interrupted);
    let options = TrainOptions {
        resume: true,
        ..TrainOptions::default()
    };
    let second = train_data_parallel::<B>(
        &config,
        &data,
        &resumed,
        &options,
        &two_peers(),
        &mut Silent,
    )
    .unwrap();
    assert_eq!(second.epochs_completed, 3);
    assert_same(&weights(&full), &weights(&resumed), "resumed two-peer run");
}

#[test]
fn layouts_that_cannot_split_the_batch_are_refused() {
    let _guard = serial();
    let config = tiny(); // batch_size 16
    let data = hst_train::data::load(&config.data).unwrap();
    let three = DataParallel::new(vec![Default::default(); 3]);
    let err = train_data_parallel::<B>(
        &config,
        &data,
        &out_dir("dp-three"),
        &TrainOptions::default(),
        &three,
        &mut Silent,
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::Config(_)), "{err}");
    assert!(err.to_string().contains("3 equal shares"), "{err}");
    let none = DataParallel::<burn::tensor::Device<B>>::new(vec![]);
    assert!(none.check(&config).is_err());
}

/// The gradient mean of two peers is the mean of their gradients, parameter by parameter, and a peer
/// alone passes its gradients through.
#[test]
fn peers_average_their_gradients() {
    let _guard = serial();
    type I = <B as AutodiffBackend>::InnerBackend;
    let device: burn::tensor::Device<B> = Default::default();
    let model = burn::nn::LinearConfig::new(3, 2).init::<B>(&device);
    let input = |seed: u64| {
        <B as burn::prelude::Backend>::seed(&device, seed);
        Tensor::<B, 2>::random([4, 3], Distribution::Default, &device)
    };
    let grads_of = |x: Tensor<B, 2>| {
        let loss = model.forward(x).powf_scalar(2.0).sum();
        GradientsParams::from_grads(loss.backward(), &model)
    };
    let (x0, x1) = (input(1), input(2));
    let weight = model.weight.id;
    let single = |g: &GradientsParams| {
        g.get::<I, 2>(weight)
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    let expected: Vec<f32> = single(&grads_of(x0.clone()))
        .iter()
        .zip(single(&grads_of(x1.clone())))
        .map(|(a, b)| (a + b) / 2.0)
        .collect();
    let solo = Peer::<I>::solo(device);
    let passed = solo
        .mean_gradients::<B, _>(grads_of(x0.clone()), &model)
        .unwrap();
    assert_eq!(single(&passed), single(&grads_of(x0.clone())));

    let results = hst_train::data_parallel::run_local_peers::<B, _, _>(&two_peers(), |peer| {
        let x = if peer.rank == 0 {
            x0.clone()
        } else {
            x1.clone()
        };
        let replica = model.clone().fork(peer.device());
        let loss = replica.forward(x).powf_scalar(2.0).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &replica);
        peer.mean_gradients::<B, _>(grads, &replica)
            .map(|g| single(&g))
    })
    .unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        let got = r.unwrap();
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() <= 1e-6 * e.abs().max(1.0), "{g} vs {e}");
        }
    }
}

/// Every initial weight is drawn when the model is built (under a lock, from the seed): a model whose first
/// forward pass ran before its weights were read has the same weights, so replicas built on several
/// threads and the one-peer run start from the same values.
#[test]
fn initial_weights_do_not_depend_on_the_first_forward_pass() {
    use burn::module::{ModuleVisitor, Param};
    let _guard = serial();
    let config = comparable();
    let data = hst_train::data::load(&config.data).unwrap();
    let constants = hst_train::trainer::RunConstants::of(&config, &data);
    let device = Default::default();
    struct Collect(Vec<f32>);
    impl ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.extend(param.val().into_data().iter::<f32>());
        }
    }
    let values = |forward_first: bool| {
        let model = hst_train::trainer::build_model::<B>(&config, &constants, &device).unwrap();
        if forward_first {
            let _ = model.forward_train(Tensor::<B, 4>::zeros([2, 3, 32, 32], &device));
        }
        let mut c = Collect(vec![]);
        model.visit(&mut c);
        c.0
    };
    let read_first = values(false);
    // Another thread building (and drawing) at the same time changes nothing either.
    let other = std::thread::spawn({
        let (config, constants) = (config.clone(), constants.clone());
        move || {
            for _ in 0..4 {
                hst_train::trainer::build_model::<B>(&config, &constants, &Default::default())
                    .unwrap();
            }
        }
    });
    let forward_first = values(true);
    other.join().unwrap();
    assert_same(&read_first, &forward_first, "initial weights");
}
