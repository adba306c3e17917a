//! The composed HST model (trunk → SARL, IST head, thresholds) and its training objective.

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use hst_backbone::sarl::{Sarl, SarlConfig};
use hst_backbone::trunk::{Trunk, TrunkConfig};

use crate::batch_labels::BatchLabels;
use crate::cst::{prototype_similarity, CstConfig, Prototypes};
use crate::dtl::{Thresholds, ThresholdsConfig};
use crate::error::TransferError;
use crate::ist::{cooccurrence_targets, IstConfig, IstHead};
use crate::loss::{
    AsymmetricLoss, DtlLoss, InstanceContrastiveLoss, PartialBceLoss, PrototypeLoss,
    PrototypeLossConfig,
};
use crate::pseudo_labels::{hard_pseudo_labels, ist_scores, mask_classes, soft_scores};

/// Loss weights. Defaults are scripts/HST.sh's.
#[derive(Config, Debug)]
pub struct LossWeights {
    /// Weight of `BCE_p(s, ỹ^ist)` (the reference adds it with weight 1). Default: 1.0.
    #[config(default = 1.0)]
    pub ist_bce: f64,
    /// Weight of `BCE_p(s, ỹ^cst)`. Default: 1.0.
    #[config(default = 1.0)]
    pub cst_bce: f64,
    /// λ_ist of the co-occurrence ASL (reference `intraCooccurrenceWeight`). Default: 10.0.
    #[config(default = 10.0)]
    pub cooccurrence: f64,
    /// Weight of the IST DTL loss (reference `intraBCEWeight`). Default: 0.1.
    #[config(default = 0.1)]
    pub dtl_ist: f64,
    /// Weight of the CST DTL loss (reference `interBCEWeight`). Default: 0.1.
    #[config(default = 0.1)]
    pub dtl_cst: f64,
    /// Weight of the instance contrastive loss (reference `interInstanceDistanceWeight`). Default: 0.05.
    #[config(default = 0.05)]
    pub instance: f64,
    /// Weight of the prototype loss (reference `interPrototypeDistanceWeight`). Default: 0.05.
    #[config(default = 0.05)]
    pub prototype: f64,
}

/// When each part of the objective is active. Defaults are the reference's.
#[derive(Config, Debug)]
pub struct ScheduleConfig {
    /// First epoch with pseudo labels, DTL and prototype losses (reference `generateLabelEpoch`). Default: 5.
    #[config(default = 5)]
    pub pseudo_label_epoch: usize,
    /// Prototypes are recomputed at the start of every epoch `e ≥ pseudo_label_epoch` with
    /// `e % prototype_interval == 0` (reference `computePrototypeEpoch`). Default: 5.
    #[config(default = 5)]
    pub prototype_interval: usize,
    /// Recompute the prototypes after the first time (reference `useRecomputePrototype`). Default: true.
    #[config(default = true)]
    pub recompute_prototypes: bool,
    /// Ramp the co-occurrence and instance losses linearly by `batch_index / batches_per_epoch` during
    /// epoch 0 (the reference does). Default: true.
    #[config(default = true)]
    pub warmup_ramp: bool,
}

impl ScheduleConfig {
    /// Whether the prototypes must be (re)computed before training epoch `epoch`: at
    /// `pseudo_label_epoch`, then (if recomputing) at every later multiple of `prototype_interval`
    /// (5, 10, 15 with the defaults).
    ///
    /// The reference also requires `pseudo_label_epoch % prototype_interval == 0` for the first computation
    /// (it would crash otherwise); here the first computation always happens at `pseudo_label_epoch`.
    pub fn prototypes_due(&self, epoch: usize) -> bool {
        if epoch < self.pseudo_label_epoch {
            return false;
        }
        epoch == self.pseudo_label_epoch
            || (self.recompute_prototypes
                && self.prototype_interval > 0
                && epoch.is_multiple_of(self.prototype_interval))
    }

    /// Whether pseudo labels (and DTL, prototype losses) are used in `epoch`.
    pub fn pseudo_labels_active(&self, epoch: usize) -> bool {
        epoch >= self.pseudo_label_epoch
    }

    /// The ramp factor `r` of the co-occurrence and instance losses: `batch_index / batches_per_epoch` in
    /// epoch 0 (when `warmup_ramp`), 1 afterwards.
    pub fn ramp(&self, step: &ScheduleStep) -> f64 {
        if self.warmup_ramp && step.epoch == 0 {
            step.batch_index as f64 / step.batches_per_epoch.max(1) as f64
        } else {
            1.0
        }
    }
}

