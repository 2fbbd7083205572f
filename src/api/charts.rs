//! `GET /sessions/{id}/loss.svg`: the loss history as a line chart, drawn by plotters' SVG
//! backend: the starting loss (`initial_loss`, at epoch 0) and history entry k at epoch k.
//!
//! A history may hold a million entries, while a chart `width` pixels wide shows at most a
//! few per pixel column; so the series is decimated first (M4: the first, lowest, highest
//! and last point of each column, in epoch order), which draws the same picture as every
//! point would, at a bounded size: at most `4 * width` points whatever the history's length.
//! Rendering runs on the blocking pool, like every computation.

use std::ops::Range;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::extract::QueryParams;
use super::wire::python_repr;
use super::{AppState, Caller};
use crate::admission::{Need, Part};
use crate::error::{ApiError, ApiResult};

/// Size limits of a chart, in pixels; the default is 640x400.
pub const WIDTH: (u64, u64) = (200, 4000);
pub const HEIGHT: (u64, u64) = (150, 4000);
const DEFAULT_SIZE: (u64, u64) = (640, 400);

/// The series' colour (matplotlib's first, which students know) and the muted ones.
const LINE: RGBColor = RGBColor(31, 119, 180);
const GRID: RGBColor = RGBColor(215, 215, 215);
const NOTE: RGBColor = RGBColor(90, 90, 90);

pub fn router() -> axum::Router<AppState> {
    axum::Router::new().route("/sessions/{id}/loss.svg", get(loss_svg))
}

async fn loss_svg(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    q: QueryParams,
) -> ApiResult<Response> {
    let entry = state.session(&caller, &id).await?;
    let log = match q.get("log") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::InvalidRequest(format!(
                "log={other:?} is not a choice; use log=true for a logarithmic loss axis, or \
                 log=false (the default)"
            )));
        }
    };
    let width = q.int("width", WIDTH.0, WIDTH.1)?.unwrap_or(DEFAULT_SIZE.0);
    let height = q
        .int("height", HEIGHT.0, HEIGHT.1)?
        .unwrap_or(DEFAULT_SIZE.1);
    // At most 4 points a pixel column, each a few dozen bytes of SVG (and the vectors they
    // pass through), on top of the frame, ticks and labels.
    let need = Need::new(
        (256 << 10) + u128::from(width) * 4 * 3 * 256,
        format!("a {width}x{height} chart"),
        "ask for a narrower chart (?width=)",
    );
    let session = entry.snapshot();
    let svg = state
        .compute(&caller, Some((Part::Work, need)), move || {
            let c = session.net.config();
            let spec = ChartSpec {
                title: format!(
                    "Training loss: layers {:?}, learning rate {}",
                    c.layers,
                    python_repr(c.learning_rate)
                ),
                width: width as u32,
                height: height as u32,
                log,
            };
            session
                .history
                .with(|losses| loss_chart(&spec, session.initial_loss, losses))
        })
        .await??;
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            // A session's chart changes with every train.
            (header::CACHE_CONTROL, "no-store"),
        ],
        svg,
    )
        .into_response())
}

/// What the chart shows besides the numbers.
pub struct ChartSpec {
    pub title: String,
    pub width: u32,
    pub height: u32,
    /// A logarithmic loss axis.
    pub log: bool,
}

/// The chart as an SVG document: `initial` at epoch 0 (when known), `history[k]` at epoch k + 1.
pub fn loss_chart(spec: &ChartSpec, initial: Option<f64>, history: &[f64]) -> ApiResult<String> {
    let mut svg = String::with_capacity(16 * 1024);
    draw(spec, initial, history, &mut svg)
        .map_err(|e| ApiError::Internal(format!("drawing the loss chart: {e}")))?;
    Ok(svg)
}

/// Sizes that grow with the chart, so a 4000-pixel chart is as readable as a 640-pixel one.
struct Layout {
    font: u32,
    title_font: u32,
    margin: u32,
}

