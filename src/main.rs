//! The `hst` command line: train, evaluate and benchmark HST models.
use anyhow::Result;
use clap::{Parser, Subcommand};
use hst::backend::{run_on, BackendJob, BackendName};

#[derive(Parser, Debug)]
#[command(name = "hst", version, about = "HST: multi-label recognition with partial labels, on Burn")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train HST (the default command: trains on the embedded dataset).
    Train,
    /// List the backends compiled into this binary and check that each can start here.
    Backends,
}

struct Probe;
impl BackendJob for Probe {
    type Output = ();
    fn run<B: burn::tensor::backend::AutodiffBackend>(self, _: BackendName, _: B::Device) {}
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Train) {
        Command::Train => {
            println!("hst train: not yet implemented (the training issue lands it)");
        }
        Command::Backends => {
            for name in BackendName::ALL {
                match run_on(name, Probe) {
                    Ok(()) => println!("{name:8} ok"),
                    Err(e) => println!("{name:8} {e}"),
                }
            }
        }
    }
    Ok(())
}
