//! Gradient checks on `Autodiff<Flex>`: which parts of the model each HST loss trains, the schedule, and
//! that frozen parts receive nothing.

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Distribution;
use hst_backbone::sarl::SarlConfig;
use hst_backbone::trunk::TrunkConfig;
use hst_transfer::{
    AblationConfig, HstConfig, HstOutput, IstHead, IstHeadConfig, KMeansConfig, PrototypeCollector,
    Prototypes, ScheduleStep, Thresholds, ThresholdsConfig,
};

type AB = Autodiff<Flex>;

const BATCH: usize = 4;
const CLASSES: usize = 4;
const DIM: usize = 6;

struct Setup {
    head: IstHead<AB>,
    semantic: Tensor<AB, 3>,
    logits: Tensor<AB, 2>,
    partial: Tensor<AB, 2>,
    prototypes: Prototypes<AB>,
}

fn setup(seed: u64) -> Setup {
    let device = Default::default();
    AB::seed(&device, seed);
    let head = IstHeadConfig::new(CLASSES, DIM)
        .with_hidden_dim(5)
        .with_pair_dim(3)
        .init::<AB>(&device);
    let semantic = Tensor::<AB, 3>::random(
        [BATCH, CLASSES, DIM],
        Distribution::Normal(0.0, 1.0),
        &device,
    )
    .require_grad();
    let logits = Tensor::<AB, 2>::random([BATCH, CLASSES], Distribution::Normal(0.0, 1.0), &device)
        .require_grad();
    // Every image has a known positive; known negatives and unknowns everywhere.
    let partial = Tensor::<AB, 2>::from_data(
        [
            [1.0, -1.0, 0.0, 1.0],
            [1.0, 1.0, -1.0, 0.0],
            [0.0, 1.0, 0.0, -1.0],
            [-1.0, 0.0, 1.0, 1.0],
        ],
        &device,
    );
    // Prototypes: the features themselves, nudged, so that similarities are high but below 1.
    let mut collector = PrototypeCollector::<AB>::new(CLASSES, DIM, &device);
    let noise = Tensor::<AB, 3>::random(
        [BATCH, CLASSES, DIM],
        Distribution::Normal(0.0, 0.3),
        &device,
    );
    collector
        .push(semantic.clone().detach() + noise, partial.clone())
        .unwrap();
    let prototypes = collector.fit(&KMeansConfig::new().with_k(2).with_seed(seed));
    Setup {
        head,
        semantic,
        logits,
        partial,
        prototypes,
    }
}

fn config() -> HstConfig {
    HstConfig::new(TrunkConfig::new(), SarlConfig::new(CLASSES, 8, 3))
}

fn output(s: &Setup) -> HstOutput<AB> {
    HstOutput {
        logits: s.logits.clone(),
        cooccurrence: Some(s.head.forward(s.semantic.clone())),
        semantic: s.semantic.clone(),
    }
}

fn step(epoch: usize, batch_index: usize) -> ScheduleStep {
    ScheduleStep {
        epoch,
        batch_index,
        batches_per_epoch: 10,
    }
}

fn nonzero(t: Option<Tensor<Flex, 1>>) -> bool {
    t.map(|g| g.abs().sum().into_scalar() > 0.0)
        .unwrap_or(false)
}

fn nonzero2(t: Option<Tensor<Flex, 2>>) -> bool {
    t.map(|g| g.abs().sum().into_scalar() > 0.0)
        .unwrap_or(false)
}

#[test]
fn dtl_losses_train_thresholds_head_and_features_below_saturation() {
    let s = setup(1);
    let device = Default::default();
    // Thresholds well below the scores, so that the clamps are not saturated.
    let thresholds: Thresholds<AB> = ThresholdsConfig::new()
        .with_ist(0.3)
        .with_cst(0.2)
        .init(&device);
    let objective = config().objective();
    let losses = objective
        .compute(
            &output(&s),
            s.partial.clone(),
            Some(&s.prototypes),
            &thresholds,
            step(5, 0),
            0,
        )
        .unwrap();

    let soft = losses
        .ist_soft
        .clone()
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert!(
        soft.iter().any(|v| *v > 0.0 && *v < 1.0),
        "IST soft scores all saturated: {soft:?}"
    );
    let grads = losses.dtl_ist.clone().unwrap().backward();
    assert!(
        nonzero(thresholds.ist.grad(&grads)),
        "τ_ist gets no gradient from L_dtl^ist"
    );
    assert!(
        thresholds.cst.grad(&grads).is_none(),
        "τ_cst must not be in L_dtl^ist's graph"
    );
    assert!(
        nonzero2(s.head.pair_classifier.weight.grad(&grads)),
        "the co-occurrence head gets no gradient"
    );
    assert!(nonzero2(s.head.pair_hidden.weight.grad(&grads)));
    assert!(
        s.logits.grad(&grads).is_none(),
        "L_dtl^ist does not involve the class logits"
    );

    let cst_soft = losses
        .cst_soft
        .clone()
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert!(
        cst_soft.iter().any(|v| *v > 0.0 && *v < 1.0),
        "CST soft scores all saturated: {cst_soft:?}"
    );
    let grads = losses.dtl_cst.clone().unwrap().backward();
    assert!(
        nonzero(thresholds.cst.grad(&grads)),
        "τ_cst gets no gradient from L_dtl^cst"
    );
    assert!(thresholds.ist.grad(&grads).is_none());
    let g = s
        .semantic
        .grad(&grads)
        .expect("features in L_dtl^cst's graph");
    assert!(g.abs().sum().into_scalar() > 0.0);

    // Known positives push τ down: with only positives known, dL/dτ > 0 (gradient descent lowers τ).
    let positives_only = s.partial.clone().clamp_min(0.0);
    let losses = objective
        .compute(
            &output(&s),
            positives_only,
            Some(&s.prototypes),
            &thresholds,
            step(5, 0),
            0,
        )
        .unwrap();
    let grads = losses.dtl_ist.unwrap().backward();
    assert!(thresholds.ist.grad(&grads).unwrap().into_scalar() > 0.0);
}

