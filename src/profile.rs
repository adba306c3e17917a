//! `hst bench --profile`: forward and backward time of each module of one training step, so the next
//! bottleneck is visible.
//!
//! Each module runs alone on the detached output of the module before it (the input requires a gradient
//! where it does in training, so its input gradient is part of the backward time), `steps` times after
//! one untimed run; every measurement ends with a device sync. Backward time is the time of
//! forward + `(output · probe).sum().backward()` minus the forward time, with a fixed random `probe` of the
//! output's shape, so the loss-side cost of a module is not counted twice. The rows do not add up to
//! `hst bench`'s step exactly (each module's graph is built and freed on its own), but they rank the
//! modules.

use std::time::Instant;

use anyhow::Result;
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use hst_transfer::HstOutput;

use crate::backend::{BackendJob, BackendName};
use crate::bench::{adam, bench_inputs, build_model, sync, BenchConstants, BenchSpec};

/// The time of one module of a training step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModuleTime {
    /// The module (or loss term, or optimizer).
    pub module: String,
    /// Forward seconds per step.
    pub forward_seconds: f64,
    /// Backward seconds per step (`None`: nothing to differentiate).
    pub backward_seconds: Option<f64>,
}

/// The per-module profile of one configuration on one backend.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProfileReport {
    /// Configuration name.
    pub config: String,
    /// Backend name.
    pub backend: BackendName,
    /// Timed repetitions per row.
    pub steps: usize,
    /// The rows, in the order a training step runs them.
    pub rows: Vec<ModuleTime>,
}

impl ProfileReport {
    /// A Markdown table: module, forward s, backward s, share of the summed time.
    pub fn markdown(&self) -> String {
        let total: f64 = self
            .rows
            .iter()
            .filter(|r| !r.module.contains("(autodiff backend)"))
            .filter(|r| !r.module.starts_with("loss term"))
            .map(|r| r.forward_seconds + r.backward_seconds.unwrap_or(0.0))
            .sum();
        let mut out = format!(
            "Per-module profile: `{}` on {} ({} timed runs per row)\n\n\
             | module | forward s | backward s | share |\n| --- | --- | --- | --- |\n",
            self.config, self.backend, self.steps
        );
        for r in &self.rows {
            let both = r.forward_seconds + r.backward_seconds.unwrap_or(0.0);
            let share =
                if r.module.contains("(autodiff backend)") || r.module.starts_with("loss term") {
                    "—".to_string()
                } else {
                    format!("{:.1}%", 100.0 * both / total.max(1e-12))
                };
            out.push_str(&format!(
                "| {} | {:.4} | {} | {} |\n",
                r.module,
                r.forward_seconds,
                r.backward_seconds
                    .map(|b| format!("{b:.4}"))
                    .unwrap_or_else(|| "—".into()),
                share
            ));
        }
        out.push_str(&format!(
            "| sum (rows with a share) | {total:.4} | | 100% |\n"
        ));
        out
    }
}

/// Profile one [`BenchSpec`] (see the [module docs](self)).
pub struct ProfileJob<'a> {
    /// What to profile.
    pub spec: &'a BenchSpec,
}

impl BackendJob for ProfileJob<'_> {
    type Output = Result<ProfileReport>;

    fn run<B: AutodiffBackend>(self, backend: BackendName, device: B::Device) -> Self::Output {
        profile_model::<B>(self.spec, backend, &device)
    }
}

/// Mean seconds of `f` over `steps` runs after one untimed run, each closed by a device sync.
fn seconds<B: Backend>(steps: usize, device: &B::Device, mut f: impl FnMut()) -> Result<f64> {
    f();
    sync::<B>(device)?;
    let start = Instant::now();
    for _ in 0..steps {
        f();
        sync::<B>(device)?;
    }
    Ok(start.elapsed().as_secs_f64() / steps.max(1) as f64)
}

/// A fixed random probe of `t`'s shape, turning a module output into a scalar objective.
fn probe<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Tensor<B, D> {
    Tensor::random(t.dims(), Distribution::Normal(0.0, 1.0), &t.device())
}

/// Forward and backward seconds of `forward`, whose output is turned into `(output · probe).sum()`.
fn module_time<B: AutodiffBackend, const D: usize>(
    name: &str,
    steps: usize,
    device: &B::Device,
    forward: impl Fn() -> Tensor<B, D>,
) -> Result<ModuleTime> {
    let probe = probe(&forward().detach());
    let fwd = seconds::<B>(steps, device, || {
        let _ = forward();
    })?;
    let both = seconds::<B>(steps, device, || {
        let _ = (forward() * probe.clone()).sum().backward();
    })?;
    Ok(ModuleTime {
        module: name.to_string(),
        forward_seconds: fwd,
        backward_seconds: Some((both - fwd).max(0.0)),
    })
}

