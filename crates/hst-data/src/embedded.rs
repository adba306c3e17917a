//! The embedded default dataset: multi-label mosaics of real Fashion-MNIST and Animal-MNIST
//! tiles with structured class co-occurrence, generated on the fly from tiles compiled into the
//! library (no file I/O).
//!
//! Each image is 64×64 RGB: a 2×2 grid of 32×32 cells, 1–4 of which hold a 28×28 tile placed with
//! a 0–4 px jitter, tinted with a random bright colour (and flipped half the time) over a dark,
//! noisy background of random colour. An image first draws a **scene** (beach, city, home, farm,
//! savanna, mountain); each object is drawn from the scene's class priors with probability 0.85
//! and uniformly otherwise, without repeating a class. Labels are the classes of the objects.
//! Train and test images use disjoint tile sets (Fashion-MNIST's train and test files; the first
//! and last tiles of each Animal-MNIST class). See `datasets/README.md`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use burn::config::Config;
use image::RgbImage;
use rayon::prelude::*;

use crate::datasets::manifest::write_manifest_csv;
use crate::datasets::MultiLabelSource;
use crate::embeddings::ClassEmbeddings;
use crate::error::{DataError, Result};
use crate::labels::LabelMatrix;
use crate::rng::SeededRng;

/// The 20 classes: Fashion-MNIST's 10 (renamed to GloVe words), then Animal-MNIST's 10.
pub const EMBEDDED_CLASSES: [&str; 20] = [
    "t-shirt", "trousers", "sweater", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot",
    "bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra",
];

/// The scenes and their class priors `(class index, weight)`.
pub const SCENES: [(&str, &[(usize, f64)]); 6] = [
    (
        "beach",
        &[(0, 3.0), (5, 3.0), (3, 2.0), (8, 1.0), (11, 2.0)],
    ),
    (
        "city",
        &[(6, 3.0), (1, 3.0), (4, 2.0), (7, 3.0), (8, 2.0), (14, 1.0)],
    ),
    (
        "home",
        &[(12, 3.0), (14, 2.0), (2, 3.0), (0, 1.0), (1, 1.0)],
    ),
    (
        "farm",
        &[(13, 3.0), (17, 3.0), (18, 3.0), (14, 1.0), (9, 2.0)],
    ),
    ("savanna", &[(15, 3.0), (16, 3.0), (19, 3.0), (11, 2.0)]),
    (
        "mountain",
        &[(10, 3.0), (4, 2.0), (9, 2.0), (2, 1.0), (11, 1.0)],
    ),
];

/// Probabilities of 1, 2, 3 and 4 objects per image.
const OBJECT_COUNT_WEIGHTS: [f64; 4] = [0.2, 0.35, 0.3, 0.15];
/// Probability that an object comes from the scene's priors rather than uniformly.
const SCENE_PROBABILITY: f64 = 0.85;
/// Side of the images.
pub const EMBEDDED_IMAGE_SIZE: u32 = 64;
const CELL: u32 = 32;
const TILE: u32 = 28;
/// Tiles per class shipped for training and for testing.
pub const TRAIN_TILES_PER_CLASS: usize = 200;
/// Tiles per class shipped for testing.
pub const TEST_TILES_PER_CLASS: usize = 100;

const TRAIN_IMAGES_GZ: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../datasets/tiles-train-images-idx3-ubyte.gz"
));
const TRAIN_LABELS_GZ: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../datasets/tiles-train-labels-idx1-ubyte.gz"
));
const TEST_IMAGES_GZ: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../datasets/tiles-test-images-idx3-ubyte.gz"
));
const TEST_LABELS_GZ: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../datasets/tiles-test-labels-idx1-ubyte.gz"
));
const CLASS_VECTORS_NPY: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../datasets/glove-6B-50d-classes.npy"
));

/// Which half of the embedded dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EmbeddedSplit {
    /// Training images (training tiles).
    Train,
    /// Test images (test tiles).
    Test,
}

impl EmbeddedSplit {
    /// `"train"` or `"test"`.
    pub fn name(self) -> &'static str {
        match self {
            EmbeddedSplit::Train => "train",
            EmbeddedSplit::Test => "test",
        }
    }
}

