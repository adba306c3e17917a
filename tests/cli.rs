//! Integration tests of the `hst` binary: argument errors (exit code and message), the partial-label protocol
//! against the shared fixtures, dataset export, and a tiny end-to-end train → eval → predict → report.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hst_data::label_file::read_label_csv;
use hst_data::{EmbeddedConfig, MultiLabelSource, PartialLabels};

#[path = "support/tiny.rs"]
mod tiny;
use tiny::TINY;

fn hst<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hst"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the hst binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `hst args`, asserts success and returns stdout.
fn ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = hst(args);
    assert!(
        out.status.success(),
        "hst {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs `hst args`, asserts a non-zero exit and that stderr contains each of `needles`; returns stderr.
fn fails<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S], needles: &[&str]) -> String {
    let out = hst(args);
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "hst {args:?} should fail but exited with {}:\nstdout: {}\nstderr: {stderr}",
        out.status,
        text(&out.stdout)
    );
    assert_ne!(out.status.code(), None, "hst {args:?} was killed: {stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "hst {args:?}: stderr lacks {needle:?}:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("panicked"),
        "hst {args:?} panicked instead of reporting an error:\n{stderr}"
    );
    stderr
}

/// A fresh temporary folder for one test.
fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hst-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[path = "support/shared.rs"]
mod support;

/// `../shared`, or `None` after a counted skip note; a panic under CI (see `tests/support/shared.rs`).
fn shared() -> Option<PathBuf> {
    support::shared("")
}

/// Trains the tiny configuration into `dir` and returns stdout.
fn tiny_run(dir: &Path) -> String {
    let mut args = vec![
        "train".to_string(),
        "--out".into(),
        dir.display().to_string(),
    ];
    for s in TINY {
        args.push("--set".into());
        args.push(s.to_string());
    }
    ok(&args)
}

#[test]
fn argument_errors_exit_non_zero_with_a_clear_message() {
    fails(&["frobnicate"], &["unrecognized subcommand", "frobnicate"]);
    fails(
        &["train", "--preset", "nope"],
        &["unknown preset `nope`", "voc-lite0", "embedded"],
    );
    fails(
        &["train", "--set", "epochz=3"],
        &["unknown key `epochz`", "epochs"],
    );
    fails(
        &["train", "--set", "optimizer.lrr=0.1"],
        &["optimizer.lrr", "lr"],
    );
    fails(&["train", "--set", "epochs"], &["`epochs`", "key=value"]);
    fails(&["train", "--set", "epochs=many"], &["many"]);
    fails(&["train", "--resume"], &["--out"]);
    fails(
        &["train", "--config", "/nonexistent/hst-config.json"],
        &["/nonexistent/hst-config.json"],
    );
    fails(&["predict", "--run", "/nonexistent"], &["<IMAGES>"]);
}