/// Ablation switches. Default: the full HST.
#[derive(Config, Debug)]
pub struct AblationConfig {
    /// IST: the co-occurrence head, its ASL, IST pseudo labels and the IST DTL loss. Default: true.
    #[config(default = true)]
    pub ist: bool,
    /// CST: the instance and prototype losses, CST pseudo labels and the CST DTL loss. Default: true.
    #[config(default = true)]
    pub cst: bool,
    /// DTL: learnable thresholds and their losses. When false, the thresholds stay at
    /// [`ThresholdsConfig`]'s values (the fixed-threshold ablation) and no DTL loss is added. Default: true.
    #[config(default = true)]
    pub dtl: bool,
    /// Plain partial-BCE baseline: only `BCE_p(s, y)`; overrides the other switches (no IST head is built).
    /// Default: false.
    #[config(default = false)]
    pub partial_bce_only: bool,
}

impl AblationConfig {
    /// IST in effect.
    pub fn ist_enabled(&self) -> bool {
        self.ist && !self.partial_bce_only
    }

    /// CST in effect.
    pub fn cst_enabled(&self) -> bool {
        self.cst && !self.partial_bce_only
    }

    /// DTL in effect.
    pub fn dtl_enabled(&self) -> bool {
        self.dtl && !self.partial_bce_only
    }
}

/// Everything that describes an HST model and its objective. Serialisable (burn `Config`).
#[derive(Config, Debug)]
pub struct HstConfig {
    /// The CNN trunk.
    pub trunk: TrunkConfig,
    /// SARL (its `in_channels` must equal the trunk's output channels).
    pub sarl: SarlConfig,
    /// IST head sizes and loss.
    #[config(default = "IstConfig::new()")]
    pub ist: IstConfig,
    /// CST prototypes, similarity and losses.
    #[config(default = "CstConfig::new()")]
    pub cst: CstConfig,
    /// DTL thresholds (initial values; `learnable` is overridden by `ablation.dtl`).
    #[config(default = "ThresholdsConfig::new()")]
    pub dtl: ThresholdsConfig,
    /// Loss weights.
    #[config(default = "LossWeights::new()")]
    pub weights: LossWeights,
    /// The schedule.
    #[config(default = "ScheduleConfig::new()")]
    pub schedule: ScheduleConfig,
    /// Ablation switches.
    #[config(default = "AblationConfig::new()")]
    pub ablation: AblationConfig,
}

/// The loss-side settings of an [`HstConfig`], carried by the model (not a module: nothing trained).
#[derive(Debug, Clone)]
pub struct HstObjective {
    /// Loss weights.
    pub weights: LossWeights,
    /// The schedule.
    pub schedule: ScheduleConfig,
    /// Ablation switches.
    pub ablation: AblationConfig,
    /// The co-occurrence loss.
    pub cooccurrence_loss: AsymmetricLoss,
    /// Partial BCE (classification and DTL).
    pub partial_bce: PartialBceLoss,
    /// The instance contrastive loss.
    pub instance_loss: InstanceContrastiveLoss,
    /// The prototype loss.
    pub prototype_loss: PrototypeLoss,
    /// Cosine eps of the prototype similarity.
    pub similarity_eps: f64,
}

impl HstConfig {
    /// The objective described by this config.
    pub fn objective(&self) -> HstObjective {
        HstObjective {
            weights: self.weights.clone(),
            schedule: self.schedule.clone(),
            ablation: self.ablation.clone(),
            cooccurrence_loss: self.ist.loss.init(),
            partial_bce: PartialBceLoss::default(),
            instance_loss: self.cst.instance.init(),
            prototype_loss: PrototypeLossConfig::new()
                .with_sign(self.cst.prototype_loss_sign)
                .init(),
            similarity_eps: self.cst.eps,
        }
    }

    /// Build the model on `device`.
    ///
    /// - `word_vectors`: `[classes, embed_dim]`
    /// - `adjacency`: `[classes, classes]` (see [`hst_backbone::sarl::adjacency_nan_to_zero`])
    ///
    /// # Panics
    /// If the trunk's output channels differ from `sarl.in_channels`, or the constants' shapes from the
    /// SARL config.
    pub fn init<B: Backend>(
        &self,
        word_vectors: Tensor<B, 2>,
        adjacency: Tensor<B, 2>,
        device: &B::Device,
    ) -> Hst<B> {
        let trunk = self.trunk.init::<B>(device);
        assert_eq!(
            trunk.out_channels(),
            self.sarl.in_channels,
            "the trunk outputs {} channels but SarlConfig.in_channels={}",
            trunk.out_channels(),
            self.sarl.in_channels
        );
        let sarl = self.sarl.init(word_vectors, adjacency, device);
        let ist = self.ablation.ist_enabled().then(|| {
            self.ist
                .head(self.sarl.classes, self.sarl.feature_dim)
                .init(device)
        });
        let thresholds = self
            .dtl
            .clone()
            .with_learnable(self.dtl.learnable && self.ablation.dtl_enabled())
            .init(device);
        Hst {
            trunk,
            sarl,
            ist,
            thresholds,
            objective: self.objective(),
        }
    }
}

