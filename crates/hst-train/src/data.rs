//! Turning a [`DataConfig`] into datasets, partial labels and word vectors.

use hst_data::datasets::{coco::read_coco, manifest::read_manifest, vg::read_vg, voc::read_voc};
use hst_data::label_file::read_partial_labels;
use hst_data::{
    ClassEmbeddings, EmbeddedConfig, EmbeddedDataset, MultiLabelSource, PartialLabels, WordVectors,
};

use crate::config::{DataConfig, DataSource, WordVectorSource};
use crate::error::TrainError;

/// The data of a run, ready for the trainer.
pub struct RunData {
    /// Training images and full labels.
    pub train: Box<dyn MultiLabelSource>,
    /// Test images and full labels (always fully labelled, as the reference).
    pub test: Box<dyn MultiLabelSource>,
    /// Partial training labels (with the full labels beside them, for pseudo-label statistics).
    pub partial: PartialLabels,
    /// Class-name word vectors, `[classes, dim]`.
    pub word_vectors: ClassEmbeddings,
}

impl RunData {
    /// Class names.
    pub fn classes(&self) -> &[String] {
        self.train.classes()
    }
}

fn config_error(message: String) -> TrainError {
    TrainError::Config(message)
}

/// Load the datasets named by `config`, apply the partial-label protocol (or read the given partial-label
/// file) and build the class word vectors.
pub fn load(config: &DataConfig) -> Result<RunData, TrainError> {
    let mut manifest_partial = None;
    let (train, test): (Box<dyn MultiLabelSource>, Box<dyn MultiLabelSource>) = match &config.source
    {
        DataSource::Embedded {
            train_images,
            test_images,
        } => {
            let data = EmbeddedConfig::new()
                .with_train_images(*train_images)
                .with_test_images(*test_images)
                .load()?;
            (Box::new(data.train), Box::new(data.test))
        }
        DataSource::Voc {
            root,
            train_split,
            test_split,
        } => {
            let split = |s: &str| {
                s.parse()
                    .map_err(|e: String| config_error(format!("data.source: {e}")))
            };
            (
                Box::new(read_voc(root, split(train_split)?)?),
                Box::new(read_voc(root, split(test_split)?)?),
            )
        }
        DataSource::Coco {
            train_annotations,
            train_images,
            test_annotations,
            test_images,
        } => (
            Box::new(read_coco(train_annotations, train_images)?),
            Box::new(read_coco(test_annotations, test_images)?),
        ),
        DataSource::Vg {
            train_list,
            test_list,
            labels,
            class_names,
            images,
        } => (
            Box::new(read_vg(train_list, labels, class_names, images)?),
            Box::new(read_vg(test_list, labels, class_names, images)?),
        ),
        DataSource::Manifest { train, test } => {
            let train = read_manifest(train, None)?;
            let test = read_manifest(test, None)?;
            manifest_partial = train.partial;
            (Box::new(train.dataset), Box::new(test.dataset))
        }
    };
    if train.classes() != test.classes() {
        return Err(config_error(format!(
            "the training and test sets have different classes ({} vs {})",
            train.classes().len(),
            test.classes().len()
        )));
    }
    let full = train.full_labels().clone();
    let partial = if let Some(path) = &config.partial_labels {
        // Errors name the file: a table of another shape, or values that contradict the full labels.
        read_partial_labels(path, full)?
    } else if let Some(partial) = manifest_partial {
        PartialLabels::new(full, partial)?
    } else {
        PartialLabels::from_protocol(full, config.proportion, config.protocol_seed)
    };
    let word_vectors = match &config.word_vectors {
        WordVectorSource::Embedded => {
            if !matches!(config.source, DataSource::Embedded { .. }) {
                return Err(config_error(
                    "data.word_vectors: `embedded` vectors exist only for the embedded dataset; name a GloVe \
                     file ({\"kind\": \"glove\", \"path\": …}) or a .npy matrix"
                        .into(),
                ));
            }
            EmbeddedDataset::class_embeddings()
        }
        WordVectorSource::Glove { path } => {
            WordVectors::read_glove_for(path, train.classes())?.class_embeddings(train.classes())?
        }
        WordVectorSource::Npy { path } => ClassEmbeddings::read_npy(path)?,
    };
    if word_vectors.classes() != train.classes().len() {
        return Err(config_error(format!(
            "the word vectors have {} rows but the dataset has {} classes",
            word_vectors.classes(),
            train.classes().len()
        )));
    }
    Ok(RunData {
        train,
        test,
        partial,
        word_vectors,
    })
}