impl Layout {
    fn of(spec: &ChartSpec) -> Self {
        let scale = (f64::from(spec.width) / 640.0).min(f64::from(spec.height) / 400.0);
        let font = (14.0 * scale).clamp(10.0, 48.0).round() as u32;
        Self {
            font,
            title_font: font + font / 4 + 1,
            margin: (font * 3 / 4).max(6),
        }
    }
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw(spec: &ChartSpec, initial: Option<f64>, history: &[f64], out: &mut String) -> DrawResult {
    let layout = Layout::of(spec);
    let root = SVGBackend::with_string(out, (spec.width, spec.height)).into_drawing_area();
    root.fill(&WHITE)?;
    let first_epoch = if initial.is_some() { 0 } else { 1 };
    let last_epoch = history.len() as u64;
    // Epoch k's loss: the starting loss, then the history.
    let loss = |epoch: u64| match epoch {
        0 => initial.unwrap_or(0.0),
        k => history[(k - 1) as usize],
    };
    let count = (last_epoch + 1 - first_epoch) as usize;
    if count == 0 {
        Frame::new(spec, &layout, 0..1, false).draw(&root, 0.0..1.0, &[], None)?;
        centred_note(
            &root,
            &layout,
            "No loss history yet: train this session first",
        )?;
        root.present()?;
        return Ok(());
    }
    let (lo, hi, smallest_positive) = (first_epoch..=last_epoch).map(loss).fold(
        (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY),
        |(lo, hi, pos), v| (lo.min(v), hi.max(v), if v > 0.0 { pos.min(v) } else { pos }),
    );
    let log = spec.log && smallest_positive.is_finite();
    let x_range = first_epoch..last_epoch.max(first_epoch + 1);
    let last = (last_epoch, loss(last_epoch));
    let frame = Frame::new(spec, &layout, x_range, log);
    let columns = spec.width as usize;
    if log {
        let (bottom, top) = log_range(smallest_positive, hi);
        // Zeros (and anything below the axis) are drawn on its floor.
        let points = decimate(first_epoch, count, columns, |e| loss(e).clamp(bottom, top));
        frame.draw(&root, (bottom..top).log_scale(), &points, Some(last))?;
    } else {
        let (bottom, top) = linear_range(lo, hi);
        let points = decimate(first_epoch, count, columns, loss);
        frame.draw(&root, bottom..top, &points, Some(last))?;
    }
    if spec.log && !log {
        centred_note(
            &root,
            &layout,
            "Every loss is 0, which a log axis cannot show; drawn on a linear axis",
        )?;
    }
    root.present()?;
    Ok(())
}

/// A linear axis around losses from `lo` to `hi`, 5% to spare, finite however large they
/// are, and not below 0 (a loss never is).
fn linear_range(lo: f64, hi: f64) -> (f64, f64) {
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        (hi.abs() * 0.1).max(1e-6)
    };
    let bottom = if lo >= 0.0 {
        (lo - pad).max(0.0)
    } else {
        lo - pad
    };
    (bottom, (hi + pad).min(f64::MAX))
}

/// A log axis around positive losses from `lo` to `hi`: at least a decade, at most
/// [`LOG_DECADES`] (so the axis' own arithmetic, `top / bottom`, stays finite), and not below
/// [`LOG_MIN`]; losses below the axis are drawn on its floor.
fn log_range(lo: f64, hi: f64) -> (f64, f64) {
    let lo = lo.max(LOG_MIN);
    let hi = hi.max(lo);
    let (bottom, top) = if hi / lo < 10.0 {
        // The geometric mean without the product, which could overflow.
        let mid = lo.sqrt() * hi.sqrt();
        (mid / 10f64.sqrt(), mid * 10f64.sqrt())
    } else {
        (lo / 1.25, hi * 1.25)
    };
    let top = top.min(f64::MAX);
    (bottom.max(top / 10f64.powi(LOG_DECADES)), top)
}

/// The most decades a log axis spans, and the smallest loss it shows apart from zero.
const LOG_DECADES: i32 = 300;
const LOG_MIN: f64 = 1e-300;

/// The axes' settings, whatever the loss axis is.
struct Frame<'a> {
    spec: &'a ChartSpec,
    layout: &'a Layout,
    x_range: Range<u64>,
    log: bool,
}

impl<'a> Frame<'a> {
    fn new(spec: &'a ChartSpec, layout: &'a Layout, x_range: Range<u64>, log: bool) -> Self {
        Self {
            spec,
            layout,
            x_range,
            log,
        }
    }

