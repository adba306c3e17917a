//! IST head forward + backward on `Autodiff<Flex>` (CPU), naive vs factorised, batch 32, the reference sizes
//! (feature 1024, hidden 512, pair features 1024), C = 20 (VOC), 80 (COCO), 200 (VG-200) classes.
//!
//! ```text
//! cargo bench -p hst-transfer --bench ist_head            # all configurations
//! cargo bench -p hst-transfer --bench ist_head -- 80      # only C = 80
//! ```
//!
//! Each configuration runs in its own child process, so that its peak resident memory (`VmHWM` from
//! `/proc/self/status`) is its own. Reported: mean seconds per forward+backward step, pairs/s, the peak RSS of
//! the process and the peak minus the RSS after setup (model and input built, before the first step).
//! The naive head at C = 200 is skipped: its `[32, 19900, 1024]` float tensors are 2.6 GB each and it keeps
//! about five of them alive at once (over 12 GB).

use std::process::Command;
use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::Distribution;
use hst_transfer::IstHeadConfig;

type AB = Autodiff<Flex>;

const BATCH: usize = 32;
const FEATURE_DIM: usize = 1024;

fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn iterations(classes: usize) -> usize {
    match classes {
        c if c <= 20 => 20,
        c if c <= 80 => 3,
        _ => 2,
    }
}

/// Child: run one configuration and print one machine-readable line.
fn child(mode: &str, classes: usize) {
    let device = Default::default();
    AB::seed(&device, 0);
    let head = IstHeadConfig::new(classes, FEATURE_DIM).init::<AB>(&device);
    let pairs = head.pairs();
    let semantic = Tensor::<AB, 3>::random(
        [BATCH, classes, FEATURE_DIM],
        Distribution::Normal(0.0, 1.0),
        &device,
    )
    .require_grad();
    let weights = Tensor::<AB, 2>::random([BATCH, pairs], Distribution::Normal(0.0, 1.0), &device);
    let setup_kib = status_kib("VmRSS:").unwrap_or(0);

    let step = || {
        let logits = match mode {
            "naive" => head.forward_naive(semantic.clone()),
            _ => head.forward(semantic.clone()),
        };
        let grads = (logits * weights.clone()).sum().backward();
        // Read a gradient back: forces the work to finish.
        let g = head.pair_hidden.weight.grad(&grads).expect("gradient");
        g.sum().into_scalar()
    };
    let _ = step(); // warm-up
    let n = iterations(classes);
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(step());
    }
    let seconds = start.elapsed().as_secs_f64() / n as f64;
    let peak_kib = status_kib("VmHWM:").unwrap_or(0);
    println!("RESULT {mode} {classes} {pairs} {seconds:.4} {peak_kib} {setup_kib}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        let mode = &args[pos + 1];
        let classes: usize = args[pos + 2].parse().expect("classes");
        child(mode, classes);
        return;
    }
    let only: Option<usize> = args.iter().skip(1).find_map(|a| a.parse().ok());
    let exe = std::env::current_exe().expect("own path");

    println!("IST head forward+backward, Autodiff<Flex> (CPU, {} threads), batch {BATCH}, feature 1024, hidden 512, pair 1024",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    println!(
        "{:<11} {:>4} {:>6} {:>10} {:>12} {:>12} {:>14}",
        "head", "C", "pairs", "s/step", "pairs·img/s", "peak RSS", "peak − setup"
    );
    for classes in [20usize, 80, 200] {
        if only.is_some_and(|c| c != classes) {
            continue;
        }
        for mode in ["naive", "factorised"] {
            if mode == "naive" && classes >= 200 {
                println!("{mode:<11} {classes:>4} {:>6} skipped: about 5 live [32, 19900, 1024] f32 tensors (2.6 GB each) exceed 12 GB", classes * (classes - 1) / 2);
                continue;
            }
            let output = Command::new(&exe)
                .args(["--child", mode, &classes.to_string()])
                .output()
                .expect("spawn child");
            let stdout = String::from_utf8_lossy(&output.stdout);
            let Some(line) = stdout.lines().find(|l| l.starts_with("RESULT")) else {
                println!(
                    "{mode:<11} {classes:>4} failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                );
                continue;
            };
            let f: Vec<&str> = line.split_whitespace().collect();
            let pairs: usize = f[3].parse().unwrap();
            let seconds: f64 = f[4].parse().unwrap();
            let peak: f64 = f[5].parse::<f64>().unwrap() / 1024.0 / 1024.0;
            let setup: f64 = f[6].parse::<f64>().unwrap() / 1024.0 / 1024.0;
            println!(
                "{mode:<11} {classes:>4} {pairs:>6} {seconds:>10.3} {:>12.0} {:>9.2} GiB {:>11.2} GiB",
                (pairs * BATCH) as f64 / seconds,
                peak,
                peak - setup
            );
        }
    }
}