/// Configuration of the embedded dataset. The defaults are the shipped dataset.
#[derive(Config, Debug)]
pub struct EmbeddedConfig {
    /// Number of training images. Default: 4000.
    #[config(default = 4000)]
    pub train_images: usize,
    /// Number of test images. Default: 2000.
    #[config(default = 2000)]
    pub test_images: usize,
    /// Seed of the generator. Default: 2022.
    #[config(default = 2022)]
    pub seed: u64,
}

impl EmbeddedConfig {
    /// Generates the layouts and labels of both splits (images are drawn on demand).
    ///
    /// # Errors
    /// [`DataError::Invalid`] only if the compiled-in tile files are corrupt.
    pub fn load(&self) -> Result<EmbeddedDataset> {
        let (train_tiles, test_tiles) = shipped_tiles()?;
        let classes: Vec<String> = EMBEDDED_CLASSES.iter().map(|s| s.to_string()).collect();
        Ok(EmbeddedDataset {
            train: EmbeddedImages::generate(
                EmbeddedSplit::Train,
                self.train_images,
                self.seed,
                classes.clone(),
                train_tiles,
            ),
            test: EmbeddedImages::generate(
                EmbeddedSplit::Test,
                self.test_images,
                self.seed,
                classes,
                test_tiles,
            ),
        })
    }
}

/// Both splits of the embedded dataset.
#[derive(Clone, Debug)]
pub struct EmbeddedDataset {
    /// The training split.
    pub train: EmbeddedImages,
    /// The test split.
    pub test: EmbeddedImages,
}

impl EmbeddedDataset {
    /// The shipped dataset: 4,000 training and 2,000 test images, seed 2022.
    ///
    /// # Errors
    /// See [`EmbeddedConfig::load`].
    pub fn load() -> Result<Self> {
        EmbeddedConfig::new().load()
    }

    /// The class names, `[20]`.
    pub fn classes(&self) -> &[String] {
        &self.train.classes
    }

    /// The shipped 50-d GloVe (6B) vectors of the class names, `[20, 50]`.
    pub fn class_embeddings() -> ClassEmbeddings {
        ClassEmbeddings::from_npy_bytes(
            CLASS_VECTORS_NPY,
            Path::new("embedded:glove-6B-50d-classes.npy"),
        )
        .expect("the shipped class vectors are a valid .npy file")
    }

    /// Writes both splits as PNG files with CSV manifests: `dir/train/000000.png`, …,
    /// `dir/train.csv`, `dir/test/…`, `dir/test.csv` (readable with
    /// [`crate::datasets::manifest::read_manifest`]).
    ///
    /// # Errors
    /// [`DataError::Io`] / [`DataError::Image`] on write failure.
    pub fn export(&self, dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        let dir = dir.as_ref();
        Ok(vec![self.train.export(dir)?, self.test.export(dir)?])
    }
}

/// The layout of one image.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Layout {
    scene: u8,
    objects: Vec<Placed>,
    background: [u8; 3],
    noise_seed: u64,
}

/// One tile placed in a cell.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Placed {
    class: u8,
    tile: u32,
    cell: u8,
    dx: u8,
    dy: u8,
    colour: [u8; 3],
    flip: bool,
}

/// One split of the embedded dataset; images are rendered on demand.
#[derive(Clone, Debug)]
pub struct EmbeddedImages {
    split: EmbeddedSplit,
    classes: Vec<String>,
    tiles: Arc<TileSet>,
    layouts: Vec<Layout>,
    labels: LabelMatrix,
}

impl EmbeddedImages {
    fn generate(
        split: EmbeddedSplit,
        count: usize,
        seed: u64,
        classes: Vec<String>,
        tiles: Arc<TileSet>,
    ) -> Self {
        let layouts: Vec<Layout> = (0..count)
            .map(|i| make_layout(&tiles, seed, split, i))
            .collect();
        let c = classes.len();
        let mut values = vec![-1i8; count * c];
        for (n, layout) in layouts.iter().enumerate() {
            for o in &layout.objects {
                values[n * c + o.class as usize] = 1;
            }
        }
        let labels = LabelMatrix::new(count, c, values).expect("valid labels");
        Self {
            split,
            classes,
            tiles,
            layouts,
            labels,
        }
    }

