//! The evaluation metrics against the reference implementation's outputs
//! (`shared/fixtures/hst-reference/hst-reference.safetensors`, made by the PyTorch/NumPy reference).
//!
//! Tolerance: 1e-9 absolute on every value. All values are fractions in [0, 1] (the fixture stores fractions,
//! not percentages), so this is also at most 1e-9 relative to 1.

use std::path::PathBuf;

use hst_train::metrics::{evaluate, MetricAccumulator, MultiLabelMetrics};
use safetensors::{Dtype, SafeTensors};

const TOL: f64 = 1e-9;

#[path = "../../../tests/support/shared.rs"]
mod shared;

/// The fixture file, or `None` after a counted skip note; a panic under CI.
fn fixture() -> Option<PathBuf> {
    shared::shared("fixtures/hst-reference/hst-reference.safetensors")
}

/// A float64 tensor of the fixture, with its shape.
fn f64_tensor(st: &SafeTensors, name: &str) -> (Vec<f64>, Vec<usize>) {
    let view = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("fixture key {name}: {e}"));
    assert_eq!(
        view.dtype(),
        Dtype::F64,
        "fixture key {name} should be float64"
    );
    let values = view
        .data()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (values, view.shape().to_vec())
}

struct Reference {
    scores: Vec<f64>,
    targets: Vec<f64>,
    classes: usize,
    map: f64,
    average_ap: f64,
    all: Vec<f64>,
    top3: Vec<f64>,
}

fn reference() -> Option<Reference> {
    let bytes = std::fs::read(fixture()?).expect("read the fixture");
    let st = SafeTensors::deserialize(&bytes).expect("parse the fixture");
    let (scores, shape) = f64_tensor(&st, "metric_scores");
    assert_eq!(shape, vec![40, 6]);
    let (targets, tshape) = f64_tensor(&st, "metric_targets");
    assert_eq!(tshape, shape);
    Some(Reference {
        scores,
        targets,
        classes: shape[1],
        map: f64_tensor(&st, "mAP_voc2012").0[0],
        average_ap: f64_tensor(&st, "averageAP_noninterpolated").0[0],
        all: f64_tensor(&st, "OP_OR_OF1_CP_CR_CF1").0,
        top3: f64_tensor(&st, "top3_OP_OR_OF1_CP_CR_CF1").0,
    })
}

/// Compares every reported value with the reference; returns the largest absolute error.
fn compare(m: &MultiLabelMetrics, r: &Reference) -> f64 {
    let ours = [
        ("mAP", m.map, r.map),
        ("averageAP", m.average_ap, r.average_ap),
        ("OP", m.op, r.all[0]),
        ("OR", m.or, r.all[1]),
        ("OF1", m.of1, r.all[2]),
        ("CP", m.cp, r.all[3]),
        ("CR", m.cr, r.all[4]),
        ("CF1", m.cf1, r.all[5]),
        ("top3 OP", m.top3.op, r.top3[0]),
        ("top3 OR", m.top3.or, r.top3[1]),
        ("top3 OF1", m.top3.of1, r.top3[2]),
        ("top3 CP", m.top3.cp, r.top3[3]),
        ("top3 CR", m.top3.cr, r.top3[4]),
        ("top3 CF1", m.top3.cf1, r.top3[5]),
    ];
    let mut max_err = 0.0f64;
    for (name, got, want) in ours {
        let err = (got - want).abs();
        assert!(
            err <= TOL,
            "{name}: got {got}, reference {want}, |error| {err:e} > {TOL:e} (absolute)"
        );
        max_err = max_err.max(err);
    }
    max_err
}

#[test]
fn metrics_match_the_reference() {
    let Some(r) = reference() else { return };
    let m = evaluate(&r.scores, &r.targets, r.classes).unwrap();
    let max_err = compare(&m, &r);
    eprintln!("max |error| vs reference metrics: {max_err:e} (tolerance {TOL:e} absolute)");
    // Sanity on the fixture itself: fractions, every class has a positive, so nothing is skipped.
    assert!(
        m.map > 0.0 && m.map < 1.0,
        "mAP {} should be a fraction",
        m.map
    );
    assert!(m.classes_without_positives.is_empty());
    let mean_ap = m.per_class_ap.iter().sum::<f64>() / m.per_class_ap.len() as f64;
    assert!((mean_ap - m.map).abs() < 1e-15);
}

#[test]
fn accumulated_batches_match_the_reference() {
    let Some(r) = reference() else { return };
    let mut acc = MetricAccumulator::new(r.classes);
    // Uneven batches of 7 images, the last one partial.
    for (s, t) in r
        .scores
        .chunks(7 * r.classes)
        .zip(r.targets.chunks(7 * r.classes))
    {
        acc.push(s, t).unwrap();
    }
    assert_eq!(acc.len(), 40);
    compare(&acc.finish(), &r);
}

#[test]
fn f32_scores_and_i8_targets_give_the_same_metrics() {
    let Some(r) = reference() else { return };
    // The reference meter stores scores as float32; the fixture scores are float32 values.
    let scores: Vec<f32> = r.scores.iter().map(|&s| s as f32).collect();
    assert!(scores
        .iter()
        .zip(&r.scores)
        .all(|(&a, &b)| f64::from(a) == b));
    let targets: Vec<i8> = r.targets.iter().map(|&t| t as i8).collect();
    let m = evaluate(&scores, &targets, r.classes).unwrap();
    compare(&m, &r);
}

#[test]
fn fixture_has_no_tied_scores() {
    // The tie rule (stable order) cannot be checked against the fixture when it has no ties; this records that
    // the match above does not depend on it.
    let Some(r) = reference() else { return };
    for c in 0..r.classes {
        let mut col: Vec<f64> = r
            .scores
            .iter()
            .skip(c)
            .step_by(r.classes)
            .copied()
            .collect();
        col.sort_by(f64::total_cmp);
        assert!(
            col.windows(2).all(|w| w[0] != w[1]),
            "class {c} has tied scores"
        );
    }
}
