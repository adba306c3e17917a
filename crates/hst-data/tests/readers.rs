//! Dataset readers: the committed VOC XML fixture, the shared VOC lists and COCO sample, VG and
//! manifests built in temporary directories, and malformed inputs.

mod common;

use std::path::Path;

use hst_data::datasets::coco::read_coco;
use hst_data::datasets::manifest::read_manifest;
use hst_data::datasets::vg::read_vg;
use hst_data::datasets::voc::{read_voc, VocSplit, VOC_CLASSES};
use hst_data::{DataError, Label, MultiLabelSource};

fn class(name: &str) -> usize {
    VOC_CLASSES.iter().position(|c| *c == name).unwrap()
}

/// Copies the XML fixture into a temporary directory so a test can break one file.
fn voc_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&common::fixture("voc-xml"), tmp.path());
    tmp
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn voc_xml_fixture() {
    let data = read_voc(common::fixture("voc-xml"), VocSplit::Trainval).unwrap();
    assert_eq!(data.len(), 3);
    let l = data.full_labels();
    assert!(l.is_fully_known());
    // 000001: dog, person (the difficult dog changes nothing).
    assert_eq!(l.get(0, class("dog")), Label::Positive);
    assert_eq!(l.get(0, class("person")), Label::Positive);
    assert_eq!(l.row(0).iter().filter(|&&v| v == 1).count(), 2);
    // 000002: a difficult-only chair is negative; the <part><name>hand</name> is not an object.
    assert_eq!(l.get(1, class("chair")), Label::Negative);
    assert_eq!(l.get(1, class("diningtable")), Label::Positive);
    assert_eq!(l.row(1).iter().filter(|&&v| v == 1).count(), 1);
    // 000003: no <difficult> tag means not difficult.
    assert_eq!(l.get(2, class("tvmonitor")), Label::Positive);
    let img = data.load_image(0).unwrap();
    assert_eq!(img.dimensions(), (8, 6));
    assert!(img.get_pixel(3, 3)[0] > 200);

    let train = read_voc(common::fixture("voc-xml"), VocSplit::Train).unwrap();
    assert_eq!(train.len(), 2);
}

#[test]
fn voc_xml_malformed() {
    // No <object>.
    let tmp = voc_copy();
    std::fs::write(
        tmp.path().join("Annotations/000002.xml"),
        "<annotation><filename>000002.jpg</filename></annotation>",
    )
    .unwrap();
    let e = read_voc(tmp.path(), VocSplit::Train)
        .unwrap_err()
        .to_string();
    assert!(e.contains("000002.xml") && e.contains("no <object>"), "{e}");

    // Unknown class name, with the line of the object.
    let tmp = voc_copy();
    std::fs::write(
        tmp.path().join("Annotations/000002.xml"),
        "<annotation>\n<object><name>dog</name></object>\n<object><name>unicorn</name></object>\n</annotation>",
    )
    .unwrap();
    match read_voc(tmp.path(), VocSplit::Train) {
        Err(e @ DataError::UnknownClass { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("000002.xml:line 3") && msg.contains("unicorn"),
                "{msg}"
            );
        }
        other => panic!("expected UnknownClass, got {other:?}"),
    }

    // Broken XML.
    let tmp = voc_copy();
    std::fs::write(
        tmp.path().join("Annotations/000001.xml"),
        "<annotation><object>",
    )
    .unwrap();
    let e = read_voc(tmp.path(), VocSplit::Train).unwrap_err();
    assert!(matches!(e, DataError::Xml { .. }), "{e}");
    assert!(e.to_string().contains("000001.xml"), "{e}");

    // Missing image.
    let tmp = voc_copy();
    std::fs::remove_file(tmp.path().join("JPEGImages/000003.jpg")).unwrap();
    match read_voc(tmp.path(), VocSplit::Val) {
        Err(DataError::MissingImage { image, listed_in }) => {
            assert!(image.ends_with("JPEGImages/000003.jpg"));
            assert!(listed_in.ends_with("ImageSets/Main/val.txt"));
        }
        other => panic!("expected MissingImage, got {other:?}"),
    }

    // Corrupt image: reading the labels works, decoding names the file.
    let tmp = voc_copy();
    std::fs::write(tmp.path().join("JPEGImages/000001.jpg"), b"not a jpeg").unwrap();
    let data = read_voc(tmp.path(), VocSplit::Train).unwrap();
    let e = data.load_image(0).unwrap_err().to_string();
    assert!(e.contains("000001.jpg"), "{e}");
}

