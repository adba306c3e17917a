//! The embedded dataset: determinism, structured co-occurrence, disjoint tiles, shipped files
//! equal to what the sources give, export round trip.
//!
//! To regenerate the shipped files of `datasets/` from `shared/data`:
//! `cargo test --release -p hst-data --test embedded -- --ignored regenerate_shipped_files`

mod common;

use std::collections::HashSet;

use hst_data::cooccurrence::cooccurrence_counts;
use hst_data::datasets::manifest::read_manifest;
use hst_data::embedded::{
    build_tile_subset, shipped_tile_subset, write_tile_subset, EMBEDDED_CLASSES, SCENES,
};
use hst_data::{EmbeddedConfig, EmbeddedDataset, MultiLabelSource, WordVectors};

#[test]
fn shape_and_label_counts() {
    let data = EmbeddedDataset::load().unwrap();
    assert_eq!(data.train.len(), 4000);
    assert_eq!(data.test.len(), 2000);
    assert_eq!(data.classes().len(), 20);
    for split in [&data.train, &data.test] {
        let labels = split.full_labels();
        assert!(labels.is_fully_known());
        for n in 0..split.len() {
            let k = labels.row(n).iter().filter(|&&v| v == 1).count();
            assert!((1..=4).contains(&k), "image {n} has {k} objects");
        }
        // Every class occurs reasonably often.
        let stats = labels.stats();
        let min = *stats.positives_per_class.iter().min().unwrap();
        assert!(
            min as f64 > 0.02 * split.len() as f64,
            "{:?}",
            stats.positives_per_class
        );
    }
    let img = data.train.load_image(0).unwrap();
    assert_eq!(img.dimensions(), (64, 64));
}

#[test]
fn generator_is_deterministic() {
    let a = EmbeddedDataset::load().unwrap();
    let b = EmbeddedConfig::new().load().unwrap();
    assert_eq!(a.train.full_labels(), b.train.full_labels());
    assert_eq!(a.test.full_labels(), b.test.full_labels());
    for i in [0, 1, 1234, 3999] {
        assert_eq!(a.train.render(i), b.train.render(i));
    }
    // A different seed gives different data; a smaller config is a prefix of the full one.
    let c = EmbeddedConfig::new().with_seed(7).load().unwrap();
    assert_ne!(a.train.full_labels(), c.train.full_labels());
    let small = EmbeddedConfig::new()
        .with_train_images(10)
        .with_test_images(5)
        .load()
        .unwrap();
    assert_eq!(
        small.train.full_labels().values(),
        &a.train.full_labels().values()[..10 * 20]
    );
    assert_eq!(small.test.render(4), a.test.render(4));
    // Pinned values, so an accidental change of the generator shows up.
    let first: Vec<usize> = (0..20)
        .filter(|&c| a.train.full_labels().value(0, c) == 1)
        .collect();
    let sum: u64 = a.train.render(0).as_raw().iter().map(|&v| v as u64).sum();
    println!("image 0: classes {first:?}, pixel sum {sum}");
    assert_eq!(
        (first, sum),
        (PINNED_CLASSES.to_vec(), PINNED_SUM),
        "the generator changed: update datasets/README.md and these values"
    );
}

const PINNED_CLASSES: [usize; 2] = [1, 7];
const PINNED_SUM: u64 = 434_182;

#[test]
fn cooccurrence_is_structured() {
    let data = EmbeddedDataset::load().unwrap();
    let labels = data.train.full_labels();
    let c = 20;
    let counts = cooccurrence_counts(labels);
    let p = |i: usize, j: usize| counts[i * c + j] as f64 / counts[i * c + i] as f64;
    let name = |s: &str| EMBEDDED_CLASSES.iter().position(|c| *c == s).unwrap();
    // Same-scene pairs are frequent, cross-scene pairs rare.
    assert!(
        p(name("zebra"), name("giraffe")) > 0.3,
        "{}",
        p(name("zebra"), name("giraffe"))
    );
    assert!(p(name("cow"), name("sheep")) > 0.3);
    assert!(p(name("zebra"), name("shirt")) < 0.1);
    assert!(p(name("sandal"), name("bear")) < 0.1);
    // Far from uniform: off-diagonal conditional probabilities spread widely.
    let off: Vec<f64> = (0..c)
        .flat_map(|i| (0..c).filter(move |&j| j != i).map(move |j| (i, j)))
        .map(|(i, j)| p(i, j))
        .collect();
    let mean = off.iter().sum::<f64>() / off.len() as f64;
    let sd = (off.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / off.len() as f64).sqrt();
    assert!(sd / mean > 1.0, "coefficient of variation {}", sd / mean);
    // Every scene occurs.
    let scenes: HashSet<usize> = (0..data.train.len()).map(|i| data.train.scene(i)).collect();
    assert_eq!(scenes.len(), SCENES.len());
}

