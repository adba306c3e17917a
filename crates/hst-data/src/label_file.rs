//! Label matrices as CSV files.
//!
//! The reference's format is one row per image with the class values in {-1, 0, 1} separated by
//! commas, no header. This module also reads and writes an optional header line (class names,
//! with a leading id column named `image_id`, `id`, `image`, `file_name` or `path`) and an id
//! column, as in the shared fixtures (`image_id,aeroplane,…` then `000012,-1,…`).
//!
//! A header is recognised when some field of the first line is not an integer.

use std::path::Path;

use crate::error::{DataError, Result};
use crate::labels::{LabelMatrix, PartialLabels};

/// Names of a leading id column in a header.
const ID_COLUMNS: [&str; 6] = ["image_id", "id", "image", "file_name", "filename", "path"];

/// A label CSV file: the matrix and, when the file has them, image ids and class names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelTable {
    /// The first column of each row, when the header names an id column.
    pub ids: Option<Vec<String>>,
    /// The class names of the header, when there is one.
    pub class_names: Option<Vec<String>>,
    /// The labels, `[rows, classes]`.
    pub labels: LabelMatrix,
}

/// Reads a label CSV (see the module doc).
///
/// # Errors
/// [`DataError::Io`] if the file cannot be read; [`DataError::LabelCount`] for a row whose length
/// differs from the header's (or the first row's); [`DataError::Invalid`] naming line and column
/// for a value outside {-1, 0, 1}.
pub fn read_label_csv(path: impl AsRef<Path>) -> Result<LabelTable> {
    let path = path.as_ref();
    let text = crate::datasets::read_text(path)?;
    parse_label_csv(&text, path)
}

/// Parses the text of a label CSV; `path` is used in errors only.
pub fn parse_label_csv(text: &str, path: &Path) -> Result<LabelTable> {
    let reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut records = reader
        .into_records()
        .map(|record| {
            let record = record.map_err(|e| DataError::csv(path, e))?;
            let line = record.position().map(|p| p.line()).unwrap_or_default();
            Ok((line, record))
        })
        // Blank (or whitespace-only) lines carry no row.
        .filter(|r| !matches!(r, Ok((_, rec)) if rec.iter().all(str::is_empty)))
        .peekable();

    let mut class_names = None;
    let mut has_id = false;
    if let Some(Ok((_, first))) = records.peek() {
        if first.iter().any(|f| f.parse::<i64>().is_err()) {
            has_id = ID_COLUMNS.contains(&first[0].to_ascii_lowercase().as_str());
            let names = first
                .iter()
                .skip(usize::from(has_id))
                .map(str::to_string)
                .collect::<Vec<_>>();
            class_names = Some(names);
            records.next();
        }
    }

    let mut expected = class_names.as_ref().map(Vec::len);
    let mut ids = has_id.then(Vec::new);
    let mut values = Vec::new();
    let mut rows = 0;
    for record in records {
        let (line_no, record) = record?;
        let mut fields = record.iter();
        if let Some(ids) = ids.as_mut() {
            ids.push(fields.next().unwrap_or_default().to_string());
        }
        let start = values.len();
        for (col, field) in fields.enumerate() {
            let v: i64 = field.parse().map_err(|_| {
                DataError::invalid(
                    path,
                    format!("line {line_no}"),
                    format!(
                        "value {field:?} in column {} is not an integer",
                        col + 1 + usize::from(has_id)
                    ),
                )
            })?;
            if !(-1..=1).contains(&v) {
                return Err(DataError::invalid(
                    path,
                    format!("line {line_no}"),
                    format!(
                        "value {v} in column {} is not -1, 0 or 1",
                        col + 1 + usize::from(has_id)
                    ),
                ));
            }
            values.push(v as i8);
        }
        let found = values.len() - start;
        match expected {
            Some(n) if n != found => {
                return Err(DataError::LabelCount {
                    path: path.to_path_buf(),
                    location: format!("line {line_no}"),
                    expected: n,
                    found,
                })
            }
            None => expected = Some(found),
            _ => {}
        }
        rows += 1;
    }
    let classes = expected.unwrap_or(0);
    let labels = LabelMatrix::new(rows, classes, values)?;
    Ok(LabelTable {
        ids,
        class_names,
        labels,
    })
}

/// Reads a partial-label CSV (e.g. a released `--prob` file of the reference) and pairs it with
/// the dataset's full labels.
///
/// # Errors
/// As [`read_label_csv`]; [`DataError::Invalid`] naming the file if its shape differs from
/// `full` or a known entry disagrees with the full label.
pub fn read_partial_labels(path: impl AsRef<Path>, full: LabelMatrix) -> Result<PartialLabels> {
    let path = path.as_ref();
    let table = read_label_csv(path)?;
    PartialLabels::new(full, table.labels).map_err(|e| DataError::invalid(path, "", e.to_string()))
}