/// HST: trunk → SARL (semantic features, logits), IST co-occurrence head, DTL thresholds.
#[derive(Module, Debug)]
pub struct Hst<B: Backend> {
    /// The CNN trunk.
    pub trunk: Trunk<B>,
    /// SARL head.
    pub sarl: Sarl<B>,
    /// IST co-occurrence head (`None` when IST is ablated).
    pub ist: Option<IstHead<B>>,
    /// τ_ist, τ_cst.
    pub thresholds: Thresholds<B>,
    /// Loss settings (not a module).
    #[module(skip)]
    pub objective: HstObjective,
}

/// The outputs of [`Hst::forward`].
#[derive(Debug, Clone)]
pub struct HstOutput<B: Backend> {
    /// Per-class logits, `[batch, classes]`.
    pub logits: Tensor<B, 2>,
    /// Pair co-occurrence logits `m_ij`, `[batch, pairs]` (`None` when IST is ablated).
    pub cooccurrence: Option<Tensor<B, 2>>,
    /// Semantic features `f_c`, `[batch, classes, dim]`.
    pub semantic: Tensor<B, 3>,
}

/// Where training is in the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleStep {
    /// Epoch, from 0.
    pub epoch: usize,
    /// Batch index within the epoch, from 0.
    pub batch_index: usize,
    /// Batches per epoch (`len(train_loader)`).
    pub batches_per_epoch: usize,
}

/// The terms of the HST objective for one batch. Every component is the **unweighted** loss; `total` is the
/// weighted, scheduled sum. A component is `None` when it is not active at this step (or ablated).
#[derive(Debug, Clone)]
pub struct HstLosses<B: Backend> {
    /// The scheduled, weighted sum, `[1]`.
    pub total: Tensor<B, 1>,
    /// `BCE_p(s, y)`, `[1]`.
    pub partial_bce: Tensor<B, 1>,
    /// `BCE_p(s, ỹ^ist)` (from `pseudo_label_epoch`).
    pub ist_bce: Option<Tensor<B, 1>>,
    /// `BCE_p(s, ỹ^cst)` (from `pseudo_label_epoch`, with prototypes).
    pub cst_bce: Option<Tensor<B, 1>>,
    /// `L_ist`, the co-occurrence ASL (from epoch 0).
    pub ist_asl: Option<Tensor<B, 1>>,
    /// `L_inst` (from epoch 0).
    pub instance: Option<Tensor<B, 1>>,
    /// `L_proto` (from `pseudo_label_epoch`, with prototypes).
    pub prototype: Option<Tensor<B, 1>>,
    /// `L_dtl^ist`.
    pub dtl_ist: Option<Tensor<B, 1>>,
    /// `L_dtl^cst`.
    pub dtl_cst: Option<Tensor<B, 1>>,
    /// The ramp factor applied to `ist_asl` and `instance`.
    pub ramp: f64,
    /// IST soft scores `ŷ^ist` (detached), `[batch, classes]`.
    pub ist_soft: Option<Tensor<B, 2>>,
    /// IST hard targets `ỹ^ist`, `[batch, classes]`.
    pub ist_targets: Option<Tensor<B, 2>>,
    /// CST soft scores `ŷ^cst` (detached), `[batch, classes]`.
    pub cst_soft: Option<Tensor<B, 2>>,
    /// CST hard targets `ỹ^cst`, `[batch, classes]`.
    pub cst_targets: Option<Tensor<B, 2>>,
}

impl<B: Backend> Hst<B> {
    /// Logits, pair co-occurrence logits and semantic features.
    ///
    /// # Shapes
    /// - images: `[batch, 3, height, width]`
    /// - output.logits: `[batch, classes]`
    /// - output.cooccurrence: `[batch, pairs]`
    /// - output.semantic: `[batch, classes, dim]`
    pub fn forward(&self, images: Tensor<B, 4>) -> HstOutput<B> {
        let feature_map = self.trunk.forward(images); // [batch, channels, h, w]
        self.heads(feature_map)
    }