    fn draw<Y>(
        &self,
        root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
        y: Y,
        points: &[(u64, f64)],
        last: Option<(u64, f64)>,
    ) -> DrawResult
    where
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let l = self.layout;
        let font = ("sans-serif", l.font).into_font();
        let mut chart = ChartBuilder::on(root)
            .caption(&self.spec.title, ("sans-serif", l.title_font))
            .margin(l.margin)
            .margin_right(l.margin + l.font)
            .x_label_area_size(l.font * 3)
            .y_label_area_size(l.font * 5)
            .build_cartesian_2d(self.x_range.clone(), y)?;
        let y_range = chart.y_range();
        let y_ticks = (self.spec.height / (l.font * 4)).clamp(3, 10) as usize;
        let x_ticks = (self.spec.width / (l.font * 6)).clamp(3, 12) as usize;
        let log = self.log;
        let y_label = move |v: &f64| {
            if log {
                log_tick(*v)
            } else {
                linear_tick(*v, &y_range, y_ticks)
            }
        };
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(if log {
                "loss (mean cross-entropy, log scale)"
            } else {
                "loss (mean cross-entropy)"
            })
            .x_labels(x_ticks)
            .y_labels(y_ticks)
            .x_label_formatter(&|e| e.to_string())
            .y_label_formatter(&y_label)
            .label_style(font.clone())
            .axis_desc_style(font.clone())
            // One grid line per tick, no finer ones: a terminal's image viewer (chafa, timg)
            // turns fine grids into noise, and the ticks are what a reader reads off.
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .axis_style(BLACK.stroke_width(1))
            .draw()?;
        if points.is_empty() {
            return Ok(());
        }
        let width = (l.font / 7).max(2);
        chart.draw_series(LineSeries::new(
            points.iter().copied(),
            LINE.stroke_width(width),
        ))?;
        if let Some((epoch, value)) = last {
            // The last loss, written out: the number people look for first.
            let (x, y) = chart.plotting_area().get_pixel_range();
            let text = format!("epoch {epoch}: loss {}", short(value));
            let style = font.color(&NOTE).pos(Pos::new(HPos::Right, VPos::Top));
            root.draw(&Text::new(
                text,
                (x.end - l.font as i32 / 2, y.start + l.font as i32 / 2),
                style,
            ))?;
        }
        Ok(())
    }
}

fn centred_note(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    layout: &Layout,
    text: &str,
) -> DrawResult {
    let (w, h) = root.dim_in_pixel();
    let style = ("sans-serif", layout.font)
        .into_font()
        .color(&NOTE)
        .pos(Pos::new(HPos::Center, VPos::Center));
    root.draw(&Text::new(text, (w as i32 / 2, h as i32 / 2), style))?;
    Ok(())
}

/// M4 decimation of the `count` points from `first`: when there are more than four per
/// column, each column keeps its first, lowest, highest and last point, in epoch order.
pub fn decimate(
    first: u64,
    count: usize,
    columns: usize,
    value: impl Fn(u64) -> f64,
) -> Vec<(u64, f64)> {
    let columns = columns.max(1);
    if count <= 4 * columns {
        return (0..count as u64)
            .map(|i| (first + i, value(first + i)))
            .collect();
    }
    let mut out = Vec::with_capacity(4 * columns);
    for c in 0..columns {
        let start = c * count / columns;
        let end = (c + 1) * count / columns;
        if start == end {
            continue;
        }
        let (mut lo, mut hi) = (start, start);
        let (mut lo_v, mut hi_v) = (value(first + start as u64), value(first + start as u64));
        for i in start + 1..end {
            let v = value(first + i as u64);
            if v < lo_v {
                (lo, lo_v) = (i, v);
            }
            if v > hi_v {
                (hi, hi_v) = (i, v);
            }
        }
        let mut keep = [start, lo.min(hi), lo.max(hi), end - 1];
        keep.sort_unstable();
        let mut previous = None;
        for i in keep {
            if previous != Some(i) {
                out.push((first + i as u64, value(first + i as u64)));
                previous = Some(i);
            }
        }
    }
    out
}

/// A tick label on a linear axis: as many decimals as the tick spacing needs.
fn linear_tick(v: f64, range: &Range<f64>, ticks: usize) -> String {
    let step = (range.end - range.start).abs() / ticks.max(1) as f64;
    let magnitude = range.start.abs().max(range.end.abs());
    if v == 0.0 {
        return "0".into();
    }
    if !(1e-3..1e6).contains(&magnitude) || step <= 0.0 {
        let digits = if step > 0.0 {
            (magnitude / step).log10().ceil().clamp(0.0, 12.0) as usize
        } else {
            3
        };
        return trim_exponent(&format!("{v:.digits$e}"));
    }
    let decimals = (-step.log10()).ceil().clamp(0.0, 12.0) as usize;
    format!("{v:.decimals$}")
}

