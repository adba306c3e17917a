//! Images per second through the full data pipeline: JPEG decode, train (or test) transform,
//! normalisation and batching into burn tensors (Flex backend, CPU), batches of 32.
//!
//! ```text
//! cargo bench -p hst-data --bench pipeline
//! ```
//!
//! VOC benches read `../shared/data/voc2007-trainval` (the 5,008 VOC2007 trainval JPEGs,
//! longest side 256); they are skipped with a message when it is missing. The embedded bench
//! renders the built-in 64×64 mosaics instead of decoding files.

use std::path::Path;
use std::sync::LazyLock;

use burn::backend::Flex;
use divan::counter::ItemsCount;
use divan::Bencher;
use hst_data::datasets::voc::{read_voc, VocSplit};
use hst_data::{
    BatchMode, EmbeddedDataset, FileDataset, HstBatcher, MultiLabelSource, TransformConfig,
};

const BATCH: usize = 32;

fn main() {
    divan::main();
}

static VOC: LazyLock<Option<FileDataset>> = LazyLock::new(|| {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/voc2007-trainval");
    if !root.exists() {
        eprintln!("{} is missing: VOC benches skipped", root.display());
        return None;
    }
    Some(read_voc(&root, VocSplit::Trainval).expect("read VOC2007 trainval"))
});

fn run<S: MultiLabelSource>(bencher: Bencher, data: &S, config: TransformConfig, mode: BatchMode) {
    let batcher = HstBatcher::new(config.init(), mode);
    let partial = data.full_labels().clone();
    let device = Default::default();
    let mut step = 0usize;
    bencher.counter(ItemsCount::new(BATCH)).bench_local(|| {
        // A new set of images (and crops) each iteration.
        let start = (step * BATCH) % (data.len() - BATCH);
        let indices: Vec<usize> = (start..start + BATCH).collect();
        step += 1;
        batcher
            .batch::<Flex, _>(data, &partial, &indices, step, &device)
            .expect("batch")
    });
}

/// Train pipeline on VOC: decode, resize to 8/7·size, random crop, resize, flip, normalise.
#[divan::bench(name = "voc-train-b32", args = [224, 448], sample_count = 8, sample_size = 1)]
fn voc_train(bencher: Bencher, size: u32) {
    if let Some(data) = VOC.as_ref() {
        run(
            bencher,
            data,
            TransformConfig::scaled(size),
            BatchMode::Train,
        );
    }
}

/// Test pipeline on VOC: decode, resize, normalise.
#[divan::bench(name = "voc-test-b32", args = [224, 448], sample_count = 8, sample_size = 1)]
fn voc_test(bencher: Bencher, size: u32) {
    if let Some(data) = VOC.as_ref() {
        run(
            bencher,
            data,
            TransformConfig::scaled(size),
            BatchMode::Test,
        );
    }
}

/// Train pipeline on the embedded 64×64 mosaics (rendering instead of decoding), with
/// `TransformConfig::embedded()` (resize 72, crop 72 or 64, output 64).
#[divan::bench(name = "embedded-train-64-b32", sample_count = 20, sample_size = 1)]
fn embedded_train(bencher: Bencher) {
    let data = EmbeddedDataset::load().expect("embedded dataset");
    run(
        bencher,
        &data.train,
        TransformConfig::embedded(),
        BatchMode::Train,
    );
}