    /// The heads on the trunk's feature map: SARL, then the IST head on the semantic features (the
    /// reference's `HST.forward` after `featureMap = self.backbone(input)`).
    ///
    /// # Shapes
    /// - feature_map: `[batch, in_channels, height, width]`
    pub fn heads(&self, feature_map: Tensor<B, 4>) -> HstOutput<B> {
        let sarl = self.sarl.forward(feature_map);
        let cooccurrence = self
            .ist
            .as_ref()
            .map(|ist| ist.forward(sarl.semantic.clone())); // [batch, pairs]
        HstOutput {
            logits: sarl.logits,
            cooccurrence,
            semantic: sarl.semantic,
        }
    }

    /// Only the semantic features (for the prototype pass; skips the GGNN, classifier and IST head).
    ///
    /// # Shapes
    /// - images: `[batch, 3, height, width]`
    /// - output: `[batch, classes, dim]`
    pub fn semantic_features(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        self.sarl.semantic_features(self.trunk.forward(images))
    }

    /// The scheduled objective for one batch (see [`HstObjective::compute`]).
    ///
    /// # Errors
    /// [`TransferError::Shape`] if `partial` or the prototypes do not match the outputs.
    pub fn losses(
        &self,
        out: &HstOutput<B>,
        partial: impl Into<BatchLabels<B>>,
        prototypes: Option<&Prototypes<B>>,
        step: ScheduleStep,
        seed: u64,
    ) -> Result<HstLosses<B>, TransferError> {
        self.objective
            .compute(out, partial, prototypes, &self.thresholds, step, seed)
    }

    /// Number of categories.
    pub fn classes(&self) -> usize {
        self.sarl.classes()
    }

    /// Stop all gradients into the trunk (it is then a fixed feature extractor).
    pub fn with_frozen_trunk(mut self) -> Self {
        self.trunk = self.trunk.no_grad();
        self
    }

    /// Apply `f` to the trunk, e.g. the trunk's own partial freezing (the reference trains only `layer4`).
    pub fn map_trunk(mut self, f: impl FnOnce(Trunk<B>) -> Trunk<B>) -> Self {
        self.trunk = f(self.trunk);
        self
    }

    /// Stop all gradients into the SARL head.
    pub fn with_frozen_sarl(mut self) -> Self {
        self.sarl = self.sarl.no_grad();
        self
    }
}

impl<B: AutodiffBackend> Hst<B> {
    /// [`Hst::forward`] for a training step: the trunk's frozen stages (those below
    /// `frozen_stages`, whose parameters take no gradient and whose BatchNorm runs from the running
    /// statistics) run on the inner backend, without recording an autodiff graph, and the rest with
    /// autodiff. Same values and gradients as [`Hst::forward`].
    ///
    /// # Shapes
    /// - images: `[batch, 3, height, width]`
    pub fn forward_train(&self, images: Tensor<B, 4>) -> HstOutput<B> {
        let frozen = self.trunk.frozen_stages();
        let feature_map = if frozen == 0 {
            self.trunk.forward(images)
        } else {
            let inner = self.trunk.valid();
            let x = Tensor::from_inner(inner.forward_stages(images.inner(), 1..=frozen));
            if frozen >= 4 {
                x
            } else {
                self.trunk.forward_stages(x, frozen + 1..=4)
            }
        }; // [batch, channels, h, w]
        self.heads(feature_map)
    }
}