    /// Which split this is.
    pub fn split(&self) -> EmbeddedSplit {
        self.split
    }

    /// The scene index (into [`SCENES`]) of image `index`.
    pub fn scene(&self, index: usize) -> usize {
        self.layouts[index].scene as usize
    }

    /// The tile indices (into this split's tile set) used by image `index`.
    pub fn tiles_of(&self, index: usize) -> Vec<usize> {
        self.layouts[index]
            .objects
            .iter()
            .map(|o| o.tile as usize)
            .collect()
    }

    /// The raw 28×28 tile `tile` of this split's tile set (row-major grey levels) and its class.
    pub fn tile(&self, tile: usize) -> (&[u8], usize) {
        (self.tiles.pixels(tile), self.tiles.labels[tile] as usize)
    }

    /// Number of tiles of this split.
    pub fn tile_count(&self) -> usize {
        self.tiles.labels.len()
    }

    /// Renders image `index` (64×64 RGB).
    pub fn render(&self, index: usize) -> RgbImage {
        render(&self.tiles, &self.layouts[index])
    }

    /// Writes `dir/<split>/NNNNNN.png` and `dir/<split>.csv`; returns the CSV's path.
    ///
    /// # Errors
    /// [`DataError::Io`] / [`DataError::Image`] on write failure.
    pub fn export(&self, dir: &Path) -> Result<PathBuf> {
        let name = self.split.name();
        let image_dir = dir.join(name);
        std::fs::create_dir_all(&image_dir).map_err(|e| DataError::io(&image_dir, e))?;
        let files: Vec<String> = (0..self.len())
            .map(|i| format!("{name}/{i:06}.png"))
            .collect();
        files.par_iter().enumerate().try_for_each(|(i, f)| {
            let path = dir.join(f);
            self.render(i)
                .save(&path)
                .map_err(|source| DataError::Image { path, source })
        })?;
        let csv = dir.join(format!("{name}.csv"));
        write_manifest_csv(&csv, &files, &self.classes, &self.labels)?;
        Ok(csv)
    }
}

impl MultiLabelSource for EmbeddedImages {
    fn len(&self) -> usize {
        self.layouts.len()
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }

    fn full_labels(&self) -> &LabelMatrix {
        &self.labels
    }

    fn load_image(&self, index: usize) -> Result<RgbImage> {
        Ok(self.render(index))
    }

    fn image_name(&self, index: usize) -> String {
        format!("embedded:{}/{index:06}", self.split.name())
    }
}

fn make_layout(tiles: &TileSet, seed: u64, split: EmbeddedSplit, index: usize) -> Layout {
    let split_id = match split {
        EmbeddedSplit::Train => 1,
        EmbeddedSplit::Test => 2,
    };
    let mut rng = SeededRng::from_parts(&[seed, split_id, index as u64]);
    let scene = rng.below(SCENES.len());
    let count = 1 + rng.weighted(&OBJECT_COUNT_WEIGHTS);
    let classes = EMBEDDED_CLASSES.len();

    let mut chosen: Vec<usize> = Vec::with_capacity(count);
    for _ in 0..count {
        let mut weights = vec![0.0; classes];
        if rng.next_f64() < SCENE_PROBABILITY {
            for &(c, w) in SCENES[scene].1 {
                weights[c] = w;
            }
        }
        for &c in &chosen {
            weights[c] = 0.0;
        }
        if weights.iter().all(|&w| w == 0.0) {
            weights.iter_mut().for_each(|w| *w = 1.0);
            for &c in &chosen {
                weights[c] = 0.0;
            }
        }
        chosen.push(rng.weighted(&weights));
    }

    let mut cells = [0u8, 1, 2, 3];
    for i in (1..4).rev() {
        cells.swap(i, rng.below(i + 1));
    }
    let objects = chosen
        .iter()
        .zip(cells)
        .map(|(&class, cell)| {
            let pool = &tiles.by_class[class];
            let tile = pool[rng.below(pool.len())];
            let dx = rng.below(5) as u8;
            let dy = rng.below(5) as u8;
            let colour = bright_colour(&mut rng);
            let flip = rng.below(2) == 1;
            Placed {
                class: class as u8,
                tile,
                cell,
                dx,
                dy,
                colour,
                flip,
            }
        })
        .collect();
    let background = [
        rng.below(64) as u8,
        rng.below(64) as u8,
        rng.below(64) as u8,
    ];
    Layout {
        scene: scene as u8,
        objects,
        background,
        noise_seed: rng.next_u64(),
    }
}