/// Writes a label CSV: a header if `class_names` is given (with `image_id` first when `ids` is
/// given too), then one row per image (the id first when `ids` is given).
///
/// `write_label_csv(path, labels, None, None)` writes the reference's format.
///
/// # Errors
/// [`DataError::Shape`] if `ids` or `class_names` do not fit `labels`; [`DataError::Io`] on
/// write failure.
pub fn write_label_csv(
    path: impl AsRef<Path>,
    labels: &LabelMatrix,
    ids: Option<&[String]>,
    class_names: Option<&[String]>,
) -> Result<()> {
    let path = path.as_ref();
    if let Some(ids) = ids {
        if ids.len() != labels.images() {
            return Err(DataError::Shape(format!(
                "{} ids for {} label rows",
                ids.len(),
                labels.images()
            )));
        }
    }
    if let Some(names) = class_names {
        if names.len() != labels.classes() {
            return Err(DataError::Shape(format!(
                "{} class names for {} label columns",
                names.len(),
                labels.classes()
            )));
        }
    }
    let io = |e| DataError::csv(path, e);
    let mut writer = csv::Writer::from_path(path).map_err(io)?;
    if let Some(names) = class_names {
        let id = ids.is_some().then_some("image_id");
        writer
            .write_record(id.into_iter().chain(names.iter().map(String::as_str)))
            .map_err(io)?;
    }
    for n in 0..labels.images() {
        let id = ids.map(|ids| ids[n].as_str());
        let values = labels.row(n).iter().map(|v| match v {
            1 => "1",
            -1 => "-1",
            _ => "0",
        });
        writer
            .write_record(id.into_iter().chain(values))
            .map_err(io)?;
    }
    writer.flush().map_err(|e| DataError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_reference_format_and_header_format() {
        let p = Path::new("x.csv");
        let t = parse_label_csv("1,0,-1\n-1,-1,0\n", p).unwrap();
        assert_eq!(t.ids, None);
        assert_eq!(t.class_names, None);
        assert_eq!(t.labels.values(), &[1, 0, -1, -1, -1, 0]);

        let t = parse_label_csv("image_id,a,b\n000012,1,-1\n000017,0,1\n", p).unwrap();
        assert_eq!(t.ids.unwrap(), vec!["000012", "000017"]);
        assert_eq!(t.class_names.unwrap(), vec!["a", "b"]);
        assert_eq!(t.labels.values(), &[1, -1, 0, 1]);
    }

    #[test]
    fn errors_name_file_and_line() {
        let p = Path::new("bad.csv");
        let e = parse_label_csv("1,0,-1\n1,0\n", p).unwrap_err();
        assert!(matches!(
            e,
            DataError::LabelCount {
                expected: 3,
                found: 2,
                ..
            }
        ));
        assert!(e.to_string().contains("bad.csv:line 2"), "{e}");
        let e = parse_label_csv("a,b\n1,0\n0,2\n", p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad.csv:line 3") && e.contains("not -1, 0 or 1"),
            "{e}"
        );
        let e = parse_label_csv("a,b\n1,x\n", p).unwrap_err().to_string();
        assert!(
            e.contains("bad.csv:line 2") && e.contains("not an integer"),
            "{e}"
        );
    }

    #[test]
    fn write_then_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let m = LabelMatrix::new(2, 3, vec![1, 0, -1, 0, 0, 1]).unwrap();
        let ids = vec!["a.jpg".to_string(), "b.jpg".to_string()];
        let names = vec!["x".to_string(), "y".to_string(), "z".to_string()];
        let p = dir.path().join("l.csv");
        write_label_csv(&p, &m, Some(&ids), Some(&names)).unwrap();
        let t = read_label_csv(&p).unwrap();
        assert_eq!(t.labels, m);
        assert_eq!(t.ids.unwrap(), ids);
        assert_eq!(t.class_names.unwrap(), names);
        write_label_csv(&p, &m, None, None).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "1,0,-1\n0,0,1\n");

        let full = LabelMatrix::new(2, 3, vec![1, -1, -1, 1, -1, 1]).unwrap();
        let pl = read_partial_labels(&p, full.clone()).unwrap();
        assert_eq!(pl.partial(), &m);
        let other = LabelMatrix::new(2, 3, vec![1, 1, 1, 1, 1, 1]).unwrap();
        let e = read_partial_labels(&p, other).unwrap_err().to_string();
        assert!(e.contains("l.csv") && e.contains("disagrees"), "{e}");
        let wrong = LabelMatrix::new(1, 3, vec![1, 1, 1]).unwrap();
        assert!(read_partial_labels(&p, wrong).is_err());
    }
}
