//! The tiny configuration of the CLI tests, shared by the test binaries that include this file with
//! `#[path]`.

/// Overrides that shrink the embedded preset to a run of a fraction of a second (as the tiny configuration of
/// crates/hst-train/tests/trainer.rs): 48 train / 20 test images at 32 px, widths 4–16, pseudo labels and
/// prototypes from epoch 1.
pub const TINY: &[&str] = &[
    "epochs=2",
    "model.trunk.base_width=4",
    "model.sarl.feature_dim=16",
    "model.sarl.attention_dim=8",
    "model.sarl.output_dim=16",
    "model.ist.hidden_dim=8",
    "model.ist.pair_dim=16",
    "model.cst.prototypes=2",
    "model.cst.kmeans.k=2",
    "model.schedule.pseudo_label_epoch=1",
    "model.schedule.prototype_interval=1",
    "data.source.train_images=48",
    "data.source.test_images=20",
    "data.transform.image_size=32",
    "data.transform.scale_size=36",
    "data.transform.crop_sizes=[36,32]",
    "data.guard_adjacency_nan=true",
    "batch_size=16",
    "eval_batch_size=8",
    "optimizer.lr=1e-2",
];
