//! Class-name word vectors: GloVe text files, `.npy` matrices, and the class matrix `[classes, dim]`
//! that semantic decoupling reads.
//!
//! A class name maps to words as follows: the whole lower-cased name if the vocabulary has it
//! (GloVe has `t-shirt`); otherwise VOC's fused names are split (`diningtable` → `dining table`,
//! `pottedplant` → `potted plant`, `tvmonitor` → `tv monitor`) and the name is split at spaces,
//! underscores, hyphens and slashes. The class vector is the mean of its words' vectors.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use npyz::WriterBuilder as _;

use crate::error::{DataError, Result};

/// VOC's fused class names and their words.
const FUSED_NAMES: [(&str, &str); 3] = [
    ("diningtable", "dining table"),
    ("pottedplant", "potted plant"),
    ("tvmonitor", "tv monitor"),
];

/// Word → vector, all of one dimension.
#[derive(Clone, Debug, Default)]
pub struct WordVectors {
    dim: usize,
    vectors: HashMap<String, Vec<f32>>,
}

impl WordVectors {
    /// Reads a GloVe text file (`word v1 … vd` per line), gzipped or not (detected from the
    /// content).
    ///
    /// # Errors
    /// [`DataError::Io`] if unreadable; [`DataError::Invalid`] naming the line for a bad number
    /// or a dimension different from the first line's.
    pub fn read_glove(path: impl AsRef<Path>) -> Result<Self> {
        Self::read_glove_impl(path.as_ref(), None)
    }

    /// Reads only the words that `class_names` may need (see the module doc): the way to read a
    /// large GloVe file (400k words × 300) without keeping all of it.
    pub fn read_glove_for(path: impl AsRef<Path>, class_names: &[String]) -> Result<Self> {
        let wanted: HashSet<String> = class_names
            .iter()
            .flat_map(|n| {
                let mut words = vec![n.trim().to_lowercase()];
                words.extend(split_name(n));
                words
            })
            .collect();
        Self::read_glove_impl(path.as_ref(), Some(&wanted))
    }

    fn read_glove_impl(path: &Path, wanted: Option<&HashSet<String>>) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
        let mut reader = BufReader::new(file);
        let gz = reader
            .fill_buf()
            .map_err(|e| DataError::io(path, e))?
            .starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn BufRead> = if gz {
            Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(reader)))
        } else {
            Box::new(reader)
        };
        let mut out = WordVectors::default();
        for (i, line) in reader.lines().enumerate() {
            let line = line.map_err(|e| DataError::io(path, e))?;
            let line_no = i + 1;
            let mut fields = line.split(' ');
            let Some(word) = fields.next().filter(|w| !w.is_empty()) else {
                continue;
            };
            if wanted.is_some_and(|w| !w.contains(word)) {
                // Unneeded words are skipped unparsed.
                continue;
            }
            let vector = fields
                .filter(|f| !f.is_empty())
                .map(|f| {
                    f.parse::<f32>().map_err(|_| {
                        DataError::invalid(
                            path,
                            format!("line {line_no}"),
                            format!("{f:?} is not a number (word {word:?})"),
                        )
                    })
                })
                .collect::<Result<Vec<f32>>>()?;
            if out.dim == 0 {
                if vector.is_empty() {
                    return Err(DataError::invalid(
                        path,
                        format!("line {line_no}"),
                        format!("word {word:?} has no vector"),
                    ));
                }
                out.dim = vector.len();
            } else if vector.len() != out.dim {
                return Err(DataError::invalid(
                    path,
                    format!("line {line_no}"),
                    format!(
                        "word {word:?} has {} values, earlier words {}",
                        vector.len(),
                        out.dim
                    ),
                ));
            }
            // GloVe lists each word once; keep the first occurrence if not.
            out.vectors.entry(word.to_string()).or_insert(vector);
        }
        Ok(out)
    }

    /// Builds word vectors from pairs (all of the same length).
    ///
    /// # Panics
    /// If the vectors have different lengths.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, Vec<f32>)>) -> Self {
        let mut out = WordVectors::default();
        for (w, v) in pairs {
            if out.dim == 0 {
                out.dim = v.len();
            }
            assert_eq!(
                v.len(),
                out.dim,
                "word vector of {w:?} has the wrong length"
            );
            out.vectors.insert(w, v);
        }
        out
    }

    /// Vector dimension (0 when empty).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    /// Whether there is no word.
    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }

    /// The vector of `word`.
    pub fn get(&self, word: &str) -> Option<&[f32]> {
        self.vectors.get(word).map(Vec::as_slice)
    }

    /// The words for `class_name` under the rules of the module doc.
    pub fn words_for(&self, class_name: &str) -> Vec<String> {
        let whole = class_name.trim().to_lowercase();
        if self.vectors.contains_key(&whole) {
            return vec![whole];
        }
        split_name(class_name)
    }

    /// The class matrix `[classes, dim]`: each row the mean of the class name's word vectors.
    ///
    /// # Errors
    /// [`DataError::MissingWords`] listing every word without a vector (and its classes).
    pub fn class_embeddings(&self, class_names: &[String]) -> Result<ClassEmbeddings> {
        let mut values = Vec::with_capacity(class_names.len() * self.dim);
        let mut missing = Vec::new();
        let mut missing_classes = Vec::new();
        for name in class_names {
            let words = self.words_for(name);
            let mut row = vec![0.0f32; self.dim];
            let mut ok = !words.is_empty();
            for w in &words {
                match self.get(w) {
                    Some(v) => row.iter_mut().zip(v).for_each(|(r, x)| *r += x),
                    None => {
                        ok = false;
                        if !missing.contains(w) {
                            missing.push(w.clone());
                        }
                    }
                }
            }
            if words.is_empty() {
                missing.push(name.clone());
            }
            if !ok {
                missing_classes.push(name.clone());
                continue;
            }
            if words.len() > 1 {
                let k = words.len() as f32;
                row.iter_mut().for_each(|r| *r /= k);
            }
            values.extend(row);
        }
        if !missing.is_empty() || self.dim == 0 {
            return Err(DataError::MissingWords {
                words: missing,
                classes: missing_classes,
            });
        }
        ClassEmbeddings::new(class_names.len(), self.dim, values)
    }
}

