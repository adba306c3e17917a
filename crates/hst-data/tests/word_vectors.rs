//! GloVe class vectors for the paper's class names (shared GloVe 6B 50-d subset).

mod common;

use hst_data::datasets::voc::VOC_CLASSES;
use hst_data::{ClassEmbeddings, DataError, WordVectors};

#[test]
fn voc_class_matrix_from_glove() {
    let Some(glove) = common::shared("data/glove/glove.6B.50d.subset.txt.gz") else {
        return;
    };
    let vectors = WordVectors::read_glove(&glove).unwrap();
    assert_eq!(vectors.dim(), 50);
    assert!(vectors.len() > 30_000);
    let names: Vec<String> = VOC_CLASSES.iter().map(|s| s.to_string()).collect();
    let m = vectors.class_embeddings(&names).unwrap();
    assert_eq!((m.classes(), m.dim()), (20, 50));
    // diningtable = mean(dining, table).
    let d = vectors.get("dining").unwrap();
    let t = vectors.get("table").unwrap();
    for k in 0..50 {
        assert!((m.row(10)[k] - (d[k] + t[k]) / 2.0).abs() < 1e-6);
    }
    assert_eq!(m.row(11), vectors.get("dog").unwrap());

    // The filtered reader gives the same matrix.
    let filtered = WordVectors::read_glove_for(&glove, &names).unwrap();
    assert!(filtered.len() < 40);
    assert_eq!(filtered.class_embeddings(&names).unwrap(), m);

    // .npy round trip.
    let tmp = tempfile::tempdir().unwrap();
    m.write_npy(tmp.path().join("voc.npy")).unwrap();
    assert_eq!(
        ClassEmbeddings::read_npy(tmp.path().join("voc.npy")).unwrap(),
        m
    );

    // A class without vector lists the missing words.
    let bad = vec!["dog".to_string(), "flibbertigibbet_zzq".to_string()];
    match vectors.class_embeddings(&bad) {
        Err(DataError::MissingWords { words, classes }) => {
            assert_eq!(words, vec!["flibbertigibbet", "zzq"]);
            assert_eq!(classes, vec!["flibbertigibbet_zzq"]);
        }
        other => panic!("expected MissingWords, got {other:?}"),
    }
}