#[test]
fn saturated_thresholds_get_zero_gradient_except_at_the_boundary() {
    // At τ = 1 the clamps are saturated (scores ≤ 1), so the DTL gradient on τ is 0, except for scores of
    // exactly 1: there burn, like torch's clamp backward, passes the gradient (the boundary subgradient is 1).
    // An IST score is exactly 1 for the known positive of an image with a single known positive (M_ii = 1).
    let s = setup(2);
    let device = Default::default();
    let thresholds: Thresholds<AB> = ThresholdsConfig::new().init(&device);
    let objective = config().objective();
    // Every image has 0 or at least 2 known positives: all scores < 1.
    let no_single = Tensor::<AB, 2>::from_data(
        [
            [1.0, -1.0, 0.0, 1.0],
            [1.0, 1.0, -1.0, 0.0],
            [0.0, -1.0, 0.0, -1.0],
            [-1.0, 0.0, 1.0, 1.0],
        ],
        &device,
    );
    let losses = objective
        .compute(
            &output(&s),
            no_single.clone(),
            Some(&s.prototypes),
            &thresholds,
            step(6, 3),
            0,
        )
        .unwrap();
    let grads = losses.total.backward();
    for g in [thresholds.ist.grad(&grads), thresholds.cst.grad(&grads)] {
        assert_eq!(g.map(|g| g.into_scalar()).unwrap_or(0.0), 0.0);
    }
    // Image 2 now has a single known positive (class 1): τ_ist gets a gradient at the boundary.
    let single = no_single.slice_assign([2..3, 1..2], Tensor::ones([1, 1], &device));
    let losses = objective
        .compute(
            &output(&s),
            single,
            Some(&s.prototypes),
            &thresholds,
            step(6, 3),
            0,
        )
        .unwrap();
    let grads = losses.dtl_ist.unwrap().backward();
    assert!(thresholds.ist.grad(&grads).unwrap().into_scalar() > 0.0);
}

#[test]
fn fixed_thresholds_and_frozen_head_receive_nothing() {
    let s = setup(3);
    let device = Default::default();
    let thresholds: Thresholds<AB> = ThresholdsConfig::new()
        .with_ist(0.3)
        .with_cst(0.2)
        .with_learnable(false)
        .init(&device);
    let frozen_head = s.head.clone().no_grad();
    let out = HstOutput {
        logits: s.logits.clone(),
        cooccurrence: Some(frozen_head.forward(s.semantic.clone())),
        semantic: s.semantic.clone(),
    };
    let losses = config()
        .objective()
        .compute(
            &out,
            s.partial.clone(),
            Some(&s.prototypes),
            &thresholds,
            step(7, 1),
            0,
        )
        .unwrap();
    let grads = losses.total.backward();
    assert!(thresholds.ist.grad(&grads).is_none());
    assert!(thresholds.cst.grad(&grads).is_none());
    assert_eq!(GradientsParams::from_grads(grads, &frozen_head).len(), 0);
}

