//! The composed model end to end on tiny inputs: shapes, the prototype pass, the losses, and gradients
//! reaching SARL, the IST head and the thresholds but not a frozen trunk.

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Distribution;
use hst_backbone::sarl::SarlConfig;
use hst_backbone::trunk::TrunkConfig;
use hst_transfer::{
    HstConfig, IstConfig, KMeansConfig, PrototypeCollector, ScheduleStep, ThresholdsConfig,
};

type AB = Autodiff<Flex>;

#[test]
fn hst_end_to_end() {
    let device = Default::default();
    AB::seed(&device, 0);
    let classes = 3;
    let trunk = TrunkConfig::new();
    let channels = trunk.init::<Flex>(&device).out_channels();
    let config = HstConfig::new(
        trunk,
        SarlConfig::new(classes, channels, 4)
            .with_feature_dim(8)
            .with_attention_dim(4)
            .with_output_dim(8),
    )
    .with_ist(IstConfig::new().with_hidden_dim(4).with_pair_dim(4))
    .with_dtl(ThresholdsConfig::new().with_ist(0.2).with_cst(0.1));
    let words = Tensor::<AB, 2>::random([classes, 4], Distribution::Normal(0.0, 1.0), &device);
    let adjacency =
        Tensor::<AB, 2>::from_data([[1.0, 0.5, 0.0], [0.3, 1.0, 0.2], [0.0, 0.4, 1.0]], &device);
    let model = config
        .init::<AB>(words, adjacency, &device)
        .with_frozen_trunk();

    let images = Tensor::<AB, 4>::random([2, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    let partial = Tensor::<AB, 2>::from_data([[1.0, -1.0, 0.0], [1.0, 1.0, -1.0]], &device);
    let out = model.forward(images.clone());
    assert_eq!(out.logits.dims(), [2, classes]);
    assert_eq!(out.cooccurrence.as_ref().unwrap().dims(), [2, 3]);
    assert_eq!(out.semantic.dims(), [2, classes, 8]);

    // The prototype pass, on the inner backend as the loop would run it.
    let valid = model.valid();
    let mut collector = PrototypeCollector::new(classes, 8, &device);
    collector
        .push(
            valid.semantic_features(images.clone().inner()),
            partial.clone().inner(),
        )
        .unwrap();
    let prototypes = collector
        .fit(&KMeansConfig::new().with_k(2))
        .to_device(&device);
    assert_eq!(prototypes.counts(), vec![2, 1, 0]);
    let prototypes = hst_transfer::Prototypes::<AB>::from_inner(prototypes);

    let step = ScheduleStep {
        epoch: 5,
        batch_index: 0,
        batches_per_epoch: 1,
    };
    let losses = model
        .losses(&out, partial, Some(&prototypes), step, 0)
        .unwrap();
    let total = losses.total.clone().into_scalar();
    assert!(total.is_finite() && total > 0.0);
    // Class 2 has no prototype: no CST pseudo label there.
    let cst_soft: Vec<f32> = losses.cst_soft.unwrap().into_data().to_vec().unwrap();
    assert_eq!((cst_soft[2], cst_soft[5]), (0.0, 0.0));

    let mut grads = losses.total.backward();
    assert!(model.thresholds.ist.grad(&grads).is_some());
    assert!(model.thresholds.cst.grad(&grads).is_some());
    assert_eq!(
        GradientsParams::from_module(&mut grads, &model.trunk).len(),
        0,
        "frozen trunk got gradients"
    );
    assert!(GradientsParams::from_module(&mut grads, &model.sarl).len() > 10);
    assert!(GradientsParams::from_module(&mut grads, model.ist.as_ref().unwrap()).len() > 5);
}
