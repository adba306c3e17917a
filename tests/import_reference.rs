//! `hst import --reference`: an HST checkpoint as the authors' code saves it becomes a run folder that
//! `hst eval` and `hst predict` use.
//!
//! The test builds that checkpoint itself, in the reference's layout, from the shared fixtures: a PyTorch
//! zip archive (`torch.save` format) holding `{'epoch', 'state_dict', 'best_mAP'}` (the reference's
//! `save_checkpoint`), the state_dict under a `DataParallel` `module.` prefix. In it: the heads of the
//! whole-step fixture (`hst-model-step.safetensors`, D = 96, 20 classes, its `wordFeatures`/`inMatrix`
//! constants and `int64` `num_batches_tracked`) and, as `backbone.*`, the torchvision Bottleneck [1,1,1,1]
//! ResNet of `fixtures/torchvision` (2048 output channels, as the heads expect). After the import, the run's
//! model must reproduce torchvision's `layer4` output on the torchvision fixture's input and the reference's
//! eval-mode scores and pair logits on the whole-step fixture's feature map (1e-4 of each tensor's largest
//! value); then `hst eval` and `hst predict` run on the folder.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hst::backbone::trunk::{BlockKind, ResNetLayout, TrunkConfig};
use hst::burn::backend::Flex;
use hst::burn::prelude::*;
use hst::train::config::DataSource;
use hst::train::trainer::load_run_model;
use hst::train::TrainConfig;
use safetensors::{Dtype, SafeTensors};

const TOLERANCE: f64 = 1e-4;

#[path = "support/shared.rs"]
mod support;

/// `../shared`, or `None` after a counted skip note; a panic under CI (see `tests/support/shared.rs`).
fn shared() -> Option<PathBuf> {
    support::shared("")
}

/// One tensor of a `.safetensors` file as f32 values with its shape.
fn tensor(st: &SafeTensors<'_>, name: &str) -> (Vec<f32>, Vec<usize>) {
    let view = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("fixture tensor {name}: {e}"));
    assert_eq!(view.dtype(), Dtype::F32, "{name}");
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (values, view.shape().to_vec())
}

/// A tensor of the checkpoint being built: float32 or int64 values, row-major.
enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// Writes `torch.save`'s zip format (PyTorch ≥ 1.6): `archive/data.pkl` (pickle protocol 2) with one
/// `archive/data/<n>` storage per tensor.
#[derive(Default)]
struct TorchSave {
    pickle: Vec<u8>,
    storages: Vec<Vec<u8>>,
}

impl TorchSave {
    fn op(&mut self, op: u8) {
        self.pickle.push(op);
    }

    fn string(&mut self, s: &str) {
        self.op(b'X'); // BINUNICODE
        self.pickle
            .extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.pickle.extend_from_slice(s.as_bytes());
    }

    fn int(&mut self, v: usize) {
        self.op(b'J'); // BININT
        self.pickle
            .extend_from_slice(&i32::try_from(v).unwrap().to_le_bytes());
    }

    fn float(&mut self, v: f64) {
        self.op(b'G'); // BINFLOAT, big-endian
        self.pickle.extend_from_slice(&v.to_be_bytes());
    }

    fn global(&mut self, module: &str, name: &str) {
        self.op(b'c');
        self.pickle
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }

    fn tuple(&mut self, items: &[usize]) {
        self.op(b'(');
        for &i in items {
            self.int(i);
        }
        self.op(b't');
    }