/// Splits a class name into lower-case words (fused VOC names, spaces, `_`, `-`, `/`).
fn split_name(name: &str) -> Vec<String> {
    let lower = name.trim().to_lowercase();
    let expanded = FUSED_NAMES
        .iter()
        .find(|(fused, _)| *fused == lower)
        .map(|(_, words)| words.to_string())
        .unwrap_or(lower);
    expanded
        .split(|c: char| c.is_whitespace() || c == '_' || c == '-' || c == '/')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// A `[classes, dim]` float32 matrix of class embeddings, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassEmbeddings {
    classes: usize,
    dim: usize,
    values: Vec<f32>,
}

impl ClassEmbeddings {
    /// A matrix from row-major values.
    ///
    /// # Errors
    /// [`DataError::Shape`] if `values.len() != classes * dim`.
    pub fn new(classes: usize, dim: usize, values: Vec<f32>) -> Result<Self> {
        if values.len() != classes * dim {
            return Err(DataError::Shape(format!(
                "{} values for a {classes}x{dim} embedding matrix",
                values.len()
            )));
        }
        Ok(Self {
            classes,
            dim,
            values,
        })
    }

    /// Number of classes (rows).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Embedding dimension (columns).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// All values, row-major `[classes, dim]`.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The vector of class `c`, `[dim]`.
    pub fn row(&self, c: usize) -> &[f32] {
        &self.values[c * self.dim..(c + 1) * self.dim]
    }

