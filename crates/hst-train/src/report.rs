//! The run report: PNG plots of a training run's per-epoch records and of the co-occurrence matrices.
//!
//! [`write_report`] writes into a directory:
//! - `losses.png`: every loss term per epoch;
//! - `map.png`: mAP, OF1 and CF1 per epoch (in %);
//! - `thresholds.png`: the learnt thresholds τ_ist and τ_cst per epoch;
//! - `pseudo_labels.png`: precision and recall of the IST and CST pseudo labels per epoch (in %), when any
//!   record has them;
//! - `cooccurrence.png`: like the paper's Figure 4, the statistical co-occurrence matrix next to the mean
//!   image-specific co-occurrence matrix predicted by IST, with class names on the axes when there are at most
//!   [`MAX_NAMED_CLASSES`] classes.
//!
//! Per-epoch plots have [`LINE_PLOT_SIZE`] pixels, the co-occurrence figure [`COOCCURRENCE_SIZE`]. A plot
//! without any finite value is not written; non-finite values are left out of their series.
//!
//! Text is drawn with DejaVu Sans (Bitstream Vera licence, `assets/DejaVuSans-LICENSE.txt`), embedded in the
//! binary, so no system font library is needed.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use crate::metrics::PseudoLabelQuality;

/// Width and height in pixels of each per-epoch plot.
pub const LINE_PLOT_SIZE: (u32, u32) = (900, 560);
/// Width and height in pixels of the co-occurrence figure.
pub const COOCCURRENCE_SIZE: (u32, u32) = (1500, 780);
/// Up to this many classes, the co-occurrence heatmaps name every class on both axes; above it, they show
/// every 10th class index.
pub const MAX_NAMED_CLASSES: usize = 30;

/// What one epoch of training and evaluation produced.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number (0-based, as the reference counts).
    pub epoch: usize,
    /// Mean of each loss term over the epoch's steps, by name (e.g. `"bce"`, `"ist_bce"`, `"total"`).
    #[serde(default)]
    pub losses: BTreeMap<String, f64>,
    /// Test mAP (VOC2012 AP averaged over classes), a fraction.
    pub map: f64,
    /// Test overall F1 at threshold 0, a fraction.
    #[serde(default)]
    pub of1: f64,
    /// Test per-class F1 at threshold 0, a fraction.
    #[serde(default)]
    pub cf1: f64,
    /// IST threshold τ_ist at the end of the epoch.
    #[serde(default)]
    pub tau_ist: f64,
    /// CST threshold τ_cst at the end of the epoch.
    #[serde(default)]
    pub tau_cst: f64,
    /// Quality of the IST pseudo labels over the epoch, when they were generated.
    #[serde(default)]
    pub ist_pseudo: Option<PseudoLabelQuality>,
    /// Quality of the CST pseudo labels over the epoch, when they were generated.
    #[serde(default)]
    pub cst_pseudo: Option<PseudoLabelQuality>,
}

/// The two matrices of the co-occurrence figure.
#[derive(Debug, Clone, Copy)]
pub struct CooccurrenceFigure<'a> {
    /// Statistical co-occurrence matrix `[classes, classes]` row-major (e.g. P(j | i) from the training labels).
    pub statistical: &'a [f32],
    /// Mean over images of the IST-predicted image-specific co-occurrence matrix `[classes, classes]`.
    pub image_specific: &'a [f32],
    /// Class names `[classes]`, or empty to label by index.
    pub class_names: &'a [String],
}

