//! Trunk throughput on every compiled backend.
//!
//! `cargo bench --bench trunk` (add `--features ndarray` to compare the CPU backends). Prints a Markdown
//! table: ResNet-50 forward at 224×224, batch 8 (inference), and a ResNet-18 training step
//! (forward + backward) at 64×64, batch 8 — the comparison that chose `flex` as the default CPU backend.
use hst::backend::{run_on, BackendName};
use hst::bench::TrunkBench;
use hst_backbone::trunk::TrunkConfig;

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let benches = [
        TrunkBench {
            name: "trunk-forward/resnet50-224-b8".into(),
            trunk: TrunkConfig::resnet(50).with_frozen_stages(0),
            image_size: 224,
            batch: 8,
            train: false,
            iterations: 3,
        },
        TrunkBench {
            name: "trunk-train-step/resnet18-64-b8".into(),
            trunk: TrunkConfig::resnet(18).with_frozen_stages(0),
            image_size: 64,
            batch: 8,
            train: true,
            iterations: 5,
        },
    ];
    println!("| bench | backend | img/s | s/iter | iterations |\n| --- | --- | --- | --- | --- |");
    for backend in BackendName::available() {
        for bench in benches
            .iter()
            .filter(|b| filter.iter().all(|f| b.name.contains(f.as_str())))
        {
            match run_on(backend, bench.clone()) {
                Ok(row) => println!("{}", row.markdown()),
                Err(e) => println!("| {} | {backend} | unavailable: {e} | | |", bench.name),
            }
        }
    }
}