/// A tick label on a log axis: at most three significant digits (0.002, 30, 1e-7).
fn log_tick(v: f64) -> String {
    if (1e-3..1e4).contains(&v) {
        let decimals = (2.0 - v.log10().floor()).max(0.0) as usize;
        let text = format!("{v:.decimals$}");
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            text
        }
    } else {
        trim_exponent(&format!("{v:.2e}"))
    }
}

/// `1.50e-5` -> `1.5e-5`, `2.00e3` -> `2e3`.
fn trim_exponent(text: &str) -> String {
    match text.split_once('e') {
        Some((mantissa, exp)) if mantissa.contains('.') => {
            let m = mantissa.trim_end_matches('0').trim_end_matches('.');
            format!("{m}e{exp}")
        }
        _ => text.to_string(),
    }
}

/// A loss written for a reader: five significant digits.
fn short(v: f64) -> String {
    if v != 0.0 && !(1e-3..1e6).contains(&v.abs()) {
        trim_exponent(&format!("{v:.4e}"))
    } else {
        let decimals = if v == 0.0 {
            1
        } else {
            (4.0 - v.abs().log10().floor()).max(0.0) as usize
        };
        format!("{v:.decimals$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimation_keeps_extremes_and_ends_within_four_per_column() {
        let values: Vec<f64> = (0..100_000).map(|i| ((i * 7919) % 1000) as f64).collect();
        let points = decimate(1, values.len(), 100, |e| values[(e - 1) as usize]);
        assert!(points.len() <= 400, "{} points", points.len());
        assert_eq!(points.first(), Some(&(1, values[0])));
        assert_eq!(points.last(), Some(&(100_000, values[99_999])));
        assert!(
            points.windows(2).all(|w| w[0].0 < w[1].0),
            "epochs in order"
        );
        // Every column's extremes survive.
        let max = values.iter().cloned().fold(f64::MIN, f64::max);
        assert_eq!(points.iter().filter(|p| p.1 == max).count(), 100);
        // Short series are kept whole.
        let few = decimate(0, 10, 100, |e| e as f64);
        assert_eq!(few, (0..10).map(|e| (e, e as f64)).collect::<Vec<_>>());
    }

    /// Any history a session can hold (an import sets any finite losses >= 0) draws.
    #[test]
    fn extreme_histories_draw_without_panicking() {
        let histories: &[&[f64]] = &[
            &[f64::MAX],
            &[0.0],
            &[0.0, 0.0, 0.0],
            &[5e-324],
            &[5e-324, f64::MAX],
            &[0.0, f64::MAX, 1.0],
            &[1e300, 1e-300],
            &[1.0; 3],
            &[2.5],
        ];
        for history in histories {
            for log in [false, true] {
                for (width, height) in [(200, 150), (640, 400), (4000, 4000)] {
                    let spec = ChartSpec {
                        title: "t".into(),
                        width,
                        height,
                        log,
                    };
                    for initial in [None, Some(history[0])] {
                        let svg = loss_chart(&spec, initial, history).unwrap_or_else(|e| {
                            panic!("{history:?} log={log} {width}x{height}: {e}")
                        });
                        assert!(svg.starts_with("<svg"), "{history:?}");
                        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{history:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn tick_labels_are_short_and_distinct() {
        assert_eq!(log_tick(0.002), "0.002");
        assert_eq!(log_tick(30.000000000000004), "30");
        assert_eq!(log_tick(1e-7), "1e-7");
        assert_eq!(log_tick(2.5e-5), "2.5e-5");
        let r = 21.0270..21.0275;
        let a = linear_tick(21.0271, &r, 5);
        let b = linear_tick(21.0272, &r, 5);
        assert_ne!(a, b, "ticks 0.0001 apart must differ");
        assert_eq!(linear_tick(0.30000000000000004, &(0.0..1.0), 5), "0.3");
        assert_eq!(short(0.0011888388976783412), "0.0011888");
        assert_eq!(short(23.48948897806874), "23.489");
    }
}
