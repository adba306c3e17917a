//! The cross-backend correctness check (`hst bench --check`): the same seeded model and input on two backends
//! (the weights travel as a record in bytes); logits, every loss term, every parameter gradient and the
//! inference logits compared.

use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use hst_data::rng::SeededRng;
use hst_transfer::Hst;

use crate::backend::{run_on, BackendJob, BackendName};

use super::inputs::{build_model, partial_labels, BenchConstants};
use super::report::{append_line, MachineInfo};
use super::spec::{BenchArgs, BenchSpec};
use super::{BURN_VERSION, DTYPE};

pub(super) fn run_checks(
    args: &BenchArgs,
    backend: BackendName,
    specs: &[BenchSpec],
) -> Result<()> {
    let tolerance = CheckTolerance {
        outputs: args.tolerance,
        gradients: args.grad_tolerance,
    };
    let mut failed = Vec::new();
    for spec in specs {
        let mut spec = spec.clone();
        spec.batch = args.check_batch;
        eprintln!(
            "check {}: {} vs {} ({}, {} px, batch {}, {} classes)",
            spec.name,
            backend,
            args.check_against,
            spec.trunk_name(),
            spec.image_size,
            spec.batch,
            spec.classes
        );
        let reference = run_on(args.check_against, CheckReferenceJob { spec: &spec })?
            .with_context(|| {
                format!("check `{}`: reference on {}", spec.name, args.check_against)
            })?;
        let items = run_on(
            backend,
            CheckCompareJob {
                spec: &spec,
                reference: &reference,
                tolerance,
            },
        )?
        .with_context(|| format!("check `{}` on {backend}", spec.name))?;
        let report = CheckReport {
            kind: "check",
            config: spec.name.clone(),
            backend,
            reference: args.check_against,
            burn: BURN_VERSION,
            dtype: DTYPE,
            machine: MachineInfo::detect(backend, None, args.gpu_name.clone()),
            image_size: spec.image_size,
            batch: spec.batch,
            classes: spec.classes,
            tolerance,
            passed: items.iter().all(|i| i.passed),
            items,
        };
        println!("{}", report.markdown());
        if let Some(path) = &args.json {
            append_line(path, &serde_json::to_string(&report)?)?;
        }
        if !report.passed {
            failed.push(spec.name.clone());
        }
    }
    if !failed.is_empty() {
        bail!(
            "{backend} disagrees with {} beyond the tolerance ({} for outputs, {} for gradients) on: {}",
            args.check_against,
            args.tolerance,
            args.grad_tolerance,
            failed.join(", ")
        );
    }
    Ok(())
}

type RecordBytes = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// Inputs, weights and outputs of the reference side of a check.
#[derive(Debug, Clone)]
pub struct CheckData {
    /// The model's record (weights and BatchNorm statistics), as bytes.
    pub record: Vec<u8>,
    /// Images `[batch, 3, size, size]`.
    pub images: Vec<f32>,
    /// Partial labels `[batch, classes]`.
    pub partial: Vec<f32>,
    /// Named outputs.
    pub outputs: Vec<(String, Vec<f32>)>,
}

/// Accepted relative differences of a check.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct CheckTolerance {
    /// Outputs and loss terms: max |a − b| / max |reference|.
    pub outputs: f64,
    /// Gradient groups: ‖a − b‖ / ‖reference‖.
    pub gradients: f64,
}

/// One compared output.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckItem {
    /// Output name (`logits`, `loss.total`, `grad.sarl`, `logits.eval`, …).
    pub name: String,
    /// Number of values.
    pub len: usize,
    /// The difference the tolerance applies to: `l2_relative_difference` for gradients,
    /// `max_relative_difference` for everything else.
    pub relative_difference: f64,
    /// `"l2"` or `"max"`: which difference is `relative_difference`.
    pub metric: &'static str,
    /// The largest accepted `relative_difference`.
    pub tolerance: f64,
    /// `relative_difference <= tolerance`.
    pub passed: bool,
    /// max |a − b| / max |reference| (the denominator at least 1e-6).
    pub max_relative_difference: f64,
    /// ‖a − b‖ / ‖reference‖ (Euclidean norms over the whole output or gradient group).
    pub l2_relative_difference: f64,
    /// max |a − b|.
    pub max_abs_difference: f64,
    /// max |reference|.
    pub reference_max_abs: f64,
    /// For a merged gradient group: the parameter with the largest |a − b|.
    pub worst: Option<String>,
    #[serde(skip)]
    diff_sq: f64,
    #[serde(skip)]
    ref_sq: f64,
}