    fn ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.op(b')');
        self.op(b'R');
    }

    /// `torch._utils._rebuild_tensor_v2(storage, 0, shape, strides, False, OrderedDict())`.
    fn tensor(&mut self, values: &Values, shape: &[usize]) {
        let key = self.storages.len().to_string();
        let (storage, bytes, numel): (&str, Vec<u8>, usize) = match values {
            Values::F32(v) => (
                "FloatStorage",
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                v.len(),
            ),
            Values::I64(v) => (
                "LongStorage",
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                v.len(),
            ),
        };
        assert_eq!(numel, shape.iter().product::<usize>());
        self.storages.push(bytes);
        let mut strides = vec![1; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * shape[i + 1];
        }
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.op(b'(');
        self.op(b'(');
        self.string("storage");
        self.global("torch", storage);
        self.string(&key);
        self.string("cpu");
        self.int(numel);
        self.op(b't');
        self.op(b'Q'); // BINPERSID
        self.int(0);
        self.tuple(shape);
        self.tuple(&strides);
        self.op(0x89); // NEWFALSE: requires_grad
        self.ordered_dict();
        self.op(b't');
        self.op(b'R');
    }

    /// `{'epoch': epoch, 'state_dict': OrderedDict(state), 'best_mAP': best}` to `path`.
    fn write(
        mut self,
        path: &Path,
        epoch: usize,
        state: &BTreeMap<String, (Values, Vec<usize>)>,
        best: f64,
    ) {
        self.pickle.extend_from_slice(&[0x80, 2]); // PROTO 2
        self.op(b'}');
        self.op(b'(');
        self.string("epoch");
        self.int(epoch);
        self.string("state_dict");
        self.ordered_dict();
        self.op(b'(');
        for (name, (values, shape)) in state {
            self.string(name);
            self.tensor(values, shape);
        }
        self.op(b'u'); // SETITEMS
        self.string("best_mAP");
        self.float(best);
        self.op(b'u');
        self.op(b'.');

        let file = std::fs::File::create(path).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("archive/data.pkl", stored).unwrap();
        zip.write_all(&self.pickle).unwrap();
        for (i, bytes) in self.storages.iter().enumerate() {
            zip.start_file(format!("archive/data/{i}"), stored).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.start_file("archive/byteorder", stored).unwrap();
        zip.write_all(b"little").unwrap();
        zip.start_file("archive/version", stored).unwrap();
        zip.write_all(b"3\n").unwrap();
        zip.finish().unwrap();
    }
}

/// The reference checkpoint of this test: heads from the whole-step fixture, the torchvision trunk as
/// `backbone.*`, everything under `module.`.
fn reference_checkpoint(shared: &Path, path: &Path) {
    let step_bytes =
        std::fs::read(shared.join("fixtures/hst-reference/hst-model-step.safetensors"))
            .expect("the whole-step fixture");
    let step = SafeTensors::deserialize(&step_bytes).unwrap();
    let trunk_bytes =
        std::fs::read(shared.join("fixtures/torchvision/resnet-bottleneck-1111-w4.safetensors"))
            .expect("the torchvision fixture");
    let trunk = SafeTensors::deserialize(&trunk_bytes).unwrap();

    let mut state = BTreeMap::new();
    for name in step.names() {
        let Some(key) = name.strip_prefix("param.") else {
            continue;
        };
        let (values, shape) = tensor(&step, name);
        let values = if key.ends_with("num_batches_tracked") {
            Values::I64(values.iter().map(|&v| v as i64).collect())
        } else {
            Values::F32(values)
        };
        state.insert(format!("module.{key}"), (values, shape));
    }
    for name in trunk.names() {
        if name.starts_with("fc.") {
            continue; // the reference's ResNet has no classifier
        }
        let view = trunk.tensor(name).unwrap();
        let values = match view.dtype() {
            Dtype::F32 => Values::F32(tensor(&trunk, name).0),
            Dtype::I64 => Values::I64(
                view.data()
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
            ),
            other => panic!("{name}: unexpected dtype {other:?}"),
        };
        state.insert(
            format!("module.backbone.{name}"),
            (values, view.shape().to_vec()),
        );
    }
    TorchSave::default().write(path, 12, &state, 81.5);
}

/// The configuration the checkpoint was "trained" with: the whole-step fixture's head sizes on the
/// Bottleneck [1,1,1,1] trunk (width 4 per group), the embedded dataset's 20 classes.
fn config() -> TrainConfig {
    let mut c = TrainConfig::embedded();
    c.model.trunk = TrunkConfig::resnet_layout(
        ResNetLayout::new(BlockKind::Bottleneck, [1, 1, 1, 1]).with_width_per_group(4),
    )
    .with_frozen_stages(3);
    c.model.sarl = c
        .model
        .sarl
        .clone()
        .with_feature_dim(96)
        .with_attention_dim(64)
        .with_output_dim(128)
        .with_pool(false);
    c.model.ist = c.model.ist.clone().with_hidden_dim(64).with_pair_dim(128);
    c.data.source = DataSource::Embedded {
        train_images: 40,
        test_images: 8,
    };
    c.eval_batch_size = 4;
    c
}

fn hst<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hst"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the hst binary runs")
}