#[test]
fn train_and_test_tiles_are_disjoint() {
    let data = EmbeddedDataset::load().unwrap();
    let train: HashSet<Vec<u8>> = (0..data.train.tile_count())
        .map(|t| data.train.tile(t).0.to_vec())
        .collect();
    let test: HashSet<Vec<u8>> = (0..data.test.tile_count())
        .map(|t| data.test.tile(t).0.to_vec())
        .collect();
    // A few source tiles are exact duplicates of each other within a split.
    assert!(
        train.len() > 3950 && test.len() > 1950,
        "{} {}",
        train.len(),
        test.len()
    );
    assert!(train.is_disjoint(&test));
    // Objects use tiles of their own class.
    for i in 0..50 {
        for t in data.test.tiles_of(i) {
            let (_, class) = data.test.tile(t);
            assert_eq!(data.test.full_labels().value(i, class), 1);
        }
    }
}

#[test]
fn shipped_tiles_equal_the_sources() {
    let Some(tiles) = common::shared("data/tiles") else {
        return;
    };
    let built = build_tile_subset(&tiles).unwrap();
    assert!(
        built == shipped_tile_subset().unwrap(),
        "datasets/tiles-* differ from the sources"
    );
}

#[test]
fn shipped_class_vectors_equal_glove() {
    let Some(glove) = common::shared("data/glove/glove.6B.50d.subset.txt.gz") else {
        return;
    };
    let names: Vec<String> = EMBEDDED_CLASSES.iter().map(|s| s.to_string()).collect();
    let vectors = WordVectors::read_glove_for(&glove, &names).unwrap();
    let expected = vectors.class_embeddings(&names).unwrap();
    let shipped = EmbeddedDataset::class_embeddings();
    assert_eq!((shipped.classes(), shipped.dim()), (20, 50));
    assert!(
        shipped == expected,
        "datasets/glove-6B-50d-classes.npy differs from GloVe"
    );
}

#[test]
fn export_round_trips_through_the_manifest_reader() {
    let data = EmbeddedConfig::new()
        .with_train_images(12)
        .with_test_images(6)
        .load()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let csvs = data.export(tmp.path()).unwrap();
    assert_eq!(csvs.len(), 2);
    let m = read_manifest(&csvs[0], None).unwrap();
    assert_eq!(m.dataset.len(), 12);
    assert_eq!(m.dataset.full_labels(), data.train.full_labels());
    assert_eq!(m.dataset.classes(), data.classes());
    assert!(m.partial.is_none());
    assert_eq!(m.dataset.load_image(5).unwrap(), data.train.render(5));
    let t = read_manifest(&csvs[1], None).unwrap();
    assert_eq!(t.dataset.load_image(3).unwrap(), data.test.render(3));
}

#[test]
#[ignore = "writes datasets/; run by hand to regenerate the shipped files"]
fn regenerate_shipped_files() {
    let tiles = common::shared("data/tiles").expect("shared/data/tiles");
    let glove = common::shared("data/glove/glove.6B.50d.subset.txt.gz").expect("GloVe");
    let out = common::datasets_dir();
    write_tile_subset(&build_tile_subset(&tiles).unwrap(), &out).unwrap();
    let names: Vec<String> = EMBEDDED_CLASSES.iter().map(|s| s.to_string()).collect();
    WordVectors::read_glove_for(&glove, &names)
        .unwrap()
        .class_embeddings(&names)
        .unwrap()
        .write_npy(out.join("glove-6B-50d-classes.npy"))
        .unwrap();
}