impl HstObjective {
    /// The HST objective for one batch, following the reference schedule (spec §6):
    ///
    /// - always: `BCE_p(s, y)`;
    /// - from epoch 0: `r·λ_ist·L_ist` (IST) and `r·0.05·L_inst` (CST), `r` ramping over epoch 0;
    /// - from `pseudo_label_epoch`: `BCE_p(s, ỹ^ist) + 0.1·L_dtl^ist` (IST),
    ///   `BCE_p(s, ỹ^cst) + 0.1·L_dtl^cst + 0.05·L_proto` (CST, when prototypes are given).
    ///
    /// Classes without prototypes get no CST pseudo label and their known labels are left out of
    /// `L_dtl^cst` (the reference would crash on them). Before `pseudo_label_epoch`, prototypes are
    /// ignored. If they are missing later, the CST terms that need them are skipped with a warning.
    /// `seed` drives the instance loss's hard-negative sampling.
    ///
    /// # Shapes
    /// - out: see [`HstOutput`]
    /// - partial: `[batch, classes]` in {−1, 0, 1}: a tensor, or [`BatchLabels`] with a host copy (then the
    ///   objective reads nothing back from the device)
    ///
    /// # Errors
    /// [`TransferError::Shape`] if `partial` or the prototypes do not match the outputs.
    pub fn compute<B: Backend>(
        &self,
        out: &HstOutput<B>,
        partial: impl Into<BatchLabels<B>>,
        prototypes: Option<&Prototypes<B>>,
        thresholds: &Thresholds<B>,
        step: ScheduleStep,
        seed: u64,
    ) -> Result<HstLosses<B>, TransferError> {
        let labels = partial.into();
        let [batch, classes] = out.logits.dims();
        if labels.dims() != [batch, classes] {
            return Err(TransferError::Shape {
                what: "HST losses: partial labels",
                expected: vec![batch, classes],
                got: labels.dims().to_vec(),
            });
        }
        let [_, _, dim] = out.semantic.dims();
        if let Some(p) = prototypes {
            if p.classes() != classes || p.dim() != dim {
                return Err(TransferError::Shape {
                    what: "HST losses: prototypes",
                    expected: vec![classes, p.k(), dim],
                    got: p.centers.dims().to_vec(),
                });
            }
        }
        let partial = labels.tensor().clone().detach();
        let w = &self.weights;
        let ablation = &self.ablation;
        let pseudo = self.schedule.pseudo_labels_active(step.epoch);
        let ramp = self.schedule.ramp(&step);
        let bce = self.partial_bce;
        let dtl = DtlLoss { bce };

        let partial_bce = bce.forward(out.logits.clone(), partial.clone());
        let mut total = partial_bce.clone();
        let mut losses = HstLosses {
            total: partial_bce.clone(),
            partial_bce,
            ist_bce: None,
            cst_bce: None,
            ist_asl: None,
            instance: None,
            prototype: None,
            dtl_ist: None,
            dtl_cst: None,
            ramp,
            ist_soft: None,
            ist_targets: None,
            cst_soft: None,
            cst_targets: None,
        };

        // IST.
        if let (true, Some(cooccurrence)) = (ablation.ist_enabled(), &out.cooccurrence) {
            let asl = self
                .cooccurrence_loss
                .forward(cooccurrence.clone(), cooccurrence_targets(partial.clone()));
            total = total + asl.clone() * (ramp * w.cooccurrence);
            losses.ist_asl = Some(asl);
            if pseudo {
                let scores = ist_scores(cooccurrence.clone(), partial.clone()); // [batch, classes]
                let soft = soft_scores(scores, thresholds.ist()); // [batch, classes]
                let targets = hard_pseudo_labels(partial.clone(), soft.clone());
                let ist_bce = bce.forward(out.logits.clone(), targets.clone());
                total = total + ist_bce.clone() * w.ist_bce;
                losses.ist_bce = Some(ist_bce);
                if ablation.dtl_enabled() {
                    let l = dtl.forward(soft.clone(), partial.clone());
                    total = total + l.clone() * w.dtl_ist;
                    losses.dtl_ist = Some(l);
                }
                losses.ist_soft = Some(soft.detach());
                losses.ist_targets = Some(targets);
            }
        }

        // CST.
        if ablation.cst_enabled() {
            let instance = self
                .instance_loss
                .forward(out.semantic.clone(), labels.clone(), seed);
            total = total + instance.clone() * (ramp * w.instance);
            losses.instance = Some(instance);
            if pseudo {
                match prototypes {
                    Some(prototypes) => {
                        let class_mask = prototypes.class_mask(); // [classes]
                        let similarity = prototype_similarity(
                            out.semantic.clone(),
                            prototypes,
                            self.similarity_eps,
                        ); // [batch, classes]
                        let soft = mask_classes(
                            soft_scores(similarity.clone(), thresholds.cst()),
                            class_mask.clone(),
                        ); // [batch, classes]
                        let targets = hard_pseudo_labels(partial.clone(), soft.clone());
                        let cst_bce = bce.forward(out.logits.clone(), targets.clone());
                        total = total + cst_bce.clone() * w.cst_bce;
                        losses.cst_bce = Some(cst_bce);
                        if ablation.dtl_enabled() {
                            let known = mask_classes(partial.clone(), class_mask);
                            let l = dtl.forward(soft.clone(), known);
                            total = total + l.clone() * w.dtl_cst;
                            losses.dtl_cst = Some(l);
                        }
                        let proto = self.prototype_loss.forward(similarity, partial.clone());
                        total = total + proto.clone() * w.prototype;
                        losses.prototype = Some(proto);
                        losses.cst_soft = Some(soft.detach());
                        losses.cst_targets = Some(targets);
                    }
                    None => tracing::warn!(
                        epoch = step.epoch,
                        "CST pseudo labels are due but no prototypes were given; skipping them"
                    ),
                }
            }
        }

        losses.total = total;
        Ok(losses)
    }
}