/// A saturated, bright colour: random hue, saturation in [0.4, 1], value in [0.8, 1].
fn bright_colour(rng: &mut SeededRng) -> [u8; 3] {
    let h = rng.next_f64() * 6.0;
    let s = 0.4 + 0.6 * rng.next_f64();
    let v = 0.8 + 0.2 * rng.next_f64();
    let sector = h.floor() as u32 % 6;
    let f = h - h.floor();
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    let (r, g, b) = match sector {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    };
    [r, g, b].map(|x| (x * 255.0).round() as u8)
}

fn render(tiles: &TileSet, layout: &Layout) -> RgbImage {
    let size = EMBEDDED_IMAGE_SIZE;
    let mut noise = SeededRng::new(layout.noise_seed);
    let mut buf = vec![0u8; (size * size * 3) as usize];
    for px in buf.chunks_exact_mut(3) {
        // One draw gives three noise values in -8..=8.
        let r = noise.next_u64();
        for (c, v) in px.iter_mut().enumerate() {
            let n = ((r >> (16 * c)) & 0xFFFF) as i32 % 17 - 8;
            *v = (layout.background[c] as i32 + n).clamp(0, 255) as u8;
        }
    }
    for o in &layout.objects {
        let pixels = tiles.pixels(o.tile as usize);
        let x0 = (o.cell as u32 % 2) * CELL + o.dx as u32;
        let y0 = (o.cell as u32 / 2) * CELL + o.dy as u32;
        for ty in 0..TILE {
            for tx in 0..TILE {
                let sx = if o.flip { TILE - 1 - tx } else { tx };
                let a = pixels[(ty * TILE + sx) as usize] as u32;
                if a == 0 {
                    continue;
                }
                let at = (((y0 + ty) * size + x0 + tx) * 3) as usize;
                for c in 0..3 {
                    let bg = buf[at + c] as u32;
                    buf[at + c] = ((bg * (255 - a) + o.colour[c] as u32 * a + 127) / 255) as u8;
                }
            }
        }
    }
    RgbImage::from_raw(size, size, buf).expect("buffer of the right size")
}

/// Grey 28×28 tiles with their class (0..20).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TileSet {
    pixels: Vec<u8>,
    labels: Vec<u8>,
    by_class: Vec<Vec<u32>>,
}

impl TileSet {
    fn new(pixels: Vec<u8>, labels: Vec<u8>, origin: &str) -> Result<Self> {
        let per = (TILE * TILE) as usize;
        if pixels.len() != labels.len() * per {
            return Err(DataError::invalid(
                origin,
                "",
                format!("{} tiles but {} labels", pixels.len() / per, labels.len()),
            ));
        }
        let mut by_class = vec![Vec::new(); EMBEDDED_CLASSES.len()];
        for (i, &l) in labels.iter().enumerate() {
            let list = by_class.get_mut(l as usize).ok_or_else(|| {
                DataError::invalid(origin, format!("tile {i}"), format!("class {l} >= 20"))
            })?;
            list.push(i as u32);
        }
        if let Some(c) = by_class.iter().position(Vec::is_empty) {
            return Err(DataError::invalid(
                origin,
                "",
                format!("no tile of class {c}"),
            ));
        }
        Ok(Self {
            pixels,
            labels,
            by_class,
        })
    }