#[test]
fn a_backend_that_is_not_compiled_in_is_refused() {
    if cfg!(feature = "cuda") {
        return;
    }
    let dir = temp("nocuda");
    let out = dir.join("run");
    let stderr = fails(
        &[
            "--backend",
            "cuda",
            "train",
            "--set",
            "data.source.train_images=16",
            "--set",
            "data.source.test_images=8",
            "--out",
            out.to_str().unwrap(),
        ],
        &["not compiled", "--features cuda"],
    );
    assert!(
        !out.exists(),
        "a refused run must not create its folder: {stderr}"
    );
    fails(&["--backend", "cuda", "eval", "--run", "/nonexistent"], &[]);
    let backends = ok(&["backends"]);
    assert!(
        backends.contains("flex") && backends.contains("ok"),
        "{backends}"
    );
    assert!(
        backends.contains("cuda") && backends.contains("not compiled"),
        "{backends}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn labels_make_rejects_a_proportion_outside_zero_one() {
    let dir = temp("proportion");
    let out = dir.join("p.csv");
    // `--proportion=-0.1`: clap takes `--proportion -0.1` for an unknown flag `-0`.
    for p in ["1.5", "-0.1"] {
        fails(
            &[
                "labels",
                "make",
                &format!("--proportion={p}"),
                "--out",
                out.to_str().unwrap(),
            ],
            &["--proportion must be in [0, 1]", p],
        );
    }
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn predict_and_eval_name_the_missing_file_of_a_run_folder() {
    let dir = temp("missing");
    let run = dir.join("no-such-run");
    let run_s = run.to_str().unwrap();
    fails(
        &["predict", "--run", run_s, "image.png"],
        &[&format!("{run_s}/config.json")],
    );
    fails(
        &["eval", "--run", run_s],
        &[&format!("{run_s}/config.json")],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn eval_reports_a_corrupt_or_missing_checkpoint() {
    let dir = temp("corrupt");
    let run = dir.join("run");
    tiny_run(&run);
    let ckpt = run.join("checkpoints");
    let run_s = run.to_str().unwrap();
    std::fs::write(ckpt.join("best.ckpt"), b"this is not a checkpoint").unwrap();
    fails(&["eval", "--run", run_s], &["best.ckpt", "checkpoint"]);
    let last = std::fs::read(ckpt.join("last.ckpt")).unwrap();
    std::fs::write(ckpt.join("last.ckpt"), &last[..last.len() / 2]).unwrap();
    fails(
        &["eval", "--run", run_s, "--checkpoint", "last"],
        &["last.ckpt", "truncated"],
    );
    std::fs::remove_file(ckpt.join("last.ckpt")).unwrap();
    fails(
        &["predict", "--run", run_s, "--checkpoint", "last", "x.png"],
        &["last.ckpt"],
    );
    std::fs::remove_file(run.join("constants.json")).unwrap();
    fails(&["eval", "--run", run_s], &["constants.json"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn labels_make_reproduces_the_reference_protocol_on_a_small_csv() {
    // The first 4×5 uniforms of numpy's MT19937 seeded with 0 (fixtures/partial-labels/meta.json): at p = 0.5
    // the entries (0,4), (1,1), (1,4), (2,4), (3,0), (3,1) are kept.
    let dir = temp("small");
    let full = dir.join("full.csv");
    let rows = ["1,-1,1,-1,1", "-1,1,-1,1,-1", "1,1,-1,-1,1", "-1,-1,1,1,-1"];
    std::fs::write(&full, rows.join("\n") + "\n").unwrap();
    let out = dir.join("p50.csv");
    let stdout = ok(&[
        "labels",
        "make",
        "--full",
        full.to_str().unwrap(),
        "--proportion",
        "0.5",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(stdout.contains("4 images x 5 classes"), "{stdout}");
    let got = read_label_csv(&out).unwrap().labels;
    let expected: [[i8; 5]; 4] = [
        [0, 0, 0, 0, 1],
        [0, 1, 0, 0, -1],
        [0, 0, 0, 0, 1],
        [-1, -1, 0, 0, 0],
    ];
    assert_eq!(got.values(), expected.concat().as_slice());
    // The same file with seed 1 differs.
    let other = dir.join("seed1.csv");
    ok(&[
        "labels",
        "make",
        "--full",
        full.to_str().unwrap(),
        "--proportion",
        "0.5",
        "--seed",
        "1",
        "--out",
        other.to_str().unwrap(),
    ]);
    assert_ne!(read_label_csv(&other).unwrap().labels, got);
    // A value outside {-1, 0, 1} is an error naming the file and the line.
    std::fs::write(&full, "1,-1\n-1,2\n").unwrap();
    fails(
        &[
            "labels",
            "make",
            "--full",
            full.to_str().unwrap(),
            "--proportion",
            "0.5",
            "--out",
            out.to_str().unwrap(),
        ],
        &["full.csv", "line 2"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn labels_make_matches_the_voc2007_fixture() {
    let Some(shared) = shared() else { return };
    let fixtures = shared.join("fixtures/partial-labels");
    let dir = temp("voc-p30");
    let out = dir.join("p30.csv");
    ok(&[
        "labels".as_ref(),
        "make".as_ref(),
        "--full".as_ref(),
        fixtures.join("voc2007-train-full.csv").as_os_str(),
        "--proportion".as_ref(),
        "0.3".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    // The fixture has a header `image_id,aeroplane,…` and an id column; the output has neither.
    let expected = read_label_csv(fixtures.join("voc2007-train-p30.csv")).unwrap();
    assert_eq!(expected.labels.images(), 2500);
    assert_eq!(expected.labels.classes(), 20);
    assert_eq!(
        expected.ids.as_ref().map(|ids| ids[0].as_str()),
        Some("000012")
    );
    assert_eq!(
        expected.class_names.as_ref().map(|c| c[0].as_str()),
        Some("aeroplane")
    );
    let got = read_label_csv(&out).unwrap();
    assert_eq!(got.labels.images(), 2500);
    let differing = got
        .labels
        .values()
        .iter()
        .zip(expected.labels.values())
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        differing, 0,
        "{differing} entries differ from voc2007-train-p30.csv"
    );
    // `labels inspect` reads the fixture's header and reports its known fraction (meta.json: 0.30256).
    let stdout = ok(&[
        "labels".as_ref(),
        "inspect".as_ref(),
        fixtures.join("voc2007-train-p30.csv").as_os_str(),
    ]);
    assert!(
        stdout.contains("2500 images x 20 classes") && stdout.contains("known fraction 0.3026"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn labels_make_without_a_file_uses_the_configured_training_set() {
    let dir = temp("embedded-labels");
    let out = dir.join("p40.csv");
    ok(&[
        "labels",
        "make",
        "--set",
        "data.source.train_images=100",
        "--proportion",
        "0.4",
        "--seed",
        "7",
        "--out",
        out.to_str().unwrap(),
    ]);
    let data = EmbeddedConfig::new()
        .with_train_images(100)
        .with_test_images(0)
        .load()
        .unwrap();
    let expected = PartialLabels::from_protocol(data.train.full_labels().clone(), 0.4, 7);
    assert_eq!(&read_label_csv(&out).unwrap().labels, expected.partial());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn export_dataset_writes_pngs_and_manifests() {
    let dir = temp("export");
    let stdout = ok(&["export-dataset", "--out", dir.to_str().unwrap()]);
    assert!(
        stdout.contains("train.csv") && stdout.contains("test.csv"),
        "{stdout}"
    );
    for (split, count) in [("train", 4000), ("test", 2000)] {
        let pngs = std::fs::read_dir(dir.join(split))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "png")
            })
            .count();
        assert_eq!(pngs, count, "{split}");
        let csv = std::fs::read_to_string(dir.join(format!("{split}.csv"))).unwrap();
        assert_eq!(
            csv.lines().count(),
            count + 1,
            "{split}.csv: header + one row per image"
        );
    }
    // The first test image decodes as the 64×64 render with the labels of the manifest.
    let data = EmbeddedConfig::new()
        .with_train_images(0)
        .with_test_images(1)
        .load()
        .unwrap();
    let png = image::open(dir.join("test/000000.png"))
        .unwrap()
        .into_rgb8();
    assert_eq!(png, data.test.render(0));
    let csv = std::fs::read_to_string(dir.join("test.csv")).unwrap();
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(row[0], "test/000000.png");
    let labels: Vec<i8> = row[1..].iter().map(|v| v.parse().unwrap()).collect();
    assert_eq!(labels, data.test.full_labels().row(0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tiny_train_then_eval_predict_and_report() {
    let dir = temp("e2e");
    let run = dir.join("run");
    let run_s = run.to_str().unwrap().to_string();

    // --print-config applies the overrides.
    let json = ok(&[
        "train",
        "--print-config",
        "--set",
        "epochs=3",
        "--set",
        "optimizer.lr=0.5",
    ]);
    let config: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(config["epochs"], 3);
    assert_eq!(config["optimizer"]["lr"], 0.5);

    let stdout = tiny_run(&run);
    assert!(stdout.contains("best mAP"), "{stdout}");
    for f in [
        "config.json",
        "constants.json",
        "metrics.csv",
        "metrics.jsonl",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "report/map.png",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let logs: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(logs.len(), 2, "two epochs logged");
    let best_map = logs
        .iter()
        .map(|l| l["metrics"]["map"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);

    // eval of best.ckpt recomputes the best epoch's test mAP.
    let text_out = ok(&["eval", "--run", &run_s]);
    assert!(
        text_out.contains("20 test images") && text_out.contains("mAP"),
        "{text_out}"
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&ok(&["eval", "--run", &run_s, "--json"])).unwrap();
    let map = metrics["map"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&map), "{map}");
    assert_eq!(metrics["images"], 20);
    assert!(
        (map - best_map).abs() < 1e-6,
        "eval mAP {map} vs best logged mAP {best_map}"
    );

    // predict on exported test images.
    let export = dir.join("export");
    ok(&["export-dataset", "--out", export.to_str().unwrap()]);
    let images = [
        export.join("test/000000.png"),
        export.join("test/000001.png"),
    ];
    let mut args: Vec<String> = vec!["predict".into(), "--run".into(), run_s.clone()];
    args.extend(images.iter().map(|p| p.display().to_string()));
    let table = ok(&args);
    let classes = EmbeddedConfig::new()
        .with_train_images(0)
        .with_test_images(0)
        .load()
        .unwrap()
        .classes()
        .to_vec();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    for (line, image) in lines.iter().zip(&images) {
        let (path, shown) = line.split_once('\t').expect("path<TAB>labels");
        assert_eq!(path, image.display().to_string());
        let top = shown.split(", ").next().unwrap();
        let (class, p) = top.rsplit_once(' ').unwrap();
        assert!(classes.iter().any(|c| c == class), "{class} is not a class");
        let p: f32 = p.parse().unwrap();
        assert!((0.0..=1.0).contains(&p), "{p}");
    }
    args.insert(1, "--json".into());
    let predictions: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
    let first = &predictions[0]["scores"];
    assert_eq!(first.as_array().unwrap().len(), 20);
    let probs: Vec<f64> = first
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[1].as_f64().unwrap())
        .collect();
    assert!(probs.windows(2).all(|w| w[0] >= w[1]), "sorted: {probs:?}");

    // report redraws the plots from metrics.jsonl.
    std::fs::remove_dir_all(run.join("report")).unwrap();
    let stdout = ok(&["report", "--run", &run_s]);
    assert!(stdout.contains("map.png"), "{stdout}");
    assert!(run.join("report/map.png").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Bad configuration values and data that cannot train: exit code 1, the key or the cause named, no panic,
/// and nothing written to the run folder.
#[test]
fn train_refuses_bad_values_before_writing_anything() {
    let dir = temp("refused");
    let out = dir.join("run");
    let cases: &[(&[&str], &str)] = &[
        (
            &["data.transform.image_size=0"],
            "data.transform.image_size",
        ),
        (
            &["data.transform.image_size=60000"],
            "data.transform.image_size",
        ),
        (
            &["data.transform.scale_size=0"],
            "data.transform.scale_size",
        ),
        (
            &["data.transform.crop_sizes=[]"],
            "data.transform.crop_sizes",
        ),
        (
            &["data.transform.crop_sizes=[1000]"],
            "data.transform.crop_sizes",
        ),
        (
            &["data.transform.flip_probability=5"],
            "data.transform.flip_probability",
        ),
        (
            &["model.trunk.frozen_stages=5"],
            "model.trunk.frozen_stages",
        ),
        (
            &["model.trunk.frozen_stages=99"],
            "model.trunk.frozen_stages",
        ),
        (&["model.trunk.base_width=0"], "model.trunk.base_width"),
        (
            &["model.trunk.kind.ResNet.groups=0"],
            "model.trunk.kind.ResNet.groups",
        ),
        (
            &["model.trunk.kind.ResNet.layers=[0,0,0,0]"],
            "model.trunk.kind.ResNet.layers",
        ),
        (&["model.sarl.feature_dim=0"], "model.sarl.feature_dim"),
        (&["model.cst.prototypes=0"], "model.cst.prototypes"),
        (&["optimizer.beta1=2"], "optimizer.beta1"),
        (&["optimizer.weight_decay=-1e6"], "optimizer.weight_decay"),
        // Zero steps: fewer training images than one batch.
        (&["data.source.train_images=8"], "no training step"),
        (&["data.source.test_images=0"], "test set is empty"),
        // A class without a known positive makes the first step NaN unless guarded.
        (
            &["data.guard_adjacency_nan=false"],
            "data.guard_adjacency_nan=true",
        ),
    ];
    for (sets, needle) in cases {
        let mut args = vec![
            "train".to_string(),
            "--out".into(),
            out.display().to_string(),
        ];
        for s in TINY.iter().chain(sets.iter()) {
            args.push("--set".into());
            args.push(s.to_string());
        }
        let out_status = hst(&args);
        let stderr = text(&out_status.stderr);
        assert_eq!(out_status.status.code(), Some(1), "{sets:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{sets:?}: stderr lacks {needle:?}:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{sets:?}: {stderr}");
        assert!(!out.exists(), "{sets:?} wrote {}", out.display());
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// SIGTERM (a scheduler's or `kill`'s stop) saves a checkpoint after the current batch, like Ctrl-C, and the
/// run resumes from it.
#[cfg(unix)]
#[test]
fn sigterm_saves_a_checkpoint_that_resumes() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let dir = temp("sigterm");
    let run = dir.join("run");
    let mut args = vec![
        "train".to_string(),
        "--out".into(),
        run.display().to_string(),
    ];
    for s in TINY.iter().chain(["epochs=500"].iter()) {
        args.push("--set".into());
        args.push(s.to_string());
    }
    let child = Command::new(env!("CARGO_BIN_EXE_hst"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first epoch's checkpoint, then stop the run mid-training.
    let started = Instant::now();
    while !run.join("checkpoints/last.ckpt").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint after 120 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: sends a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, text(&out.stderr));
    assert!(stdout.contains("interrupted; resume with"), "{stdout}");
    let resumed = ok(&[
        "train",
        "--resume",
        "--out",
        &run.display().to_string(),
        "--set",
        "epochs=1",
    ]);
    assert!(!resumed.contains("panicked"), "{resumed}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A user's manifest with one class: refused before any work while IST (which learns class pairs) is on,
/// trained and evaluated with `model.ablation.ist=false`; never a panic.
#[test]
fn a_one_class_manifest_is_refused_with_ist_and_trains_without() {
    let dir = temp("one-class");
    for (split, n) in [("train", 20), ("test", 6)] {
        let mut csv = String::from("image,cat\n");
        for i in 0..n {
            let name = format!("{split}-{i}.png");
            let shade = (i * 37 % 256) as u8;
            image::RgbImage::from_fn(40, 40, |x, y| {
                image::Rgb([shade, (x * 6) as u8, (y * 6) as u8])
            })
            .save(dir.join(&name))
            .unwrap();
            csv.push_str(&format!("{name},{}\n", if i % 2 == 0 { 1 } else { -1 }));
        }
        std::fs::write(dir.join(format!("{split}.csv")), csv).unwrap();
    }
    let words = dir.join("words.npy");
    hst_data::ClassEmbeddings::new(1, 4, vec![0.1, -0.2, 0.3, 0.4])
        .unwrap()
        .write_npy(&words)
        .unwrap();
    let source = format!(
        r#"data.source={{"kind":"manifest","train":"{}","test":"{}"}}"#,
        dir.join("train.csv").display(),
        dir.join("test.csv").display()
    );
    let word_vectors = format!(
        r#"data.word_vectors={{"kind":"npy","path":"{}"}}"#,
        words.display()
    );
    let out = dir.join("run");
    let args = |extra: &[&str]| {
        let mut args = vec![
            "train".to_string(),
            "--out".into(),
            out.display().to_string(),
        ];
        let sets = TINY
            .iter()
            .filter(|s| !s.starts_with("data.source."))
            .map(|s| s.to_string())
            .chain([source.clone(), word_vectors.clone(), "epochs=1".into()])
            .chain(extra.iter().map(|s| s.to_string()));
        for s in sets {
            args.push("--set".into());
            args.push(s);
        }
        args
    };
    let refused = hst(&args(&[]));
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("1 class(es)") && stderr.contains("model.ablation.ist=false"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.exists(), "a refused run wrote {}", out.display());

    let trained = hst(&args(&["model.ablation.ist=false", "batch_size=4"]));
    let stderr = text(&trained.stderr);
    assert!(trained.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 1, "{metrics}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Partial labels from a file that does not fit the training set, and word vectors from a `.gz` that is not
/// gzip: refused before any work, the message naming the file.
#[test]
fn unfit_label_and_word_vector_files_are_named() {
    let dir = temp("unfit-files");
    let labels = dir.join("partial.csv");
    std::fs::write(&labels, "1,0,-1\n0,1,0\n").unwrap();
    let fake_gz = dir.join("glove.txt.gz");
    std::fs::write(&fake_gz, b"\x1f\x8b\x08\x00not really gzip").unwrap();
    let out = dir.join("run");
    let cases = [
        (
            format!("data.partial_labels={}", labels.display()),
            labels.clone(),
        ),
        (
            format!(
                r#"data.word_vectors={{"kind":"glove","path":"{}"}}"#,
                fake_gz.display()
            ),
            fake_gz.clone(),
        ),
    ];
    for (set, file) in cases {
        let mut args = vec![
            "train".to_string(),
            "--out".into(),
            out.display().to_string(),
        ];
        for s in TINY.iter().map(|s| s.to_string()).chain([set.clone()]) {
            args.push("--set".into());
            args.push(s);
        }
        let output = hst(&args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{set}: {stderr}");
        assert!(
            stderr.contains(&file.display().to_string()),
            "{set}: the message does not name {}:\n{stderr}",
            file.display()
        );
        assert!(!stderr.contains("panicked"), "{set}: {stderr}");
        assert!(!out.exists(), "{set} wrote {}", out.display());
    }
    std::fs::remove_dir_all(&dir).ok();
}
