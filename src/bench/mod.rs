//! Benchmarks shared by `benches/` and the `hst bench` command.
//!
//! [`run_bench`] measures the whole HST model — trunk, SARL, IST head and every loss term — for named
//! configurations ([`BenchPreset`]: `paper`, `vg`, `voc-small`, `default`) on one backend:
//!
//! - the training step (forward, losses, backward, Adam step on `Autodiff<B>`), timed per phase;
//! - inference (`model.valid()`, the inner backend);
//! - data preparation with the real [`HstBatcher`](hst_data::HstBatcher) (embedded mosaics, or synthetic JPEGs decoded per image),
//!   timed on its own so that a fast device is not starved by decoding;
//! - host peak memory (`VmHWM`) and, on an NVIDIA device, device memory sampled with `nvidia-smi`.
//!
//! Model inputs are random tensors with random partial labels; the loss runs at a post-warm-up epoch with
//! prototypes present, so every term of the objective (partial BCE, IST ASL/BCE/DTL, instance, prototype,
//! CST BCE/DTL) is computed. Every measurement warms up first (GPU backends autotune and compile kernels
//! during the first steps) and synchronises the device before reading the clock.
//!
//! [`check_reference`] / [`check_compare`] run the same seeded model and input on two backends (the weights
//! travel as a record in bytes) and compare logits, every loss term, every parameter gradient and the
//! inference logits.
//!
//! The parts: [`BenchSpec`]/[`BenchArgs`] (`spec`), the step benchmark [`BenchJob`] (`step`), the random
//! inputs and constants shared with `hst bench --profile` (`inputs`), [`BenchResult`] and its Markdown/JSON
//! output (`report`), host and device memory (`memory`), the cross-backend check (`check`) and the trunk-only
//! benchmark of `benches/trunk.rs` (`trunk`).

mod check;
mod inputs;
mod memory;
mod report;
mod spec;
mod step;
mod trunk;

use anyhow::{Context, Result};

pub use check::{
    check_compare, check_outputs_on, check_reference, compare_outputs, load_record_bytes,
    CheckData, CheckItem, CheckReport, CheckTolerance,
};
pub(crate) use inputs::{adam, bench_inputs, sync};
pub use inputs::{build_model, partial_labels, BenchConstants, SyntheticJpegs};
pub use memory::{host_peak_rss, reset_host_peak_rss};
pub use report::{BenchResult, DeviceMemory, MachineInfo, PhaseSeconds};
pub(crate) use spec::sized_spec;
pub use spec::{BenchArgs, BenchPreset, BenchSpec};
pub use step::BenchJob;
pub use trunk::{time_steps, BenchRow, TrunkBench};

use crate::backend::{run_on, BackendName};
use check::run_checks;
use report::{append_line, append_markdown};

/// The Burn version this binary is built on (pinned in the workspace).
pub const BURN_VERSION: &str = "0.21.0";

/// The element type of every benchmark.
pub const DTYPE: &str = "f32";

/// `hst bench`: measure the selected configurations on `backend` (or `--check` it against another backend),
/// print Markdown rows and append them to `--markdown`/`--json`.
///
/// # Errors
/// Bad arguments, a backend that cannot start, a non-finite loss, an output file that cannot be written, or
/// (with `--check`) a difference above the tolerance.
pub fn run_bench(args: &BenchArgs, backend: BackendName) -> Result<()> {
    let specs = args.specs()?;
    if args.check {
        return run_checks(args, backend, &specs);
    }
    if args.profile {
        for spec in &specs {
            let report = run_on(backend, crate::profile::ProfileJob { spec })?
                .with_context(|| format!("profile `{}` on {backend}", spec.name))?;
            println!("{}", report.markdown());
            if let Some(path) = &args.markdown {
                append_line(path, &report.markdown())?;
            }
            if let Some(path) = &args.json {
                append_line(path, &serde_json::to_string(&report)?)?;
            }
        }
        return Ok(());
    }
    println!("{}", BenchResult::markdown_header());
    for spec in &specs {
        let job = BenchJob {
            spec,
            gpu_name: args.gpu_name.clone(),
        };
        let result = run_on(backend, job)?
            .with_context(|| format!("benchmark `{}` on {backend}", spec.name))?;
        println!("{}", result.markdown_row());
        if let Some(path) = &args.markdown {
            append_markdown(path, &result.markdown_row())?;
        }
        if let Some(path) = &args.json {
            append_line(path, &serde_json::to_string(&result)?)?;
        }
    }
    Ok(())
}

/// A tiny `default` spec for the unit tests: batch 2, 4 classes, 32 px, one step.
#[cfg(test)]
pub(crate) fn tiny_spec() -> BenchSpec {
    let mut spec = BenchPreset::Default.spec();
    spec.batch = 2;
    spec.classes = 4;
    spec.warmup = 0;
    spec.steps = 1;
    spec.data_batches = 1;
    spec.with_image_size(32)
}