    fn pixels(&self, tile: usize) -> &[u8] {
        let per = (TILE * TILE) as usize;
        &self.pixels[tile * per..(tile + 1) * per]
    }
}

/// Training and test tiles.
type TilePair = (Arc<TileSet>, Arc<TileSet>);

/// The compiled-in tiles, decoded once per process.
fn shipped_tiles() -> Result<TilePair> {
    static TILES: OnceLock<std::result::Result<TilePair, String>> = OnceLock::new();
    let decoded = TILES.get_or_init(|| {
        let load = |images: &[u8], labels: &[u8], name: &str| -> Result<Arc<TileSet>> {
            let origin = format!("embedded:tiles-{name}");
            let (pixels, _) = idx::decode_images(&gunzip(images, &origin)?, &origin)?;
            let labels = idx::decode_labels(&gunzip(labels, &origin)?, &origin)?;
            Ok(Arc::new(TileSet::new(pixels, labels, &origin)?))
        };
        let train = load(TRAIN_IMAGES_GZ, TRAIN_LABELS_GZ, "train").map_err(|e| e.to_string())?;
        let test = load(TEST_IMAGES_GZ, TEST_LABELS_GZ, "test").map_err(|e| e.to_string())?;
        Ok((train, test))
    });
    decoded
        .clone()
        .map_err(|msg| DataError::invalid("embedded:tiles", "", msg))
}

fn gunzip(bytes: &[u8], origin: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| DataError::io(origin, e))?;
    Ok(out)
}

/// The IDX format of (Fashion-)MNIST: big-endian magic, dimensions, then bytes.
pub mod idx {
    use crate::error::{DataError, Result};
    use std::path::Path;

    /// Decodes an `idx3-ubyte` image file: `(pixels, [count, rows, cols])`.
    ///
    /// # Errors
    /// [`DataError::Invalid`] naming `origin` for a bad magic number or size.
    pub fn decode_images(bytes: &[u8], origin: impl AsRef<Path>) -> Result<(Vec<u8>, [usize; 3])> {
        let origin = origin.as_ref();
        let header = |i: usize| -> Result<usize> {
            bytes
                .get(4 * i..4 * i + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or_else(|| DataError::invalid(origin, "header", "truncated IDX header"))
        };
        if header(0)? != 0x803 {
            return Err(DataError::invalid(
                origin,
                "header",
                "not an idx3-ubyte file",
            ));
        }
        let dims = [header(1)?, header(2)?, header(3)?];
        let n = dims[0] * dims[1] * dims[2];
        let data = bytes
            .get(16..16 + n)
            .ok_or_else(|| DataError::invalid(origin, "", format!("expected {n} pixel bytes")))?;
        Ok((data.to_vec(), dims))
    }

    /// Decodes an `idx1-ubyte` label file.
    ///
    /// # Errors
    /// [`DataError::Invalid`] naming `origin` for a bad magic number or size.
    pub fn decode_labels(bytes: &[u8], origin: impl AsRef<Path>) -> Result<Vec<u8>> {
        let origin = origin.as_ref();
        if bytes.len() < 8 || u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) != 0x801
        {
            return Err(DataError::invalid(
                origin,
                "header",
                "not an idx1-ubyte file",
            ));
        }
        let n = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
        bytes
            .get(8..8 + n)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| DataError::invalid(origin, "", format!("expected {n} labels")))
    }

    /// Encodes an `idx3-ubyte` file of `count` images of `rows × cols`.
    pub fn encode_images(pixels: &[u8], count: usize, rows: usize, cols: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + pixels.len());
        for v in [0x803u32, count as u32, rows as u32, cols as u32] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(pixels);
        out
    }

    /// Encodes an `idx1-ubyte` label file.
    pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + labels.len());
        for v in [0x801u32, labels.len() as u32] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(labels);
        out
    }
}

/// The uncompressed IDX files of the shipped tile subset, built from the original files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TileSubset {
    /// `idx3-ubyte` bytes of the training tiles (class-major).
    pub train_images: Vec<u8>,
    /// `idx1-ubyte` bytes of the training tiles' classes (0..20).
    pub train_labels: Vec<u8>,
    /// `idx3-ubyte` bytes of the test tiles.
    pub test_images: Vec<u8>,
    /// `idx1-ubyte` bytes of the test tiles' classes.
    pub test_labels: Vec<u8>,
}