fn profile_model<B: AutodiffBackend>(
    spec: &BenchSpec,
    backend: BackendName,
    device: &B::Device,
) -> Result<ProfileReport> {
    let steps = spec.steps.max(1);
    let constants = BenchConstants::of(spec);
    let model = build_model::<B>(spec, &constants, device);
    let (images, partial, prototypes) = bench_inputs::<B>(spec, &constants, device);
    let step = spec.schedule_step();
    let mut rows = Vec::new();

    // Trunk: the frozen stages (no gradient) on the autodiff backend and on the inner one, as trained.
    let frozen = model.trunk.frozen_stages();
    let trunk_out = if frozen > 0 {
        let stages = format!("stages 1–{frozen}");
        let fwd = seconds::<B>(steps, device, || {
            let _ = model.trunk.forward_stages(images.clone(), 1..=frozen);
        })?;
        rows.push(ModuleTime {
            module: format!("trunk, frozen {stages} (autodiff backend)"),
            forward_seconds: fwd,
            backward_seconds: None,
        });
        let inner = model.trunk.valid();
        let inner_images = images.clone().inner();
        let fwd = seconds::<B::InnerBackend>(steps, device, || {
            let _ = inner.forward_stages(inner_images.clone(), 1..=frozen);
        })?;
        rows.push(ModuleTime {
            module: format!("trunk, frozen {stages} (inner backend, as trained)"),
            forward_seconds: fwd,
            backward_seconds: None,
        });
        let x = Tensor::<B, 4>::from_inner(inner.forward_stages(inner_images, 1..=frozen));
        if frozen < 4 {
            rows.push(module_time::<B, 4>(
                &format!("trunk, trainable stages {}–4", frozen + 1),
                steps,
                device,
                || model.trunk.forward_stages(x.clone(), frozen + 1..=4),
            )?);
            model.trunk.forward_stages(x, frozen + 1..=4)
        } else {
            x
        }
    } else {
        rows.push(module_time::<B, 4>(
            "trunk (all stages trainable)",
            steps,
            device,
            || model.trunk.forward(images.clone()),
        )?);
        model.trunk.forward(images.clone())
    };

    // SARL, module by module, each on the detached output of the one before.
    let sarl = &model.sarl;
    let feature_map = trunk_out.detach().require_grad();
    rows.push(module_time::<B, 4>(
        "SARL: pool + 1×1 conv + BatchNorm",
        steps,
        device,
        || sarl.reduce(feature_map.clone()),
    )?);
    let reduced = sarl.reduce(feature_map).detach().require_grad();
    rows.push(module_time::<B, 3>(
        "SARL: semantic decoupling",
        steps,
        device,
        || {
            sarl.decoupling
                .forward(reduced.clone(), sarl.word_vectors.clone())
        },
    )?);
    let semantic = sarl
        .decoupling
        .forward(reduced, sarl.word_vectors.clone())
        .detach()
        .require_grad();
    rows.push(module_time::<B, 3>("SARL: GGNN", steps, device, || {
        sarl.ggnn.forward(semantic.clone(), sarl.adjacency.clone())
    })?);
    let state = sarl
        .ggnn
        .forward(semantic.clone(), sarl.adjacency.clone())
        .detach()
        .require_grad();
    rows.push(module_time::<B, 2>(
        "SARL: classifier",
        steps,
        device,
        || sarl.classifier.forward(state.clone(), semantic.clone()),
    )?);
    let logits = sarl
        .classifier
        .forward(state, semantic.clone())
        .detach()
        .require_grad();
    let cooccurrence = match &model.ist {
        Some(ist) => {
            rows.push(module_time::<B, 2>("IST head", steps, device, || {
                ist.forward(semantic.clone())
            })?);
            Some(ist.forward(semantic.clone()).detach().require_grad())
        }
        None => None,
    };

    // Losses on the detached outputs: all terms together, then each term's backward alone.
    let out = HstOutput {
        logits,
        cooccurrence,
        semantic,
    };
    let losses = || {
        model
            .losses(&out, partial.clone(), Some(&prototypes), step, spec.seed)
            .map_err(|e| anyhow::anyhow!("losses: {e}"))
    };
    let fwd = seconds::<B>(steps, device, || {
        let _ = losses();
    })?;
    let both = seconds::<B>(steps, device, || {
        if let Ok(l) = losses() {
            let _ = l.total.backward();
        }
    })?;
    rows.push(ModuleTime {
        module: "losses, all terms".into(),
        forward_seconds: fwd,
        backward_seconds: Some((both - fwd).max(0.0)),
    });
    type Term<B> = fn(&hst_transfer::HstLosses<B>) -> Option<Tensor<B, 1>>;
    let terms: [(&str, Term<B>); 8] = [
        ("partial BCE", |l| Some(l.partial_bce.clone())),
        ("IST BCE", |l| l.ist_bce.clone()),
        ("IST ASL (co-occurrence)", |l| l.ist_asl.clone()),
        ("DTL τ_ist", |l| l.dtl_ist.clone()),
        ("CST BCE", |l| l.cst_bce.clone()),
        ("CST instance", |l| l.instance.clone()),
        ("CST prototype", |l| l.prototype.clone()),
        ("DTL τ_cst", |l| l.dtl_cst.clone()),
    ];
    for (name, term) in terms {
        if term(&losses()?).is_none() {
            continue;
        }
        let both = seconds::<B>(steps, device, || {
            if let Some(t) = losses().ok().as_ref().and_then(term) {
                let _ = t.backward();
            }
        })?;
        rows.push(ModuleTime {
            module: format!("loss term {name} (backward incl. all terms' forward)"),
            forward_seconds: fwd,
            backward_seconds: Some((both - fwd).max(0.0)),
        });
    }

    // The optimizer: one Adam step on the gradients of a whole training step.
    let mut optim = adam::<B>(&spec.config);
    let lr = spec.config.optimizer.lr;
    let mut model = model;
    let mut optim_seconds = 0.0;
    for i in 0..=steps {
        let out = model.forward_train(images.clone());
        let total = model
            .losses(&out, partial.clone(), Some(&prototypes), step, spec.seed)
            .map_err(|e| anyhow::anyhow!("losses: {e}"))?
            .total;
        let grads = GradientsParams::from_grads(total.backward(), &model);
        sync::<B>(device)?;
        let start = Instant::now();
        model = optim.step(lr, model, grads);
        sync::<B>(device)?;
        if i > 0 {
            optim_seconds += start.elapsed().as_secs_f64();
        }
    }
    rows.push(ModuleTime {
        module: "optimizer (Adam step)".into(),
        forward_seconds: optim_seconds / steps as f64,
        backward_seconds: None,
    });
    Ok(ProfileReport {
        config: spec.name.clone(),
        backend,
        steps,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::BenchPreset;

    /// A tiny profile with frozen stages has every row of a training step, in order, with finite times,
    /// a backward time wherever something is differentiated, and a table with one line per row.
    #[test]
    fn a_tiny_profile_has_every_module() {
        type AB = burn::backend::Autodiff<burn::backend::Flex>;
        let mut spec = BenchPreset::Default.spec().with_image_size(32);
        spec.batch = 2;
        spec.classes = 4;
        spec.steps = 1;
        spec.config.model.trunk.frozen_stages = 2;
        let report = profile_model::<AB>(&spec, BackendName::Flex, &Default::default()).unwrap();
        let names: Vec<&str> = report.rows.iter().map(|r| r.module.as_str()).collect();
        for expected in [
            "trunk, frozen stages 1–2 (autodiff backend)",
            "trunk, frozen stages 1–2 (inner backend, as trained)",
            "trunk, trainable stages 3–4",
            "SARL: semantic decoupling",
            "SARL: GGNN",
            "SARL: classifier",
            "IST head",
            "losses, all terms",
            "optimizer (Adam step)",
        ] {
            assert!(
                names.contains(&expected),
                "missing row {expected:?} in {names:?}"
            );
        }
        assert!(names.iter().any(|n| n.starts_with("loss term partial BCE")));
        for row in &report.rows {
            assert!(
                row.forward_seconds.is_finite() && row.forward_seconds >= 0.0,
                "{row:?}"
            );
            let differentiable =
                !row.module.starts_with("trunk, frozen") && !row.module.starts_with("optimizer");
            assert_eq!(row.backward_seconds.is_some(), differentiable, "{row:?}");
        }
        let table = report.markdown();
        assert_eq!(
            table.lines().filter(|l| l.starts_with("| ")).count(),
            report.rows.len() + 3
        );
    }
}