fn stdout_of<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = hst(args);
    assert!(
        out.status.success(),
        "hst {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr_of_failure<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = hst(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "hst {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "hst {args:?}: {stderr}");
    stderr
}

/// max |a − b| / max |b|.
fn max_relative(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-30);
    let diff = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()));
    diff / scale
}

fn host<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

fn input<const D: usize>((values, shape): (Vec<f32>, Vec<usize>)) -> Tensor<Flex, D> {
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

#[test]
fn an_authors_checkpoint_becomes_a_run_that_eval_and_predict_use() {
    let Some(shared) = shared() else { return };
    let dir = std::env::temp_dir().join(format!("hst-import-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let checkpoint = dir.join("Checkpoint_Best.pth");
    reference_checkpoint(&shared, &checkpoint);
    let config_file = dir.join("config.json");
    std::fs::write(&config_file, config().to_json()).unwrap();
    let run = dir.join("run");
    let import = |run: &Path, extra: &[&str]| {
        let mut args = vec![
            "import".to_string(),
            "--reference".into(),
            checkpoint.display().to_string(),
            "--config".into(),
            config_file.display().to_string(),
            "--out".into(),
            run.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };

    let said = stdout_of(&import(&run, &[]));
    assert!(
        said.contains("word vectors from the checkpoint")
            && said.contains("adjacency from the checkpoint"),
        "{said}"
    );

    // The run's model is the checkpoint's: trunk against torchvision, heads against the reference.
    let device = Default::default();
    let (_, constants, model) = load_run_model::<Flex>(&run, "best.ckpt", &device).unwrap();
    let step_bytes =
        std::fs::read(shared.join("fixtures/hst-reference/hst-model-step.safetensors")).unwrap();
    let step = SafeTensors::deserialize(&step_bytes).unwrap();
    assert_eq!(
        constants.word_vectors,
        tensor(&step, "input.word_features").0
    );
    let expected_bytes = std::fs::read(
        shared.join("fixtures/torchvision/resnet-bottleneck-1111-w4.expected.safetensors"),
    )
    .unwrap();
    let expected = SafeTensors::deserialize(&expected_bytes).unwrap();
    let layer4 = host(model.trunk.forward(input::<4>(tensor(&expected, "input"))));
    let trunk_error = max_relative(&layer4, &tensor(&expected, "layer4").0);
    assert!(trunk_error <= TOLERANCE, "trunk layer4: {trunk_error:e}");
    let out = model.heads(input::<4>(tensor(&step, "input.feature_map")));
    let scores_error = max_relative(&host(out.logits), &tensor(&step, "eval.scores").0);
    assert!(scores_error <= TOLERANCE, "eval scores: {scores_error:e}");
    let pairs_error = max_relative(
        &host(out.cooccurrence.expect("the IST head")),
        &tensor(&step, "eval.intra_cooc_logits").0,
    );
    assert!(
        pairs_error <= TOLERANCE,
        "eval pair logits: {pairs_error:e}"
    );

    // `hst eval` and `hst predict` use the folder.
    let run_arg = run.display().to_string();
    let eval = stdout_of(&["eval", "--run", &run_arg, "--json"]);
    let metrics: serde_json::Value = serde_json::from_str(&eval).expect("eval --json prints JSON");
    assert_eq!(metrics["images"], 8, "{eval}");
    let image = dir.join("tile.png");
    image::RgbImage::from_fn(64, 64, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 4) as u8, 128])
    })
    .save(&image)
    .unwrap();
    let predicted = stdout_of(&["predict", "--run", &run_arg, &image.display().to_string()]);
    assert!(
        constants
            .classes
            .iter()
            .any(|c| predicted.contains(c.as_str())),
        "{predicted}"
    );

    // An existing run is never overwritten; a checkpoint that does not fit the configuration names the key.
    let err = stderr_of_failure(&import(&run, &[]));
    assert!(err.contains("already holds a run"), "{err}");
    let err = stderr_of_failure(&import(
        &dir.join("run-narrow"),
        &["--set", "model.sarl.feature_dim=32"],
    ));
    assert!(
        err.contains("module.changeChannel.0.weight") && err.contains("Checkpoint_Best.pth"),
        "{err}"
    );
    assert!(!dir.join("run-narrow").join("config.json").exists());
    std::fs::remove_dir_all(&dir).ok();
}