    /// Reads a 2-D `.npy` file of float32 or float64 (little-endian, C or Fortran order).
    ///
    /// # Errors
    /// [`DataError::Invalid`] naming the file for a bad magic, header, dtype or shape.
    pub fn read_npy(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| DataError::io(path, e))?;
        Self::from_npy_bytes(&bytes, path)
    }

    /// Parses the bytes of a `.npy` file (read by the `npyz` crate); `path` is used in errors only.
    pub fn from_npy_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |msg: String| DataError::invalid(path, "", msg);
        let npy =
            npyz::NpyFile::new(bytes).map_err(|e| bad(format!("not a readable .npy file: {e}")))?;
        let shape = npy.shape().to_vec();
        let [rows, cols] = shape[..] else {
            return Err(bad(format!("expected a 2-D array, shape is {shape:?}")));
        };
        let dtype = npy.dtype();
        let npyz::DType::Plain(type_str) = &dtype else {
            return Err(bad(format!(
                "dtype {} is not float32/float64",
                dtype.descr()
            )));
        };
        let width = match (type_str.type_char(), type_str.size_field()) {
            (npyz::TypeChar::Float, w @ (4 | 8)) => w,
            _ => return Err(bad(format!("dtype {type_str} is not float32/float64"))),
        };
        // The data must fit in the file: a header may claim any shape.
        let n = rows
            .checked_mul(cols)
            .filter(|n| n.saturating_mul(width) <= bytes.len() as u64)
            .ok_or_else(|| {
                bad(format!(
                    "shape {shape:?} of {type_str} needs more data than the file's {} bytes",
                    bytes.len()
                ))
            })?;
        let fortran = npy.order() == npyz::Order::Fortran;
        let read = |e: std::io::Error| bad(format!("{n} values of {type_str}: {e}"));
        let values: Vec<f32> = if width == 4 {
            npy.into_vec::<f32>().map_err(read)?
        } else {
            let values = npy.into_vec::<f64>().map_err(read)?;
            values.into_iter().map(|v| v as f32).collect()
        };
        let (rows, cols) = (rows as usize, cols as usize);
        let values = if fortran {
            let mut c_order = vec![0.0; values.len()];
            for r in 0..rows {
                for c in 0..cols {
                    c_order[r * cols + c] = values[c * rows + r];
                }
            }
            c_order
        } else {
            values
        };
        Self::new(rows, cols, values)
    }

    /// The bytes of a `.npy` (`<f4`, C order) file holding the matrix (written by the `npyz` crate).
    pub fn to_npy_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.values.len() * 4);
        let mut writer = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&[self.classes as u64, self.dim as u64])
            .writer(&mut out)
            .begin_nd()
            .expect("writes to memory");
        writer
            .extend(self.values.iter().copied())
            .expect("writes to memory");
        writer.finish().expect("writes to memory");
        out
    }

    /// Writes the matrix as a `.npy` file (see [`ClassEmbeddings::to_npy_bytes`]).
    pub fn write_npy(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_npy_bytes()).map_err(|e| DataError::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors() -> WordVectors {
        WordVectors::from_pairs([
            ("dining".to_string(), vec![1.0, 0.0]),
            ("table".to_string(), vec![3.0, 2.0]),
            ("cat".to_string(), vec![0.5, 0.5]),
            ("t-shirt".to_string(), vec![9.0, 9.0]),
        ])
    }

    #[test]
    fn names_split_and_average() {
        let v = vectors();
        let names: Vec<String> = [
            "diningtable",
            "dining table",
            "Cat",
            "dining_table",
            "t-shirt",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let e = v.class_embeddings(&names).unwrap();
        assert_eq!(e.classes(), 5);
        for c in [0, 1, 3] {
            assert_eq!(e.row(c), &[2.0, 1.0]);
        }
        assert_eq!(e.row(2), &[0.5, 0.5]);
        assert_eq!(e.row(4), &[9.0, 9.0]);
    }

    #[test]
    fn missing_words_are_listed() {
        let v = vectors();
        let names: Vec<String> = ["cat", "pottedplant", "dog"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        match v.class_embeddings(&names) {
            Err(DataError::MissingWords { words, classes }) => {
                assert_eq!(words, vec!["potted", "plant", "dog"]);
                assert_eq!(classes, vec!["pottedplant", "dog"]);
            }
            other => panic!("expected MissingWords, got {other:?}"),
        }
    }

    #[test]
    fn npy_round_trip_and_float64() {
        let e = ClassEmbeddings::new(2, 3, vec![1.0, -2.0, 3.5, 0.0, 1e-3, 7.0]).unwrap();
        let bytes = e.to_npy_bytes();
        assert_eq!((bytes.len() - e.values().len() * 4) % 64, 0);
        assert_eq!(
            ClassEmbeddings::from_npy_bytes(&bytes, Path::new("x.npy")).unwrap(),
            e
        );

        // A hand-made float64, Fortran-order 2x2 file: [[1, 2], [3, 4]] stored column-major.
        let header = "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 2), }\n";
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        for v in [1.0f64, 3.0, 2.0, 4.0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let m = ClassEmbeddings::from_npy_bytes(&b, Path::new("f.npy")).unwrap();
        assert_eq!(m.values(), &[1.0, 2.0, 3.0, 4.0]);

        // A header claiming more data than the file holds, and an integer dtype: errors, no allocation.
        let npy = |header: &str, data: &[u8]| {
            let mut b = b"\x93NUMPY\x01\x00".to_vec();
            b.extend_from_slice(&(header.len() as u16).to_le_bytes());
            b.extend_from_slice(header.as_bytes());
            b.extend_from_slice(data);
            ClassEmbeddings::from_npy_bytes(&b, Path::new("h.npy"))
                .unwrap_err()
                .to_string()
        };
        let e = npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4000000000, 4000000000), }\n",
            &[0; 16],
        );
        assert!(e.contains("h.npy") && e.contains("needs more data"), "{e}");
        let e = npy(
            "{'descr': '<i4', 'fortran_order': False, 'shape': (1, 1), }\n",
            &[0; 4],
        );
        assert!(
            e.contains("h.npy") && e.contains("not float32/float64"),
            "{e}"
        );

        let err = ClassEmbeddings::from_npy_bytes(b"hello world", Path::new("bad.npy"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.npy"), "{err}");
    }

    #[test]
    fn glove_text_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.txt");
        std::fs::write(&p, "cat 1 2\ndog 3 4\n").unwrap();
        let v = WordVectors::read_glove(&p).unwrap();
        assert_eq!((v.len(), v.dim()), (2, 2));
        assert_eq!(v.get("dog"), Some(&[3.0f32, 4.0][..]));
        std::fs::write(&p, "cat 1 2\ndog 3\n").unwrap();
        let e = WordVectors::read_glove(&p).unwrap_err().to_string();
        assert!(e.contains("g.txt:line 2"), "{e}");
        // gzipped
        let pz = dir.path().join("g.txt.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, b"cat 1 2\ndog 3 4\n").unwrap();
        std::fs::write(&pz, enc.finish().unwrap()).unwrap();
        let only = WordVectors::read_glove_for(&pz, &["Cat".to_string()]).unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!(only.get("cat"), Some(&[1.0f32, 2.0][..]));
    }
}