/// Builds the shipped tile subset from a directory with Fashion-MNIST
/// (`train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`, `t10k-…`) and Animal-MNIST
/// (`animal-images-idx3-ubyte.gz`, `animal-labels-idx1-ubyte.gz`).
///
/// Per class, in file order: Fashion-MNIST training tiles are the first 200 of its training
/// file and test tiles the first 100 of its test file; Animal-MNIST (a single file) gives the
/// first 200 tiles of each class for training and the last 100 for testing. A test tile whose
/// pixels equal a training tile's is passed over.
///
/// # Errors
/// [`DataError`] naming the file if one is missing or malformed or has too few tiles.
pub fn build_tile_subset(tiles_dir: impl AsRef<Path>) -> Result<TileSubset> {
    let dir = tiles_dir.as_ref();
    let read = |name: &str| -> Result<Vec<u8>> {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
        gunzip(&bytes, &path.display().to_string())
    };
    let images = |name: &str| -> Result<Vec<Vec<u8>>> {
        let (pixels, dims) = idx::decode_images(&read(name)?, dir.join(name))?;
        if dims[1..] != [TILE as usize, TILE as usize] {
            return Err(DataError::invalid(
                dir.join(name),
                "header",
                "tiles are not 28x28",
            ));
        }
        Ok(pixels.chunks_exact(784).map(<[u8]>::to_vec).collect())
    };
    let labels = |name: &str| idx::decode_labels(&read(name)?, dir.join(name));

    let fashion_train = (
        images("train-images-idx3-ubyte.gz")?,
        labels("train-labels-idx1-ubyte.gz")?,
    );
    let fashion_test = (
        images("t10k-images-idx3-ubyte.gz")?,
        labels("t10k-labels-idx1-ubyte.gz")?,
    );
    let animal = (
        images("animal-images-idx3-ubyte.gz")?,
        labels("animal-labels-idx1-ubyte.gz")?,
    );

    let of_class = |set: &(Vec<Vec<u8>>, Vec<u8>), k: u8| -> Vec<usize> {
        set.1
            .iter()
            .enumerate()
            .filter(|(_, &l)| l == k)
            .map(|(i, _)| i)
            .collect()
    };
    let too_few = |what: &str, k: usize| {
        DataError::invalid(dir, "", format!("too few {what} tiles of class {k}"))
    };

    let mut train: Vec<(u8, &[u8])> = Vec::new();
    for k in 0..10u8 {
        let idx = of_class(&fashion_train, k);
        if idx.len() < TRAIN_TILES_PER_CLASS {
            return Err(too_few("Fashion-MNIST training", k as usize));
        }
        train.extend(
            idx[..TRAIN_TILES_PER_CLASS]
                .iter()
                .map(|&i| (k, fashion_train.0[i].as_slice())),
        );
    }
    for k in 0..10u8 {
        let idx = of_class(&animal, k);
        if idx.len() < TRAIN_TILES_PER_CLASS + TEST_TILES_PER_CLASS {
            return Err(too_few("Animal-MNIST", k as usize));
        }
        train.extend(
            idx[..TRAIN_TILES_PER_CLASS]
                .iter()
                .map(|&i| (10 + k, animal.0[i].as_slice())),
        );
    }
    let seen: std::collections::HashSet<&[u8]> = train.iter().map(|(_, p)| *p).collect();

    let mut test: Vec<(u8, &[u8])> = Vec::new();
    for k in 0..10u8 {
        let picked: Vec<usize> = of_class(&fashion_test, k)
            .into_iter()
            .filter(|&i| !seen.contains(fashion_test.0[i].as_slice()))
            .take(TEST_TILES_PER_CLASS)
            .collect();
        if picked.len() < TEST_TILES_PER_CLASS {
            return Err(too_few("Fashion-MNIST test", k as usize));
        }
        test.extend(picked.iter().map(|&i| (k, fashion_test.0[i].as_slice())));
    }
    for k in 0..10u8 {
        let candidates: Vec<usize> = of_class(&animal, k)
            .into_iter()
            .filter(|&i| !seen.contains(animal.0[i].as_slice()))
            .collect();
        if candidates.len() < TEST_TILES_PER_CLASS {
            return Err(too_few("Animal-MNIST test", k as usize));
        }
        let last = &candidates[candidates.len() - TEST_TILES_PER_CLASS..];
        test.extend(last.iter().map(|&i| (10 + k, animal.0[i].as_slice())));
    }

    let encode = |set: &[(u8, &[u8])]| {
        let pixels: Vec<u8> = set.iter().flat_map(|(_, p)| p.iter().copied()).collect();
        let labels: Vec<u8> = set.iter().map(|(k, _)| *k).collect();
        (
            idx::encode_images(&pixels, set.len(), TILE as usize, TILE as usize),
            idx::encode_labels(&labels),
        )
    };
    let (train_images, train_labels) = encode(&train);
    let (test_images, test_labels) = encode(&test);
    Ok(TileSubset {
        train_images,
        train_labels,
        test_images,
        test_labels,
    })
}