#[test]
fn voc_class_lists_malformed() {
    // Without Annotations/, the per-class lists are read; a bad value names file and line.
    let tmp = tempfile::tempdir().unwrap();
    let main = tmp.path().join("ImageSets/Main");
    std::fs::create_dir_all(&main).unwrap();
    std::fs::create_dir_all(tmp.path().join("JPEGImages")).unwrap();
    std::fs::write(main.join("train.txt"), "a\nb\n").unwrap();
    for c in VOC_CLASSES {
        std::fs::write(main.join(format!("{c}_train.txt")), "a -1\nb  0\n").unwrap();
    }
    std::fs::write(main.join("dog_train.txt"), "a 1\nb 2\n").unwrap();
    let e = read_voc(tmp.path(), VocSplit::Train)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("dog_train.txt:line 2") && e.contains("\"2\""),
        "{e}"
    );

    std::fs::write(main.join("dog_train.txt"), "a 1\n").unwrap();
    let e = read_voc(tmp.path(), VocSplit::Train)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("dog_train.txt") && e.contains("image id b"),
        "{e}"
    );

    std::fs::write(main.join("dog_train.txt"), "a 1\nb 0\n").unwrap();
    for id in ["a", "b"] {
        std::fs::write(tmp.path().join(format!("JPEGImages/{id}.jpg")), b"").unwrap();
    }
    let d = read_voc(tmp.path(), VocSplit::Train).unwrap();
    assert_eq!(d.full_labels().get(0, class("dog")), Label::Positive);
    // 0 (difficult only) is negative.
    assert_eq!(d.full_labels().get(1, class("dog")), Label::Negative);
}

#[test]
fn voc2007_shared_lists() {
    let Some(voc) = common::shared("data/voc2007-trainval") else {
        return;
    };
    let val = read_voc(&voc, VocSplit::Val).unwrap();
    assert_eq!(val.len(), 2508);
    let trainval = read_voc(&voc, VocSplit::Trainval).unwrap();
    assert_eq!(trainval.len(), 5008);
    // labels.csv holds the same labels (0 = difficult only, counted negative).
    let text = std::fs::read_to_string(voc.join("labels.csv")).unwrap();
    let mut rows = std::collections::HashMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let v: Vec<i8> = f[2..]
            .iter()
            .map(|x| if *x == "1" { 1 } else { -1 })
            .collect();
        rows.insert(f[0].to_string(), v);
    }
    for (n, p) in trainval.image_paths().iter().enumerate() {
        let id = p.file_stem().unwrap().to_str().unwrap();
        assert_eq!(trainval.full_labels().row(n), &rows[id][..], "image {id}");
    }
    let img = trainval.load_image(0).unwrap();
    assert!(img.width().max(img.height()) == 256);
}

#[test]
fn coco2017_sample() {
    let Some(coco) = common::shared("data/coco2017-128") else {
        return;
    };
    let json = coco.join("annotations/instances_train2017.json");
    let data = read_coco(&json, coco.join("train2017")).unwrap();
    assert_eq!(data.len(), 128);
    assert_eq!(data.classes().len(), 80);
    assert_eq!(data.classes()[0], "person");
    assert_eq!(data.classes()[79], "toothbrush");
    let stats = data.full_labels().stats();
    // 71 categories occur; 2 images have no annotation and are all-negative rows.
    assert_eq!(
        stats.positives_per_class.iter().filter(|&&n| n > 0).count(),
        71
    );
    assert_eq!(
        (0..128)
            .filter(|&n| data.full_labels().row(n).iter().all(|&v| v == -1))
            .count(),
        2
    );
    assert!(data.full_labels().is_fully_known());
    // Images stay in JSON order.
    assert!(data.image_paths()[0].ends_with("000000000009.jpg"));
    // Image 9 has bowls (51), broccoli (56), oranges (55) in COCO: category ids 51, 56, 55 ->
    // indices 45, 50, 49.
    for c in [45, 49, 50] {
        assert_eq!(data.full_labels().get(0, c), Label::Positive, "class {c}");
    }
    assert_eq!(
        data.load_image(0)
            .unwrap()
            .width()
            .max(data.load_image(0).unwrap().height()),
        320
    );

    // Truncated JSON: a Json error naming the file (and its line/column).
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&json).unwrap();
    let cut = tmp.path().join("cut.json");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = read_coco(&cut, coco.join("train2017")).unwrap_err();
    assert!(matches!(e, DataError::Json { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("cut.json") && msg.contains("line"), "{msg}");
}

#[test]
fn coco_malformed() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("a.jpg"), b"").unwrap();
    let json = tmp.path().join("i.json");
    let write = |s: &str| std::fs::write(&json, s).unwrap();
    write(
        r#"{"images":[{"id":1,"file_name":"a.jpg"},{"id":2,"file_name":"b.jpg"}],
           "annotations":[],"categories":[{"id":3,"name":"x"}]}"#,
    );
    match read_coco(&json, tmp.path()) {
        Err(DataError::MissingImage { image, .. }) => assert!(image.ends_with("b.jpg")),
        other => panic!("expected MissingImage, got {other:?}"),
    }
    write(
        r#"{"images":[{"id":1,"file_name":"a.jpg"}],
           "annotations":[{"image_id":1,"category_id":3},{"image_id":1,"category_id":9}],
           "categories":[{"id":3,"name":"x"}]}"#,
    );
    let e = read_coco(&json, tmp.path()).unwrap_err().to_string();
    assert!(e.contains("annotations[1].category_id"), "{e}");
    write(
        r#"{"images":[{"id":1,"file_name":"a.jpg"}],"annotations":[],"categories":[{"id":3,"name":"x"}]}"#,
    );
    let d = read_coco(&json, tmp.path()).unwrap();
    assert_eq!(d.full_labels().values(), &[-1]);
}