/// Writes the run report's PNGs into `dir` (created if missing) and returns their paths.
///
/// `cooc` is `(statistical, image_specific, class_names)` as in [`CooccurrenceFigure`].
///
/// # Shapes
/// - `cooc.0`, `cooc.1`: `[classes, classes]` row-major
/// - `cooc.2`: `[classes]` or empty
///
/// # Errors
/// [`TrainError::ReportIo`] when `dir` or a file cannot be created or written,
/// [`TrainError::ReportInput`] when the matrices are not square or disagree with the names,
/// [`TrainError::Plot`] when drawing fails.
pub fn write_report(
    dir: &Path,
    records: &[EpochRecord],
    cooc: Option<(&[f32], &[f32], &[String])>,
) -> Result<Vec<PathBuf>, TrainError> {
    // Check inputs before touching the file system.
    let figure = cooc
        .map(|(statistical, image_specific, class_names)| {
            let figure = CooccurrenceFigure {
                statistical,
                image_specific,
                class_names,
            };
            cooccurrence_classes(&figure).map(|classes| (figure, classes))
        })
        .transpose()?;
    std::fs::create_dir_all(dir).map_err(|source| TrainError::ReportIo {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    let mut out = |name: &str, plot: Option<LinePlot>| -> Result<(), TrainError> {
        if let Some(plot) = plot {
            let path = dir.join(name);
            render_png(&path, LINE_PLOT_SIZE, |root| plot.draw(root))?;
            written.push(path);
        }
        Ok(())
    };

    let mut names: Vec<&String> = records.iter().flat_map(|r| r.losses.keys()).collect();
    names.sort();
    names.dedup();
    let losses = names
        .iter()
        .map(|&name| Series::new(name, records, |r| r.losses.get(name).copied()))
        .collect();
    out(
        "losses.png",
        LinePlot::new(
            "Training losses",
            "loss",
            SeriesLabelPosition::UpperRight,
            losses,
        ),
    )?;

    let pct = |f: fn(&EpochRecord) -> f64| move |r: &EpochRecord| Some(100.0 * f(r));
    let metrics = vec![
        Series::new("mAP", records, pct(|r| r.map)),
        Series::new("OF1", records, pct(|r| r.of1)),
        Series::new("CF1", records, pct(|r| r.cf1)),
    ];
    out(
        "map.png",
        LinePlot::new(
            "Test mAP, OF1 and CF1",
            "%",
            SeriesLabelPosition::LowerRight,
            metrics,
        ),
    )?;

    let thresholds = vec![
        Series::new("τ_ist", records, |r| Some(r.tau_ist)),
        Series::new("τ_cst", records, |r| Some(r.tau_cst)),
    ];
    out(
        "thresholds.png",
        LinePlot::new(
            "Learnt thresholds",
            "threshold",
            SeriesLabelPosition::UpperRight,
            thresholds,
        ),
    )?;

    let quality = vec![
        Series::new("IST precision", records, |r| {
            r.ist_pseudo.map(|q| 100.0 * q.precision)
        }),
        Series::new("IST recall", records, |r| {
            r.ist_pseudo.map(|q| 100.0 * q.recall)
        }),
        Series::new("CST precision", records, |r| {
            r.cst_pseudo.map(|q| 100.0 * q.precision)
        }),
        Series::new("CST recall", records, |r| {
            r.cst_pseudo.map(|q| 100.0 * q.recall)
        }),
    ];
    out(
        "pseudo_labels.png",
        LinePlot::new(
            "Pseudo labels on unknown entries",
            "%",
            SeriesLabelPosition::LowerRight,
            quality,
        ),
    )?;

    if let Some((figure, classes)) = figure {
        let path = dir.join("cooccurrence.png");
        render_png(&path, COOCCURRENCE_SIZE, |root| {
            draw_cooccurrence(root, &figure, classes)
        })?;
        written.push(path);
    }
    tracing::debug!(dir = %dir.display(), files = written.len(), "run report written");
    Ok(written)
}

/// Checks the figure's shapes and returns its class count.
fn cooccurrence_classes(figure: &CooccurrenceFigure) -> Result<usize, TrainError> {
    let len = figure.statistical.len();
    let classes = (len as f64).sqrt().round() as usize;
    if len == 0 || classes * classes != len {
        return Err(TrainError::ReportInput(format!(
            "statistical co-occurrence matrix has {len} values, not [C, C] for any C > 0"
        )));
    }
    if figure.image_specific.len() != len {
        return Err(TrainError::ReportInput(format!(
            "image-specific co-occurrence matrix has {} values, expected [{classes}, {classes}] = {len}",
            figure.image_specific.len()
        )));
    }
    if !figure.class_names.is_empty() && figure.class_names.len() != classes {
        return Err(TrainError::ReportInput(format!(
            "{} class names for {classes}×{classes} co-occurrence matrices",
            figure.class_names.len()
        )));
    }
    Ok(classes)
}

type Root<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawResult = Result<(), Box<dyn Error>>;

const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Registers the embedded font with plotters once (for every family name plotters may ask for).
fn register_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            for family in ["sans-serif", "serif", "monospace"] {
                plotters::style::register_font(family, FontStyle::Normal, FONT_BYTES)
                    .map_err(|_| "the embedded DejaVuSans.ttf is not a valid font".to_string())?;
            }
            Ok(())
        })
        .clone()
}