#[test]
fn schedule_weights_and_ramp() {
    let s = setup(4);
    let device = Default::default();
    let thresholds: Thresholds<AB> = ThresholdsConfig::new()
        .with_ist(0.3)
        .with_cst(0.2)
        .init(&device);
    let objective = config().objective();
    let value = |t: &Tensor<AB, 1>| t.clone().into_scalar() as f64;

    // Epoch 0, batch 0: the ramp is 0, only the partial BCE counts; nothing pseudo-labelled.
    let l = objective
        .compute(
            &output(&s),
            s.partial.clone(),
            Some(&s.prototypes),
            &thresholds,
            step(0, 0),
            0,
        )
        .unwrap();
    assert_eq!(l.ramp, 0.0);
    assert!((value(&l.total) - value(&l.partial_bce)).abs() < 1e-6);
    assert!(
        l.ist_bce.is_none() && l.dtl_ist.is_none() && l.prototype.is_none() && l.cst_bce.is_none()
    );
    assert!(l.ist_asl.is_some() && l.instance.is_some());
    // Before the pseudo-label epoch τ is not in the graph at all.
    let grads = l.total.backward();
    assert!(thresholds.ist.grad(&grads).is_none() && thresholds.cst.grad(&grads).is_none());

    // Epoch 0, batch 4 of 10: r = 0.4.
    let l = objective
        .compute(
            &output(&s),
            s.partial.clone(),
            Some(&s.prototypes),
            &thresholds,
            step(0, 4),
            0,
        )
        .unwrap();
    let expected = value(&l.partial_bce)
        + 0.4
            * (10.0 * value(l.ist_asl.as_ref().unwrap())
                + 0.05 * value(l.instance.as_ref().unwrap()));
    assert!((value(&l.total) - expected).abs() < 1e-5 * expected.abs().max(1.0));

    // Epoch 2: r = 1, still no pseudo labels.
    let l = objective
        .compute(
            &output(&s),
            s.partial.clone(),
            None,
            &thresholds,
            step(2, 0),
            0,
        )
        .unwrap();
    assert_eq!(l.ramp, 1.0);
    assert!(l.ist_bce.is_none());

    // Epoch 5: everything, with the default weights.
    let l = objective
        .compute(
            &output(&s),
            s.partial.clone(),
            Some(&s.prototypes),
            &thresholds,
            step(5, 2),
            0,
        )
        .unwrap();
    let v = |t: &Option<Tensor<AB, 1>>| value(t.as_ref().expect("active at epoch 5"));
    let expected = value(&l.partial_bce)
        + v(&l.ist_bce)
        + v(&l.cst_bce)
        + 0.1 * v(&l.dtl_ist)
        + 10.0 * v(&l.ist_asl)
        + 0.1 * v(&l.dtl_cst)
        + 0.05 * v(&l.instance)
        + 0.05 * v(&l.prototype);
    assert!((value(&l.total) - expected).abs() < 1e-5 * expected.abs().max(1.0));
    // Hard targets keep the known labels and only add positives.
    let y: Vec<f32> = s.partial.clone().into_data().to_vec().unwrap();
    for t in [l.ist_targets.unwrap(), l.cst_targets.unwrap()] {
        let t: Vec<f32> = t.into_data().to_vec().unwrap();
        for (a, b) in y.iter().zip(&t) {
            assert!(if *a != 0.0 {
                a == b
            } else {
                *b == 0.0 || *b == 1.0
            });
        }
    }

    // Epoch 5 without prototypes: the CST pseudo-label terms are skipped, IST still runs.
    let l = objective
        .compute(
            &output(&s),
            s.partial.clone(),
            None,
            &thresholds,
            step(5, 2),
            0,
        )
        .unwrap();
    assert!(l.cst_bce.is_none() && l.prototype.is_none() && l.dtl_cst.is_none());
    assert!(l.ist_bce.is_some() && l.instance.is_some());

    // Baseline: only the partial BCE.
    let mut cfg = config();
    cfg.ablation = AblationConfig::new().with_partial_bce_only(true);
    let l = cfg
        .objective()
        .compute(
            &output(&s),
            s.partial.clone(),
            Some(&s.prototypes),
            &thresholds,
            step(8, 2),
            0,
        )
        .unwrap();
    assert!((value(&l.total) - value(&l.partial_bce)).abs() < 1e-7);
    assert!(l.ist_asl.is_none() && l.instance.is_none());

    // Shape errors are reported, not panicked.
    let bad = Tensor::<AB, 2>::zeros([BATCH, CLASSES + 1], &device);
    assert!(objective
        .compute(&output(&s), bad, None, &thresholds, step(5, 0), 0)
        .is_err());
}

#[test]
fn schedule_prototype_epochs() {
    let schedule = config().schedule;
    let due: Vec<usize> = (0..20).filter(|&e| schedule.prototypes_due(e)).collect();
    assert_eq!(due, vec![5, 10, 15]);
    let once = schedule.with_recompute_prototypes(false);
    assert_eq!(
        (0..20)
            .filter(|&e| once.prototypes_due(e))
            .collect::<Vec<_>>(),
        vec![5]
    );
}

#[test]
fn config_round_trips_through_json() {
    let cfg = config();
    let json = serde_json::to_string(&cfg).unwrap();
    let back: HstConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(serde_json::to_string(&back).unwrap(), json);
    assert!(json.contains("\"pseudo_label_epoch\":5"));
}