/// The result of a check (one JSON line with `--json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    /// Always `"check"`.
    pub kind: &'static str,
    /// Configuration name.
    pub config: String,
    /// The checked backend.
    pub backend: BackendName,
    /// The reference backend.
    pub reference: BackendName,
    /// Burn version.
    pub burn: &'static str,
    /// Element type.
    pub dtype: &'static str,
    /// Where it ran.
    pub machine: MachineInfo,
    /// Input side.
    pub image_size: usize,
    /// Batch size.
    pub batch: usize,
    /// Classes.
    pub classes: usize,
    /// Accepted relative differences.
    pub tolerance: CheckTolerance,
    /// Whether every item is within the tolerance.
    pub passed: bool,
    /// Per output.
    pub items: Vec<CheckItem>,
}

impl CheckReport {
    /// A Markdown table of the items.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "check {} on {} vs {}: {}\n| output | values | max abs diff | max rel diff | L2 rel diff | judged by | ok | worst parameter |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n",
            self.config,
            self.backend,
            self.reference,
            if self.passed { "PASS" } else { "FAIL" }
        );
        for i in &self.items {
            let _ = writeln!(
                s,
                "| {} | {} | {:.3e} | {:.3e} | {:.3e} | {} | {} | {} |",
                i.name,
                i.len,
                i.max_abs_difference,
                i.max_relative_difference,
                i.l2_relative_difference,
                i.metric,
                if i.passed { "yes" } else { "NO" },
                i.worst.as_deref().unwrap_or("")
            );
        }
        s
    }
}