/// Draws into an RGB buffer of `size` pixels and encodes it as PNG at `path`.
fn render_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Root) -> DrawResult,
) -> Result<(), TrainError> {
    let plot_err = |message: String| TrainError::Plot {
        path: path.to_path_buf(),
        message,
    };
    register_font().map_err(plot_err)?;
    let (w, h) = size;
    let mut buf = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(e.to_string()))?;
        draw(&root).map_err(|e| plot_err(e.to_string()))?;
        root.present().map_err(|e| plot_err(e.to_string()))?;
    }
    let image =
        image::RgbImage::from_raw(w, h, buf).ok_or_else(|| plot_err("pixel buffer size".into()))?;
    image
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| match e {
            image::ImageError::IoError(source) => TrainError::ReportIo {
                path: path.to_path_buf(),
                source,
            },
            other => plot_err(other.to_string()),
        })?;
    tracing::debug!(path = %path.display(), "plot written");
    Ok(())
}

/// One named line: `(epoch, value)` points, finite values only.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

impl Series {
    fn new(
        name: &str,
        records: &[EpochRecord],
        value: impl Fn(&EpochRecord) -> Option<f64>,
    ) -> Self {
        let points = records
            .iter()
            .filter_map(|r| value(r).map(|v| (r.epoch as f64, v)))
            .filter(|(_, v)| v.is_finite())
            .collect();
        Self {
            name: name.to_string(),
            points,
        }
    }
}

/// Matplotlib's `tab10` colours, for the lines.
const TAB10: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// A line chart of several series over epochs.
struct LinePlot {
    title: String,
    y_desc: String,
    legend: SeriesLabelPosition,
    series: Vec<Series>,
    x: (f64, f64),
    y: (f64, f64),
}

/// `(min, max)` of `values`, widened so the range is never empty.
fn padded_range(values: impl Iterator<Item = f64>, pad_fraction: f64) -> Option<(f64, f64)> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo > hi {
        return None;
    }
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * pad_fraction
    } else {
        (lo.abs() * 0.1).max(0.5)
    };
    Some((lo - pad, hi + pad))
}

impl LinePlot {
    /// `None` when no series has a point.
    fn new(
        title: &str,
        y_desc: &str,
        legend: SeriesLabelPosition,
        series: Vec<Series>,
    ) -> Option<Self> {
        let series: Vec<Series> = series
            .into_iter()
            .filter(|s| !s.points.is_empty())
            .collect();
        let points = || series.iter().flat_map(|s| s.points.iter().copied());
        let x = padded_range(points().map(|p| p.0), 0.02)?;
        let y = padded_range(points().map(|p| p.1), 0.05)?;
        Some(Self {
            title: title.to_string(),
            y_desc: y_desc.to_string(),
            legend,
            series,
            x,
            y,
        })
    }