#[test]
fn vg_format() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    std::fs::create_dir_all(p.join("VG_100K")).unwrap();
    for f in ["1.jpg", "2.jpg"] {
        std::fs::write(p.join("VG_100K").join(f), b"").unwrap();
    }
    std::fs::write(p.join("list.txt"), "1.jpg\n2.jpg\n").unwrap();
    std::fs::write(
        p.join("labels.json"),
        r#"{"1.jpg": [0, 2], "2.jpg": [], "3.jpg": [1]}"#,
    )
    .unwrap();
    std::fs::write(p.join("names.txt"), "man\nshirt\ntree\n").unwrap();
    let d = read_vg(
        p.join("list.txt"),
        p.join("labels.json"),
        p.join("names.txt"),
        p.join("VG_100K"),
    )
    .unwrap();
    assert_eq!(d.classes(), &["man", "shirt", "tree"]);
    assert_eq!(d.full_labels().values(), &[1, -1, 1, -1, -1, -1]);
    // Class names as a JSON object name -> index.
    std::fs::write(p.join("names.json"), r#"{"tree": 2, "man": 0, "shirt": 1}"#).unwrap();
    let d2 = read_vg(
        p.join("list.txt"),
        p.join("labels.json"),
        p.join("names.json"),
        p.join("VG_100K"),
    )
    .unwrap();
    assert_eq!(d2.classes(), d.classes());

    // An index out of range (label count > class count) names the key.
    std::fs::write(p.join("labels.json"), r#"{"1.jpg": [0, 3], "2.jpg": []}"#).unwrap();
    let e = read_vg(
        p.join("list.txt"),
        p.join("labels.json"),
        p.join("names.txt"),
        p.join("VG_100K"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("labels.json") && e.contains("\"1.jpg\"") && e.contains("index 3"),
        "{e}"
    );
    // An image without labels names the list line.
    std::fs::write(p.join("labels.json"), r#"{"1.jpg": [0]}"#).unwrap();
    let e = read_vg(
        p.join("list.txt"),
        p.join("labels.json"),
        p.join("names.txt"),
        p.join("VG_100K"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("list.txt:line 2"), "{e}");
}

#[test]
fn manifests() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    std::fs::create_dir_all(p.join("img")).unwrap();
    for f in ["a.png", "b.png"] {
        image::RgbImage::new(2, 2)
            .save(p.join("img").join(f))
            .unwrap();
    }
    // CSV with full labels.
    std::fs::write(
        p.join("m.csv"),
        "image,cat,dog\nimg/a.png,1,-1\nimg/b.png,-1,1\n",
    )
    .unwrap();
    let m = read_manifest(p.join("m.csv"), None).unwrap();
    assert!(m.partial.is_none());
    assert_eq!(m.dataset.full_labels().values(), &[1, -1, -1, 1]);
    assert_eq!(m.dataset.load_image(1).unwrap().dimensions(), (2, 2));
    // CSV with unknowns = partial labels.
    std::fs::write(
        p.join("m.csv"),
        "image,cat,dog\nimg/a.png,1,0\nimg/b.png,-1,1\n",
    )
    .unwrap();
    let m = read_manifest(p.join("m.csv"), None).unwrap();
    assert_eq!(m.partial.unwrap().values(), &[1, 0, -1, 1]);
    // Label count != class count.
    std::fs::write(
        p.join("m.csv"),
        "image,cat,dog\nimg/a.png,1,0\nimg/b.png,-1\n",
    )
    .unwrap();
    let e = read_manifest(p.join("m.csv"), None).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::LabelCount {
                expected: 2,
                found: 1,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("m.csv:line 3"), "{e}");
    // Bad value.
    std::fs::write(p.join("m.csv"), "image,cat,dog\nimg/a.png,1,yes\n").unwrap();
    let e = read_manifest(p.join("m.csv"), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("m.csv:line 2") && e.contains("dog"), "{e}");
    // Missing image.
    std::fs::write(p.join("m.csv"), "image,cat,dog\nimg/c.png,1,0\n").unwrap();
    assert!(matches!(
        read_manifest(p.join("m.csv"), None),
        Err(DataError::MissingImage { .. })
    ));

    // JSON Lines with names and with values.
    std::fs::write(
        p.join("m.jsonl"),
        "{\"classes\": [\"cat\", \"dog\", \"bird\"]}\n{\"image\": \"img/a.png\", \"labels\": [\"dog\"]}\n{\"image\": \"img/b.png\", \"labels\": [1, 0, -1]}\n",
    )
    .unwrap();
    let m = read_manifest(p.join("m.jsonl"), None).unwrap();
    assert_eq!(m.dataset.full_labels().values(), &[-1, 1, -1, 1, 0, -1]);
    assert!(m.partial.is_some());
    // Unknown class name.
    std::fs::write(
        p.join("m.jsonl"),
        "{\"classes\": [\"cat\"]}\n{\"image\": \"img/a.png\", \"labels\": [\"cow\"]}\n",
    )
    .unwrap();
    match read_manifest(p.join("m.jsonl"), None) {
        Err(e @ DataError::UnknownClass { .. }) => {
            assert!(e.to_string().contains("m.jsonl:line 2"), "{e}")
        }
        other => panic!("expected UnknownClass, got {other:?}"),
    }
    // Label count != class count.
    std::fs::write(
        p.join("m.jsonl"),
        "{\"classes\": [\"cat\"]}\n{\"image\": \"img/a.png\", \"labels\": [1, 1]}\n",
    )
    .unwrap();
    assert!(matches!(
        read_manifest(p.join("m.jsonl"), None),
        Err(DataError::LabelCount {
            expected: 1,
            found: 2,
            ..
        })
    ));
    // Truncated JSON line.
    std::fs::write(
        p.join("m.jsonl"),
        "{\"classes\": [\"cat\"]}\n{\"image\": \"img/a.png\", \"lab",
    )
    .unwrap();
    let e = read_manifest(p.join("m.jsonl"), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("m.jsonl:line 2") && e.contains("invalid JSON"),
        "{e}"
    );
}

/// Image files that would be trained on silently (a truncated JPEG), read without bound, or hang (a FIFO)
/// are errors that name the file.
#[test]
fn truncated_oversized_and_non_regular_images_are_errors_naming_the_file() {
    use hst_data::datasets::decode_image_file;
    let tmp = tempfile::tempdir().unwrap();
    let jpeg = tmp.path().join("whole.jpg");
    image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 90]))
        .save(&jpeg)
        .unwrap();
    assert_eq!(decode_image_file(&jpeg).unwrap().dimensions(), (64, 48));

    let bytes = std::fs::read(&jpeg).unwrap();
    let cut = tmp.path().join("cut.jpg");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let err = decode_image_file(&cut).unwrap_err().to_string();
    assert!(
        err.contains("cut.jpg") && err.contains("truncated JPEG"),
        "{err}"
    );
    // Padding after the end-of-image marker is not truncation.
    let padded = tmp.path().join("padded.jpg");
    std::fs::write(&padded, [&bytes[..], &[0u8; 64]].concat()).unwrap();
    decode_image_file(&padded).unwrap();

    let err = decode_image_file(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
    #[cfg(unix)]
    {
        let fifo = tmp.path().join("pipe.jpg");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let err = decode_image_file(&fifo).unwrap_err().to_string();
            assert!(
                err.contains("pipe.jpg") && err.contains("not a regular file"),
                "{err}"
            );
        }
    }
    let err = decode_image_file(&tmp.path().join("absent.png"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.png"), "{err}");
}

/// A manifest or label file that is not UTF-8 names the line and column of the first bad byte.
#[test]
fn non_utf8_text_files_name_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    image::RgbImage::new(4, 4)
        .save(tmp.path().join("a.png"))
        .unwrap();
    let manifest = tmp.path().join("m.csv");
    std::fs::write(&manifest, b"image,cat,dog\na.png,1,-1\n\xe9t\xe9.png,0,1\n").unwrap();
    let err = read_manifest(&manifest, None).unwrap_err().to_string();
    assert!(
        err.contains("m.csv") && err.contains("line 3") && err.contains("UTF-8"),
        "{err}"
    );
    let labels = tmp.path().join("l.csv");
    std::fs::write(&labels, b"1,0\n0,\xff1\n").unwrap();
    let err = hst_data::label_file::read_label_csv(&labels)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("l.csv") && err.contains("line 2") && err.contains("column 3"),
        "{err}"
    );
}
