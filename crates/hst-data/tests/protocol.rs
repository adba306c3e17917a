//! The partial-label protocol against the reference fixtures
//! (`shared/fixtures/partial-labels`), with full labels read from `shared/data/voc2007-trainval`.

mod common;

use hst_data::datasets::voc::{read_voc, VocSplit, VOC_CLASSES};
use hst_data::label_file::read_label_csv;
use hst_data::protocol::{uniforms, REFERENCE_SEED};
use hst_data::{MultiLabelSource, PartialLabels};

#[test]
fn uniforms_match_numpy_bit_for_bit() {
    let Some(dir) = common::shared("fixtures/partial-labels") else {
        return;
    };
    // Parse the numbers with `str::parse` (correctly rounded); serde_json's default float
    // parser may be off by an ulp.
    let text = std::fs::read_to_string(dir.join("meta.json")).unwrap();
    let start = text.find("\"uniforms_seed0_4x5\"").unwrap();
    let body = &text[start..];
    let body = &body[body.find('[').unwrap()..body.find("]\n ]").unwrap()];
    let expected: Vec<f64> = body
        .split(|c: char| c == '[' || c == ']' || c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(expected.len(), 20);
    // Exact equality: the JSON holds the shortest round-trip decimal of each double.
    assert_eq!(uniforms(0, 4, 5), expected);
}

#[test]
fn voc2007_train_partial_labels_match_reference_files() {
    let (Some(fixtures), Some(voc)) = (
        common::shared("fixtures/partial-labels"),
        common::shared("data/voc2007-trainval"),
    ) else {
        return;
    };
    let data = read_voc(&voc, VocSplit::Train).unwrap();
    assert_eq!(data.len(), 2500);

    let full = read_label_csv(fixtures.join("voc2007-train-full.csv")).unwrap();
    let names: Vec<String> = VOC_CLASSES.iter().map(|s| s.to_string()).collect();
    assert_eq!(full.class_names.as_deref(), Some(&names[..]));
    let ids: Vec<String> = data
        .image_paths()
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(full.ids.as_deref(), Some(&ids[..]), "image order differs");
    assert_eq!(
        data.full_labels(),
        &full.labels,
        "VOC reader disagrees with the full-label file"
    );

    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("meta.json")).unwrap())
            .unwrap();
    let mut previous: Option<PartialLabels> = None;
    for pct in (10..=90).step_by(10) {
        let p = pct as f64 / 100.0;
        let labels = PartialLabels::from_protocol(data.full_labels().clone(), p, REFERENCE_SEED);
        let reference = read_label_csv(fixtures.join(format!("voc2007-train-p{pct}.csv"))).unwrap();
        assert_eq!(
            labels.partial(),
            &reference.labels,
            "p = {p}: partial labels differ"
        );
        let stats = labels.stats();
        let expected = meta[format!("known_fraction_p{pct}")].as_f64().unwrap();
        assert!(
            (stats.known_fraction - expected).abs() < 1e-12,
            "p = {p}: known fraction {} vs {expected}",
            stats.known_fraction
        );
        // Nested masks.
        if let Some(prev) = &previous {
            assert!(prev
                .partial()
                .values()
                .iter()
                .zip(labels.partial().values())
                .all(|(&a, &b)| a == 0 || a == b));
        }
        previous = Some(labels);
    }
}
