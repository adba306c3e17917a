//! The run report writes decodable PNGs of the documented sizes and fails clearly on bad directories or inputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hst_train::error::TrainError;
use hst_train::metrics::PseudoLabelQuality;
use hst_train::report::{write_report, EpochRecord, COOCCURRENCE_SIZE, LINE_PLOT_SIZE};

/// A fresh, empty directory under cargo's per-target temporary directory.
fn fresh_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hst-report-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn records(epochs: usize) -> Vec<EpochRecord> {
    (0..epochs)
        .map(|e| {
            let t = e as f64;
            let mut losses = BTreeMap::new();
            losses.insert("bce".to_string(), 0.7 / (1.0 + t));
            losses.insert("ist_cooccurrence".to_string(), 0.3 * (-0.3 * t).exp());
            losses.insert("total".to_string(), 1.2 / (1.0 + 0.5 * t));
            let quality = (e >= 2).then_some(PseudoLabelQuality {
                precision: 0.6 + 0.05 * t,
                recall: 0.3 + 0.04 * t,
                count: 100 + e,
                ..Default::default()
            });
            EpochRecord {
                epoch: e,
                losses,
                map: 0.5 + 0.04 * t,
                of1: 0.45 + 0.03 * t,
                cf1: 0.4 + 0.035 * t,
                tau_ist: 0.95 - 0.02 * t,
                tau_cst: 0.95 - 0.01 * t,
                ist_pseudo: quality,
                cst_pseudo: quality.map(|q| PseudoLabelQuality {
                    precision: q.precision - 0.1,
                    ..q
                }),
            }
        })
        .collect()
}

/// `[c, c]` matrices: a statistical-looking one and a blurred copy, diagonal 1.
fn matrices(c: usize) -> (Vec<f32>, Vec<f32>) {
    let mut stat = vec![0.0f32; c * c];
    let mut ist = vec![0.0f32; c * c];
    for i in 0..c {
        for j in 0..c {
            let v = if i == j {
                1.0
            } else {
                ((i * 7 + j * 3) % 11) as f32 / 12.0
            };
            stat[i * c + j] = v;
            ist[i * c + j] = if i == j { 1.0 } else { 0.5 * v + 0.2 };
        }
    }
    (stat, ist)
}

/// Decodes `path` as PNG, checks its size, and returns the fraction of non-white pixels.
fn check_png(path: &Path, size: (u32, u32)) -> f64 {
    let bytes = std::fs::read(path).unwrap();
    assert!(!bytes.is_empty(), "{} is empty", path.display());
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .unwrap_or_else(|e| panic!("{} does not decode as PNG: {e}", path.display()))
        .to_rgb8();
    assert_eq!(
        img.dimensions(),
        size,
        "{} has the wrong size",
        path.display()
    );
    let inked = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    inked as f64 / (size.0 as f64 * size.1 as f64)
}

#[test]
fn writes_every_plot_as_decodable_png() {
    let dir = fresh_dir("full");
    let (stat, ist) = matrices(6);
    let names: Vec<String> = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let paths = write_report(
        &dir.join("nested"),
        &records(6),
        Some((&stat, &ist, &names)),
    )
    .unwrap();
    let file_names: Vec<String> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        file_names,
        [
            "losses.png",
            "map.png",
            "thresholds.png",
            "pseudo_labels.png",
            "cooccurrence.png"
        ]
    );
    for path in &paths {
        assert!(path.starts_with(dir.join("nested")));
        let size = if path.ends_with("cooccurrence.png") {
            COOCCURRENCE_SIZE
        } else {
            LINE_PLOT_SIZE
        };
        let inked = check_png(path, size);
        // Axes, text and lines cover a few percent of a line plot; the heatmaps far more.
        assert!(inked > 0.01, "{} is nearly blank ({inked})", path.display());
        if size == COOCCURRENCE_SIZE {
            assert!(inked > 0.2, "{} heatmaps missing ({inked})", path.display());
        }
    }
}

#[test]
fn many_classes_single_epoch_no_pseudo_labels() {
    let dir = fresh_dir("many");
    let (stat, ist) = matrices(40);
    let mut recs = records(1);
    recs[0].tau_cst = f64::NAN; // non-finite values are left out, not an error
    let paths = write_report(&dir, &recs, Some((&stat, &ist, &[]))).unwrap();
    let names: Vec<_> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "losses.png",
            "map.png",
            "thresholds.png",
            "cooccurrence.png"
        ]
    );
    check_png(&paths[3], COOCCURRENCE_SIZE);
    check_png(&paths[2], LINE_PLOT_SIZE);
}

#[test]
fn nothing_to_plot_writes_nothing() {
    let dir = fresh_dir("empty");
    assert!(write_report(&dir, &[], None).unwrap().is_empty());
    assert!(dir.is_dir());
}

#[test]
fn unwritable_directory_is_a_clear_error() {
    let dir = fresh_dir("unwritable");
    std::fs::create_dir_all(&dir).unwrap();
    // A regular file where a directory is needed fails even for root.
    let file = dir.join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let target = file.join("report");
    let err = write_report(&target, &records(2), None).unwrap_err();
    match &err {
        TrainError::ReportIo { path, .. } => assert_eq!(path, &target),
        other => panic!("expected ReportIo, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("not-a-directory/report"), "{message}");
}

#[test]
fn bad_cooccurrence_shapes_are_rejected_before_writing() {
    let dir = fresh_dir("bad-shape");
    let (stat, _) = matrices(3);
    let short = vec![0.5f32; 8];
    let err = write_report(&dir, &records(2), Some((&stat, &short, &[]))).unwrap_err();
    assert!(matches!(err, TrainError::ReportInput(_)), "{err:?}");
    let names = vec!["a".to_string(); 2];
    let err = write_report(&dir, &records(2), Some((&stat, &stat, &names))).unwrap_err();
    assert!(err.to_string().contains("2 class names"), "{err}");
    assert!(!dir.exists(), "nothing should be written for bad input");
}

#[test]
fn epoch_record_json_round_trip_and_defaults() {
    let rec = &records(3)[2];
    let json = serde_json::to_string(rec).unwrap();
    let back: EpochRecord = serde_json::from_str(&json).unwrap();
    // serde_json (without `float_roundtrip`) may change the last bit of a float.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1.0);
    assert_eq!(back.epoch, rec.epoch);
    assert_eq!(
        back.losses.keys().collect::<Vec<_>>(),
        rec.losses.keys().collect::<Vec<_>>()
    );
    assert!(back
        .losses
        .values()
        .zip(rec.losses.values())
        .all(|(&a, &b)| close(a, b)));
    for (a, b) in [
        (back.map, rec.map),
        (back.of1, rec.of1),
        (back.cf1, rec.cf1),
    ] {
        assert!(close(a, b));
    }
    for (a, b) in [(back.tau_ist, rec.tau_ist), (back.tau_cst, rec.tau_cst)] {
        assert!(close(a, b));
    }
    let (qa, qb) = (back.ist_pseudo.unwrap(), rec.ist_pseudo.unwrap());
    assert!(
        close(qa.precision, qb.precision) && close(qa.recall, qb.recall) && qa.count == qb.count
    );
    assert_eq!(
        back.cst_pseudo.map(|q| q.count),
        rec.cst_pseudo.map(|q| q.count)
    );
    let minimal: EpochRecord = serde_json::from_str(r#"{"epoch": 4, "map": 0.8}"#).unwrap();
    assert_eq!(minimal.epoch, 4);
    assert!(minimal.losses.is_empty() && minimal.ist_pseudo.is_none());
}