/// Compare `got` with `reference` output by output; outputs named `group:part` are merged per group (the worst
/// part named).
///
/// Outputs are judged by the largest difference relative to the largest reference value, against
/// `tolerance.outputs`. Gradients (`grad.*`) are judged by the relative Euclidean difference against the looser
/// `tolerance.gradients`: a ReLU or ReLU6 whose input is within rounding of its kink switches on one backend and
/// not on the other, which changes gradient entries by whole terms; with millions of activations this happens in
/// every step. Measured on flex alone (voc-small, 224 px, batch 2), a 1e-6 relative perturbation of the input
/// moves the EfficientNet trunk's gradients by 4.9e-3 and the IST head's by 1.6e-3 (L2, relative) while the
/// logits move by 5e-5. A wrong gradient is typically wrong by O(1).
///
/// # Errors
/// If the names or lengths differ.
pub fn compare_outputs(
    got: &[(String, Vec<f32>)],
    reference: &[(String, Vec<f32>)],
    tolerance: CheckTolerance,
) -> Result<Vec<CheckItem>> {
    if got.len() != reference.len() {
        bail!(
            "{} outputs to compare with {} reference outputs",
            got.len(),
            reference.len()
        );
    }
    let mut items: Vec<CheckItem> = Vec::new();
    for ((name, a), (ref_name, b)) in got.iter().zip(reference) {
        if name != ref_name || a.len() != b.len() {
            bail!(
                "output `{name}` ({} values) does not match reference output `{ref_name}` ({} values)",
                a.len(),
                b.len()
            );
        }
        let (mut max_diff, mut max_ref, mut diff_sq, mut ref_sq) = (0f64, 0f64, 0f64, 0f64);
        for (x, y) in a.iter().zip(b) {
            let (x, y) = (*x as f64, *y as f64);
            let d = if (x - y).is_nan() {
                f64::INFINITY
            } else {
                (x - y).abs()
            };
            max_diff = max_diff.max(d);
            max_ref = max_ref.max(y.abs());
            diff_sq += d * d;
            ref_sq += y * y;
        }
        let (group, parameter) = match name.split_once(':') {
            Some((g, p)) => (g, Some(p)),
            None => (name.as_str(), None),
        };
        match (parameter, items.last_mut()) {
            // `group:parameter` outputs are merged into one item per group.
            (Some(parameter), Some(last)) if last.name == group => {
                if max_diff > last.max_abs_difference {
                    last.max_abs_difference = max_diff;
                    last.worst = Some(parameter.to_string());
                }
                last.reference_max_abs = last.reference_max_abs.max(max_ref);
                last.diff_sq += diff_sq;
                last.ref_sq += ref_sq;
                last.len += a.len();
            }
            _ => items.push(CheckItem {
                name: group.to_string(),
                len: a.len(),
                relative_difference: 0.0,
                metric: if group.starts_with("grad.") {
                    "l2"
                } else {
                    "max"
                },
                tolerance: if group.starts_with("grad.") {
                    tolerance.gradients
                } else {
                    tolerance.outputs
                },
                passed: false,
                max_relative_difference: 0.0,
                l2_relative_difference: 0.0,
                max_abs_difference: max_diff,
                reference_max_abs: max_ref,
                worst: parameter.map(str::to_string),
                diff_sq,
                ref_sq,
            }),
        }
    }
    for item in &mut items {
        item.max_relative_difference = item.max_abs_difference / item.reference_max_abs.max(1e-6);
        item.l2_relative_difference = item.diff_sq.sqrt() / item.ref_sq.sqrt().max(1e-6);
        item.relative_difference = if item.metric == "l2" {
            item.l2_relative_difference
        } else {
            item.max_relative_difference
        };
        item.passed = item.relative_difference <= item.tolerance;
    }
    Ok(items)
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

/// Collects the gradient of every trainable float parameter, named `grad.<top-level field>:<path>`.
struct GradientCollector<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    path: Vec<String>,
    groups: Vec<(String, Vec<f32>)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradientCollector<'_, B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(grad) = param.val().grad(self.grads) else {
            return; // frozen
        };
        // `grad.<top-level module>:<full path>`; `compare_outputs` merges each module's parameters.
        let top = self.path.first().map(String::as_str).unwrap_or("root");
        let name = format!("grad.{top}:{}", self.path.join("."));
        self.groups.push((name, host(grad)));
    }
}

/// Run the check computation on `model`: a training-mode forward and every loss term, the gradients of every
/// trainable parameter (grouped by top-level module), then the inference logits (`model.valid()`, BatchNorm
/// running statistics after the training forward).
///
/// The gradients are compared rather than the weights after an optimiser step: Adam's first step moves each
/// weight by ±lr whatever the gradient's size, so a gradient near zero that differs in sign by rounding moves
/// its weight by 2·lr, a difference that says nothing about the backend.
fn check_outputs<B: AutodiffBackend>(
    spec: &BenchSpec,
    model: Hst<B>,
    constants: &BenchConstants,
    images: &[f32],
    partial: &[f32],
    device: &B::Device,
) -> Result<Vec<(String, Vec<f32>)>> {
    let shape = [spec.batch, 3, spec.image_size, spec.image_size];
    let images = Tensor::<B, 4>::from_data(TensorData::new(images.to_vec(), shape), device);
    let partial = Tensor::<B, 2>::from_data(
        TensorData::new(partial.to_vec(), [spec.batch, spec.classes]),
        device,
    );
    let prototypes = constants.prototypes::<B>(spec.classes, device);
    let mut outputs = Vec::new();
    let out = model.forward(images.clone());
    let losses = model
        .losses(
            &out,
            partial,
            Some(&prototypes),
            spec.schedule_step(),
            spec.seed,
        )
        .map_err(|e| anyhow::anyhow!("losses: {e}"))?;
    outputs.push(("logits".to_string(), host(out.logits.clone())));
    if let Some(c) = &out.cooccurrence {
        outputs.push(("cooccurrence".to_string(), host(c.clone())));
    }
    outputs.push(("semantic".to_string(), host(out.semantic.clone())));
    let terms = [
        ("loss.total", Some(&losses.total)),
        ("loss.partial_bce", Some(&losses.partial_bce)),
        ("loss.ist_bce", losses.ist_bce.as_ref()),
        ("loss.cst_bce", losses.cst_bce.as_ref()),
        ("loss.ist_asl", losses.ist_asl.as_ref()),
        ("loss.instance", losses.instance.as_ref()),
        ("loss.prototype", losses.prototype.as_ref()),
        ("loss.dtl_ist", losses.dtl_ist.as_ref()),
        ("loss.dtl_cst", losses.dtl_cst.as_ref()),
    ];
    for (name, t) in terms {
        if let Some(t) = t {
            outputs.push((name.to_string(), host(t.clone())));
        }
    }
    let grads = losses.total.backward();
    let mut collector = GradientCollector::<B> {
        grads: &grads,
        path: Vec::new(),
        groups: Vec::new(),
    };
    model.visit(&mut collector);
    outputs.extend(collector.groups);
    outputs.push((
        "logits.eval".to_string(),
        host(model.valid().forward(images.inner()).logits),
    ));
    Ok(outputs)
}