    fn draw(&self, root: &Root) -> DrawResult {
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FONT, 26))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(self.x.0..self.x.1, self.y.0..self.y.1)?;
        let epochs = (self.x.1 - self.x.0).round() as usize + 1;
        // Enough decimals to tell the ~10 y ticks apart.
        let decimals = (2.0 - (self.y.1 - self.y.0).log10().floor()).clamp(0.0, 6.0) as usize;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(self.y_desc.as_str())
            .x_labels(epochs.clamp(2, 12))
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-6 {
                    format!("{x:.0}")
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| format!("{y:.decimals$}"))
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (i, series) in self.series.iter().enumerate() {
            let (r, g, b) = TAB10[i % TAB10.len()];
            let color = RGBColor(r, g, b);
            chart
                .draw_series(LineSeries::new(
                    series.points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(series.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
                });
            chart.draw_series(
                series
                    .points
                    .iter()
                    .map(|&p| Circle::new(p, 3, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .position(self.legend.clone())
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    }
}

/// Viridis colour map at `t` in `[0, 1]` (piecewise linear through 6 of its stops).
fn viridis(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 6] = [
        (68.0, 1.0, 84.0),
        (65.0, 68.0, 135.0),
        (42.0, 120.0, 142.0),
        (34.0, 168.0, 132.0),
        (122.0, 209.0, 81.0),
        (253.0, 231.0, 37.0),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pos = t * (STOPS.len() - 1) as f64;
    let k = (pos.floor() as usize).min(STOPS.len() - 2);
    let f = pos - k as f64;
    let (a, b) = (STOPS[k], STOPS[k + 1]);
    let lerp = |x: f64, y: f64| (x + (y - x) * f).round() as u8;
    RGBColor(lerp(a.0, b.0), lerp(a.1, b.1), lerp(a.2, b.2))
}

/// Value range shared by both heatmaps: `[0, 1]` when every finite value lies in it, else min..max.
fn heat_range(figure: &CooccurrenceFigure) -> (f64, f64) {
    let values = figure
        .statistical
        .iter()
        .chain(figure.image_specific)
        .map(|&v| f64::from(v))
        .filter(|v| v.is_finite());
    let (lo, hi) = values.fold((0.0f64, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    (lo, hi)
}

fn draw_cooccurrence(root: &Root, figure: &CooccurrenceFigure, classes: usize) -> DrawResult {
    let (width, _) = root.dim_in_pixel();
    let titled = root.titled(
        "Co-occurrence: statistical vs. image-specific (IST, mean over images)",
        (FONT, 26),
    )?;
    let (panels, bar) = titled.split_horizontally(width as i32 - 110);
    let (left, right) = panels.split_horizontally(panels.dim_in_pixel().0 as i32 / 2);
    let range = heat_range(figure);
    let names: Vec<String> = if !figure.class_names.is_empty() && classes <= MAX_NAMED_CLASSES {
        figure.class_names.to_vec()
    } else {
        (0..classes)
            .map(|i| {
                if i % 10 == 0 || classes <= MAX_NAMED_CLASSES {
                    i.to_string()
                } else {
                    String::new()
                }
            })
            .collect()
    };
    draw_heatmap(
        &left,
        "statistical",
        figure.statistical,
        classes,
        &names,
        range,
    )?;
    draw_heatmap(
        &right,
        "IST image-specific (mean)",
        figure.image_specific,
        classes,
        &names,
        range,
    )?;
    draw_colorbar(&bar, range)
}

/// One `[classes, classes]` heatmap: row i (top to bottom) and column j (left to right) of `matrix`.
fn draw_heatmap(
    area: &Root,
    title: &str,
    matrix: &[f32],
    classes: usize,
    names: &[String],
    (lo, hi): (f64, f64),
) -> DrawResult {
    let (w, h) = area.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    let label_style = TextStyle::from((FONT, 14).into_font()).color(&BLACK);
    let label_w = names
        .iter()
        .map(|n| area.estimate_text_size(n, &label_style).map(|s| s.0 as i32))
        .try_fold(0, |m, s| s.map(|s| m.max(s)))?;
    let title_h = 34;
    let margin = 14;
    let grid = (w - label_w - 3 * margin)
        .min(h - title_h - label_w - 3 * margin)
        .max(classes as i32);
    let cell = grid as f64 / classes as f64;
    let x0 = label_w + 2 * margin;
    let y0 = title_h;
    area.draw_text(
        title,
        &TextStyle::from((FONT, 20).into_font()).pos(Pos::new(HPos::Center, VPos::Top)),
        (x0 + grid / 2, 4),
    )?;
    let px = |k: usize| (k as f64 * cell).round() as i32;
    for i in 0..classes {
        for j in 0..classes {
            let v = f64::from(matrix[i * classes + j]);
            let color = if v.is_finite() {
                viridis((v - lo) / (hi - lo))
            } else {
                RGBColor(160, 160, 160)
            };
            area.draw(&Rectangle::new(
                [(x0 + px(j), y0 + px(i)), (x0 + px(j + 1), y0 + px(i + 1))],
                color.filled(),
            ))?;
        }
    }
    area.draw(&Rectangle::new(
        [(x0, y0), (x0 + grid, y0 + grid)],
        BLACK.stroke_width(1),
    ))?;
    let row_style = label_style.pos(Pos::new(HPos::Right, VPos::Center));
    let col_style = label_style
        .transform(FontTransform::Rotate270)
        .pos(Pos::new(HPos::Right, VPos::Center));
    for (k, name) in names.iter().enumerate().filter(|(_, n)| !n.is_empty()) {
        let center = ((k as f64 + 0.5) * cell).round() as i32;
        area.draw_text(name, &row_style, (x0 - 5, y0 + center))?;
        area.draw_text(name, &col_style, (x0 + center, y0 + grid + 5))?;
    }
    Ok(())
}

/// A vertical colour bar for `(lo, hi)` with five tick labels.
fn draw_colorbar(area: &Root, (lo, hi): (f64, f64)) -> DrawResult {
    let (_, h) = area.dim_in_pixel();
    let (top, bottom) = (48, h as i32 - 150);
    let (x0, x1) = (10, 32);
    let steps = (bottom - top).max(1);
    for k in 0..steps {
        let t = 1.0 - k as f64 / steps as f64;
        area.draw(&Rectangle::new(
            [(x0, top + k), (x1, top + k + 1)],
            viridis(t).filled(),
        ))?;
    }
    area.draw(&Rectangle::new(
        [(x0, top), (x1, bottom)],
        BLACK.stroke_width(1),
    ))?;
    let style = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for k in 0..=4 {
        let t = k as f64 / 4.0;
        let y = bottom - ((bottom - top) as f64 * t).round() as i32;
        area.draw_text(&format!("{:.2}", lo + (hi - lo) * t), &style, (x1 + 6, y))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_ends() {
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
        assert_eq!(viridis(f64::NAN), RGBColor(68, 1, 84));
    }

    #[test]
    fn ranges_are_never_empty() {
        assert_eq!(padded_range([2.0].into_iter(), 0.05), Some((1.5, 2.5)));
        assert_eq!(padded_range(std::iter::empty(), 0.05), None);
        let (lo, hi) = padded_range([0.0, 10.0].into_iter(), 0.1).unwrap();
        assert!((lo + 1.0).abs() < 1e-12 && (hi - 11.0).abs() < 1e-12);
    }

    #[test]
    fn cooccurrence_shapes_are_checked() {
        let m4 = [0.0f32; 4];
        let m9 = [0.0f32; 9];
        let names = vec!["a".to_string(), "b".to_string()];
        let ok = CooccurrenceFigure {
            statistical: &m4,
            image_specific: &m4,
            class_names: &names,
        };
        assert_eq!(cooccurrence_classes(&ok).unwrap(), 2);
        let bad = CooccurrenceFigure {
            image_specific: &m9,
            ..ok
        };
        assert!(matches!(
            cooccurrence_classes(&bad),
            Err(TrainError::ReportInput(_))
        ));
        let bad = CooccurrenceFigure {
            statistical: &m9[..5],
            ..ok
        };
        assert!(matches!(
            cooccurrence_classes(&bad),
            Err(TrainError::ReportInput(_))
        ));
        let bad = CooccurrenceFigure {
            statistical: &m9,
            image_specific: &m9,
            class_names: &names,
        };
        assert!(matches!(
            cooccurrence_classes(&bad),
            Err(TrainError::ReportInput(_))
        ));
    }
}
