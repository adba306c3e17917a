//! Predict labels with a trained run folder.
//!
//! ```text
//! cargo run --release --example predict -- --run runs/embedded-1700000000                 # embedded test images
//! cargo run --release --example predict -- --run runs/voc2007-1700000000 a.jpg b.png      # image files
//! ```
//!
//! Loads the run's `config.json`, `constants.json` and a checkpoint (`--checkpoint best|last`), and prints for
//! each image the classes whose probability is at least `--threshold` (always the most probable one), with
//! their probabilities. With no image files, the run must be on the embedded dataset: the first `--count` test
//! images are rendered and run through the model directly, and the true labels are printed beside the
//! predictions, followed by the precision and recall of the shown labels. Runs on the Flex CPU backend.
use std::path::PathBuf;

use anyhow::{bail, Context};
use burn::backend::Flex;
use burn::prelude::*;
use clap::{Parser, ValueEnum};
use hst_data::datasets::decode_image_file;
use hst_data::{EmbeddedConfig, MultiLabelSource};
use hst_train::trainer::load_run_model;
use image::RgbImage;

/// Predict the labels of images with a run folder's checkpoint.
#[derive(Parser, Debug)]
struct Args {
    /// The run folder (`hst train --out DIR`).
    #[arg(long, value_name = "DIR")]
    run: PathBuf,
    /// Which checkpoint.
    #[arg(long, value_enum, default_value = "best")]
    checkpoint: Checkpoint,
    /// Show the classes whose probability is at least this.
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// With no image files: how many embedded test images.
    #[arg(long, default_value_t = 8)]
    count: usize,
    /// Image files; none: the first `--count` test images of the embedded dataset.
    images: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Checkpoint {
    Best,
    Last,
}

/// One image to predict: a name, the pixels and, when known, the true classes.
struct Input {
    name: String,
    image: RgbImage,
    truth: Option<Vec<usize>>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let file = match args.checkpoint {
        Checkpoint::Best => "best.ckpt",
        Checkpoint::Last => "last.ckpt",
    };
    let device = Default::default();
    let (config, constants, model) = load_run_model::<Flex>(&args.run, file, &device)
        .with_context(|| format!("loading the run folder {}", args.run.display()))?;
    let classes = &constants.classes;

    let inputs: Vec<Input> = if args.images.is_empty() {
        let data = EmbeddedConfig::new()
            .with_train_images(0)
            .with_test_images(args.count)
            .load()?;
        if data.test.classes() != &classes[..] {
            bail!(
                "{} was not trained on the embedded dataset (its classes are {}…); give image files",
                args.run.display(),
                classes.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
            );
        }
        let labels = data.test.full_labels();
        (0..data.test.len())
            .map(|i| Input {
                name: data.test.image_name(i),
                image: data.test.render(i),
                truth: Some(
                    (0..classes.len())
                        .filter(|&c| labels.value(i, c) == 1)
                        .collect(),
                ),
            })
            .collect()
    } else {
        args.images
            .iter()
            .map(|path| {
                Ok(Input {
                    name: path.display().to_string(),
                    image: decode_image_file(path)?,
                    truth: None,
                })
            })
            .collect::<anyhow::Result<_>>()?
    };

    // The test transform of the run (resize, normalisation), then one batch through the model.
    let transform = config.data.transform.init();
    let size = transform.image_size() as usize;
    let pixels: Vec<f32> = inputs
        .iter()
        .flat_map(|i| transform.test(&i.image))
        .collect();
    let images = Tensor::<Flex, 4>::from_data(
        TensorData::new(pixels, [inputs.len(), 3, size, size]),
        &device,
    );
    let probs: Vec<f32> = burn::tensor::activation::sigmoid(model.forward(images).logits)
        .into_data()
        .iter::<f32>()
        .collect();

    println!(
        "{} ({}, {} classes), threshold {}",
        args.run.join("checkpoints").join(file).display(),
        config.preset,
        classes.len(),
        args.threshold
    );
    let (mut shown, mut correct, mut positives) = (0, 0, 0);
    for (n, input) in inputs.iter().enumerate() {
        let p = &probs[n * classes.len()..(n + 1) * classes.len()];
        let mut order: Vec<usize> = (0..classes.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        let predicted: Vec<usize> = order
            .iter()
            .enumerate()
            .filter(|&(rank, &c)| rank == 0 || p[c] >= args.threshold)
            .map(|(_, &c)| c)
            .collect();
        let text: Vec<String> = predicted
            .iter()
            .map(|&c| format!("{} {:.3}", classes[c], p[c]))
            .collect();
        match &input.truth {
            Some(truth) => {
                let names: Vec<&str> = truth.iter().map(|&c| classes[c].as_str()).collect();
                println!(
                    "{}  predicted: {}  |  true: {}",
                    input.name,
                    text.join(", "),
                    names.join(", ")
                );
                shown += predicted.len();
                correct += predicted.iter().filter(|c| truth.contains(c)).count();
                positives += truth.len();
            }
            None => println!("{}  {}", input.name, text.join(", ")),
        }
    }
    if positives > 0 {
        println!(
            "shown labels: {correct} of {shown} correct; {correct} of {positives} true labels found"
        );
    }
    Ok(())
}