/// The uncompressed IDX bytes of the compiled-in tiles (to compare with [`build_tile_subset`]).
///
/// # Errors
/// [`DataError::Io`] if a compiled-in file does not decompress.
pub fn shipped_tile_subset() -> Result<TileSubset> {
    Ok(TileSubset {
        train_images: gunzip(TRAIN_IMAGES_GZ, "embedded:tiles-train-images")?,
        train_labels: gunzip(TRAIN_LABELS_GZ, "embedded:tiles-train-labels")?,
        test_images: gunzip(TEST_IMAGES_GZ, "embedded:tiles-test-images")?,
        test_labels: gunzip(TEST_LABELS_GZ, "embedded:tiles-test-labels")?,
    })
}

/// Writes a tile subset as the four gzipped files of `datasets/`
/// (`tiles-{train,test}-{images-idx3,labels-idx1}-ubyte.gz`).
///
/// # Errors
/// [`DataError::Io`] on write failure.
pub fn write_tile_subset(subset: &TileSubset, out_dir: impl AsRef<Path>) -> Result<()> {
    use std::io::Write;
    let out_dir = out_dir.as_ref();
    for (name, bytes) in [
        ("tiles-train-images-idx3-ubyte.gz", &subset.train_images),
        ("tiles-train-labels-idx1-ubyte.gz", &subset.train_labels),
        ("tiles-test-images-idx3-ubyte.gz", &subset.test_images),
        ("tiles-test-labels-idx1-ubyte.gz", &subset.test_labels),
    ] {
        let path = out_dir.join(name);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(bytes).map_err(|e| DataError::io(&path, e))?;
        let gz = enc.finish().map_err(|e| DataError::io(&path, e))?;
        std::fs::write(&path, gz).map_err(|e| DataError::io(&path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_bright() {
        let mut rng = SeededRng::new(3);
        for _ in 0..100 {
            let c = bright_colour(&mut rng);
            assert!(*c.iter().max().unwrap() >= 200, "{c:?}");
        }
    }

    #[test]
    fn every_class_is_in_a_scene() {
        for c in 0..EMBEDDED_CLASSES.len() {
            assert!(
                SCENES.iter().any(|(_, p)| p.iter().any(|&(k, _)| k == c)),
                "class {c} in no scene"
            );
        }
    }

    #[test]
    fn idx_round_trip() {
        let bytes = idx::encode_images(&[1, 2, 3, 4, 5, 6], 1, 2, 3);
        let (p, d) = idx::decode_images(&bytes, "x").unwrap();
        assert_eq!((p, d), (vec![1, 2, 3, 4, 5, 6], [1, 2, 3]));
        assert_eq!(
            idx::decode_labels(&idx::encode_labels(&[7, 8]), "y").unwrap(),
            vec![7, 8]
        );
        assert!(idx::decode_labels(&bytes, "z").is_err());
    }
}