/// Load a model record saved with [`NamedMpkBytesRecorder`] into `model`, keeping the trunk's freeze.
///
/// # Errors
/// A record that does not fit the model.
pub fn load_record_bytes<B: Backend>(
    model: Hst<B>,
    bytes: &[u8],
    device: &B::Device,
) -> Result<Hst<B>> {
    let frozen = model.trunk.frozen_stages();
    let record: <Hst<B> as Module<B>>::Record = RecordBytes::default()
        .load(bytes.to_vec(), device)
        .map_err(|e| anyhow::anyhow!("the record does not fit the model: {e:?}"))?;
    // A loaded parameter keeps the lazily initialised one's require_grad flag: re-apply the trunk's freeze.
    Ok(model.load_record(record).map_trunk(|t| t.freeze(frozen)))
}

/// The reference side of a check: build the seeded model on `B`, record it, and compute the outputs.
///
/// # Errors
/// A loss error or a record that cannot be written.
pub fn check_reference<B: AutodiffBackend>(
    spec: &BenchSpec,
    device: &B::Device,
) -> Result<CheckData> {
    let constants = BenchConstants::of(spec);
    let model = build_model::<B>(spec, &constants, device);
    let record = RecordBytes::default()
        .record(model.clone().into_record(), ())
        .map_err(|e| anyhow::anyhow!("recording the model: {e:?}"))?;
    // Parameters are initialised lazily, and a clone initialises on its own: recording `model.clone()`
    // draws other values than `model` would. Run the reference from the recorded weights, as the other side.
    let model = load_record_bytes(model, &record, device)?;
    let mut rng = SeededRng::from_parts(&[spec.seed, 4]);
    let images = rng.normals(spec.batch * 3 * spec.image_size * spec.image_size);
    let partial = partial_labels(&mut rng, spec.batch, spec.classes);
    let outputs = check_outputs(spec, model, &constants, &images, &partial, device)?;
    Ok(CheckData {
        record,
        images,
        partial,
        outputs,
    })
}

/// The compared side of a check: the same model (weights from `reference.record`) and inputs on `B`.
///
/// # Errors
/// A record that does not fit, a loss error, outputs that do not match in name or size.
pub fn check_compare<B: AutodiffBackend>(
    spec: &BenchSpec,
    reference: &CheckData,
    tolerance: CheckTolerance,
    device: &B::Device,
) -> Result<Vec<CheckItem>> {
    let outputs = check_outputs_on::<B>(spec, reference, device)?;
    compare_outputs(&outputs, &reference.outputs, tolerance)
}

