//! The HST model benchmark (`hst bench`) as a cargo bench: training step, inference and data preparation per
//! configuration, on every compiled backend (or the one named with `--backend`).
//!
//! ```text
//! cargo bench --bench hst                                   # default + voc-small, every compiled backend
//! cargo bench --bench hst -- --config paper --steps 1 --warmup 0
//! cargo bench --bench hst --features ndarray -- --backend ndarray --config default
//! ```
//!
//! Takes the options of `hst bench` (see `hst bench --help` or [`hst::bench::BenchArgs`]); a leading `bench`
//! word is accepted so that the command line of `hst --backend B bench …` works unchanged.
use clap::Parser;
use hst::backend::BackendName;
use hst::bench::{run_bench, BenchArgs};

#[derive(Parser, Debug)]
#[command(
    name = "hst-bench",
    about = "HST model benchmarks (the options of `hst bench`)"
)]
struct Cli {
    /// Backend (default: every backend compiled into this benchmark).
    #[arg(long, value_enum)]
    backend: Option<BackendName>,
    #[command(flatten)]
    args: BenchArgs,
}

fn main() {
    // `cargo bench` passes `--bench`; `hst`'s own command line has a `bench` subcommand word.
    let argv: Vec<String> = std::env::args()
        .enumerate()
        .filter(|(i, a)| a != "--bench" && !(*i > 0 && a == "bench"))
        .map(|(_, a)| a)
        .collect();
    let cli = Cli::parse_from(argv);
    let backends = match cli.backend {
        Some(b) => vec![b],
        None => BackendName::available(),
    };
    let mut failed = false;
    for backend in backends {
        if let Err(e) = run_bench(&cli.args, backend) {
            eprintln!("error: {backend}: {e:#}");
            failed = true;
        }
    }
    if failed {
        std::process::exit(1);
    }
}