/// The outputs of the check computation on `B` with the reference's weights and inputs (one entry per
/// parameter gradient, named `grad.<module>:<path>`), for a closer look than [`check_compare`]'s groups.
///
/// # Errors
/// A record that does not fit, a loss error.
pub fn check_outputs_on<B: AutodiffBackend>(
    spec: &BenchSpec,
    reference: &CheckData,
    device: &B::Device,
) -> Result<Vec<(String, Vec<f32>)>> {
    let constants = BenchConstants::of(spec);
    let model = build_model::<B>(spec, &constants, device);
    let model = load_record_bytes(model, &reference.record, device)?;
    check_outputs(
        spec,
        model,
        &constants,
        &reference.images,
        &reference.partial,
        device,
    )
}

struct CheckReferenceJob<'a> {
    spec: &'a BenchSpec,
}

impl BackendJob for CheckReferenceJob<'_> {
    type Output = Result<CheckData>;

    fn run<B: AutodiffBackend>(self, _: BackendName, device: B::Device) -> Self::Output {
        check_reference::<B>(self.spec, &device)
    }
}

struct CheckCompareJob<'a> {
    spec: &'a BenchSpec,
    reference: &'a CheckData,
    tolerance: CheckTolerance,
}

impl BackendJob for CheckCompareJob<'_> {
    type Output = Result<Vec<CheckItem>>;

    fn run<B: AutodiffBackend>(self, _: BackendName, device: B::Device) -> Self::Output {
        check_compare::<B>(self.spec, self.reference, self.tolerance, &device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::tiny_spec as tiny;

    #[test]
    fn check_agrees_with_itself_and_detects_a_difference() {
        type AB = burn::backend::Autodiff<burn::backend::Flex>;
        let spec = tiny();
        let device = Default::default();
        let reference = check_reference::<AB>(&spec, &device).unwrap();
        let tolerance = CheckTolerance {
            outputs: 1e-6,
            gradients: 1e-6,
        };
        let items = check_compare::<AB>(&spec, &reference, tolerance, &device).unwrap();
        let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
        for term in [
            "loss.ist_bce",
            "loss.cst_bce",
            "loss.instance",
            "loss.prototype",
            "loss.dtl_cst",
            "grad.trunk",
            "grad.sarl",
            "grad.ist",
            "logits.eval",
        ] {
            assert!(names.contains(&term), "{term} missing from {names:?}");
        }
        assert!(items.iter().all(|i| i.passed), "{items:?}");
        // A perturbed reference must be caught.
        let mut bad = reference.outputs.clone();
        bad[0].1[0] += 1.0;
        let got = reference.outputs.clone();
        let items = compare_outputs(&got, &bad, tolerance).unwrap();
        assert!(items[0].relative_difference > 1e-3 && !items[0].passed);
    }

    #[test]
    fn gradient_groups_are_merged_and_judged_by_l2() {
        let out = |v: [f32; 2]| -> Vec<(String, Vec<f32>)> {
            vec![
                ("logits".into(), vec![1.0, 2.0]),
                ("grad.ist:ist.a".into(), vec![v[0], 0.0]),
                ("grad.ist:ist.b".into(), vec![v[1], 10.0]),
            ]
        };
        let tolerance = CheckTolerance {
            outputs: 1e-3,
            gradients: 5e-2,
        };
        // grad.ist: one entry off by 0.2: max-relative 2e-2, L2-relative 0.2 / sqrt(101) ≈ 2e-2.
        let items = compare_outputs(&out([1.0, 0.2]), &out([1.0, 0.0]), tolerance).unwrap();
        assert_eq!(items.len(), 2);
        let g = &items[1];
        assert_eq!((g.name.as_str(), g.len, g.metric), ("grad.ist", 4, "l2"));
        assert_eq!(g.worst.as_deref(), Some("ist.b"));
        assert!((g.l2_relative_difference - 0.2 / 101f64.sqrt()).abs() < 1e-6);
        assert!(g.passed && items[0].passed);
        // An O(1) gradient error fails.
        let items = compare_outputs(&out([-1.0, 0.0]), &out([1.0, 0.0]), tolerance).unwrap();
        assert!(!items[1].passed);
    }
}
