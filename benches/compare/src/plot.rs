//! Charts of the results, written as SVG files.
//!
//! A contender has the same color in every chart, chosen by its name: streamlog's modes get
//! strong colors and thicker lines, the others lighter ones. A legend beside the axes names
//! them all, so it never covers the data. Log axes skip values they cannot show (zero and
//! below) and put their ticks at powers of ten, or at powers of two when every value is one
//! (sizes such as 16 to 1Mi).

use std::io;
use std::ops::Range;
use std::path::Path;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Every chart's size in pixels.
const SIZE: (u32, u32) = (900, 500);
/// The width in pixels of the legend beside the axes; room for about 30 characters.
const LEGEND_WIDTH: u32 = 250;
const FONT: &str = "sans-serif";

/// Each contender's color, found by how its name starts (the first match wins). A hash of the
/// name would be as stable, but with this few colors some contenders would surely share one.
const COLORS: [(&str, RGBColor); 7] = [
    ("streamlog (fsync every", RGBColor(240, 130, 0)),
    ("streamlog (fsync)", RGBColor(120, 30, 160)),
    ("streamlog", RGBColor(215, 25, 35)),
    ("crossbeam", RGBColor(120, 190, 120)),
    ("commitlog", RGBColor(200, 160, 110)),
    ("sqlite", RGBColor(110, 160, 215)),
    ("redis", RGBColor(185, 185, 70)),
];
/// The color of a contender whose name matches none of `COLORS`.
const OTHER_COLOR: RGBColor = RGBColor(150, 150, 150);

/// One line of a line chart: a contender's name and its (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One group of bars in a bar chart: a case, such as "produce", and each contender's value in it.
pub struct BarGroup {
    pub case: String,
    pub bars: Vec<(String, f64)>,
}

/// A line chart with one line per series, written as SVG to `path`. Axes may be logarithmic.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    log_x: bool,
    log_y: bool,
    series: &[Series],
) -> io::Result<()> {
    let x = Axis::numeric(x_label, series.iter().flat_map(|s| s.points.iter().map(|p| p.0)), log_x);
    let y = Axis::numeric(y_label, series.iter().flat_map(|s| s.points.iter().map(|p| p.1)), log_y);
    let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
    let drawn = draw(path, title, &names, &x, &y, |chart| {
        for series in series {
            let color = color(&series.name);
            let width = line_width(&series.name);
            let points: Vec<(f64, f64)> =
                series.points.iter().filter_map(|&(px, py)| Some((x.place(px)?, y.place(py)?))).collect();
            chart.draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(width)))?;
            chart.draw_series(points.iter().map(|&point| Circle::new(point, width + 1, color.filled())))?;
        }
        Ok(())
    });
    drawn.map_err(io::Error::other)
}

/// A grouped bar chart, written as SVG to `path`: one group of bars per case, one bar per
/// contender within each group. The y axis may be logarithmic.
pub fn bar_chart(path: &Path, title: &str, y_label: &str, log_y: bool, groups: &[BarGroup]) -> io::Result<()> {
    let cases: Vec<&str> = groups.iter().map(|g| g.case.as_str()).collect();
    let x = Axis::categories(&cases);
    let y = Axis::numeric(y_label, groups.iter().flat_map(|g| g.bars.iter().map(|b| b.1)), log_y);
    let mut names: Vec<&str> = Vec::new();
    for (name, _) in groups.iter().flat_map(|g| &g.bars) {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    // Bars grow from the bottom of a log axis, which has no zero. All are equally wide, so that
    // the widest group fills 80% of its slot and the others are centered in theirs.
    let bottom = if log_y { y.span.start } else { 0.0 };
    let width = 0.8 / groups.iter().map(|g| g.bars.len()).max().unwrap_or(1) as f64;
    let drawn = draw(path, title, &names, &x, &y, |chart| {
        for (i, group) in groups.iter().enumerate() {
            let start = i as f64 + 0.5 - width * group.bars.len() as f64 / 2.0;
            for (j, (name, value)) in group.bars.iter().enumerate() {
                let Some(top) = y.place(*value) else { continue };
                let left = start + j as f64 * width;
                chart.draw_series([Rectangle::new([(left, bottom), (left + 0.85 * width, top)], color(name).filled())])?;
            }
        }
        Ok(())
    });
    drawn.map_err(io::Error::other)
}

type Drawn<T = ()> = Result<T, DrawingAreaErrorKind<io::Error>>;
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<Coordinates, Coordinates>>;

/// Writes a chart to `path`: the title, the axes, a legend naming `names`, and whatever
/// `contents` draws in plot coordinates.
fn draw(
    path: &Path,
    title: &str,
    names: &[&str],
    x: &Axis,
    y: &Axis,
    contents: impl FnOnce(&mut Chart<'_, '_>) -> Drawn,
) -> Drawn {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (axes, legend) = root.titled(title, (FONT, 22))?.split_horizontally(SIZE.0 - LEGEND_WIDTH);

    let mut chart = ChartBuilder::on(&axes)
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d(x.coordinates(), y.coordinates())?;
    let x_tick = |v: &f64| x.tick_label(*v);
    let y_tick = |v: &f64| y.tick_label(*v);
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x.label)
        .y_desc(y.label)
        .x_label_formatter(&x_tick)
        .y_label_formatter(&y_tick)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15));
    if !x.grid {
        mesh.disable_x_mesh();
    }
    mesh.draw()?;
    contents(&mut chart)?;

    for (i, name) in names.iter().enumerate() {
        let y = 30 + 24 * i as i32;
        legend.draw(&Rectangle::new([(0, y - 7), (14, y + 7)], color(name).filled()))?;
        let style = (FONT, 14).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
        legend.draw(&Text::new(name.to_string(), (22, y), style))?;
    }
    root.present()
}

/// One axis: its description, the span it shows and its labelled ticks, in plot coordinates
/// (the value's log10 on a log axis).
struct Axis<'a> {
    label: &'a str,
    log: bool,
    /// Whether grid lines run across the chart at the ticks.
    grid: bool,
    span: Range<f64>,
    ticks: Vec<(f64, String)>,
}

impl<'a> Axis<'a> {
    /// An axis for numbers, long enough for every value in `values` that it can show.
    fn numeric(label: &'a str, values: impl Iterator<Item = f64>, log: bool) -> Self {
        let shown: Vec<f64> = values.filter(|v| v.is_finite() && (!log || *v > 0.0)).collect();
        let min = shown.iter().copied().fold(f64::INFINITY, f64::min);
        let max = shown.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if log {
            let binary = !shown.is_empty() && shown.iter().all(|v| v.log2().fract() == 0.0);
            let base: f64 = if binary { 2.0 } else { 10.0 };
            let (low, high) = if shown.is_empty() { (0, 1) } else { (min.log(base).floor() as i32, max.log(base).ceil() as i32) };
            // At most about ten ticks, and at least two so that a single value has a span.
            let step = ((high - low) as f64 / 10.0).ceil().max(1.0) as i32;
            let high = high.max(low + step);
            let ticks = (low..=high)
                .step_by(step as usize)
                .map(|exponent| {
                    let value = base.powi(exponent);
                    (value.log10(), if binary { binary_si(value) } else { si(value) })
                })
                .collect::<Vec<_>>();
            let span = ticks[0].0..ticks[ticks.len() - 1].0;
            Axis { label, log, grid: true, span, ticks }
        } else {
            let (low, high) = if shown.is_empty() { (0.0, 1.0) } else { (min.min(0.0), max) };
            let high = if high > low { high + 0.05 * (high - low) } else { low + 1.0 };
            let ticks = RangedCoordf64::from(low..high).key_points(8).into_iter().map(|v| (v, si(v))).collect();
            Axis { label, log, grid: true, span: low..high, ticks }
        }
    }

    /// An axis with one unit-wide slot per case, labelled with its name.
    fn categories(cases: &[&str]) -> Self {
        let ticks = cases.iter().enumerate().map(|(i, case)| (i as f64 + 0.5, case.to_string())).collect();
        Axis { label: "", log: false, grid: false, span: 0.0..cases.len().max(1) as f64, ticks }
    }

    /// Where `value` goes in plot coordinates, or `None` if this axis cannot show it.
    fn place(&self, value: f64) -> Option<f64> {
        let position = if self.log { value.log10() } else { value };
        position.is_finite().then_some(position)
    }

    fn coordinates(&self) -> Coordinates {
        Coordinates { span: self.span.clone(), ticks: self.ticks.iter().map(|t| t.0).collect() }
    }

    fn tick_label(&self, position: f64) -> String {
        self.ticks.iter().find(|t| t.0 == position).map(|t| t.1.clone()).unwrap_or_default()
    }
}

/// An axis as plotters sees it: a linear span with grid lines and labels at our ticks.
struct Coordinates {
    span: Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for Coordinates {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let fraction = (value - self.span.start) / (self.span.end - self.span.start);
        limit.0 + (fraction * f64::from(limit.1 - limit.0)).round() as i32
    }

    /// The ticks as bold key points, and no light ones in between.
    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() { Vec::new() } else { self.ticks.clone() }
    }

    fn range(&self) -> Range<f64> {
        self.span.clone()
    }
}

/// A contender's color; see `COLORS`.
fn color(name: &str) -> RGBColor {
    let name = name.to_lowercase();
    COLORS.iter().find(|(start, _)| name.starts_with(start)).map_or(OTHER_COLOR, |&(_, color)| color)
}

/// Lines are thicker for streamlog, so that it stands out.
fn line_width(name: &str) -> u32 {
    if name.starts_with("streamlog") { 3 } else { 2 }
}

/// `value` with three significant digits and a metric suffix: 2.5M, 10k, 0.001.
fn si(value: f64) -> String {
    let (scaled, suffix) = match value.abs() {
        a if a >= 1e9 => (value / 1e9, "G"),
        a if a >= 1e6 => (value / 1e6, "M"),
        a if a >= 1e3 => (value / 1e3, "k"),
        _ => (value, ""),
    };
    let decimals = if scaled == 0.0 { 0 } else { (2 - scaled.abs().log10().floor() as i32).clamp(0, 9) as usize };
    let digits = format!("{scaled:.decimals$}");
    let digits = if digits.contains('.') { digits.trim_end_matches('0').trim_end_matches('.') } else { &digits };
    format!("{digits}{suffix}")
}

/// A power of two with a binary suffix: 16, 4Ki, 1Mi.
fn binary_si(value: f64) -> String {
    match value {
        v if v >= (1u64 << 30) as f64 => format!("{}Gi", v / (1u64 << 30) as f64),
        v if v >= (1 << 20) as f64 => format!("{}Mi", v / (1 << 20) as f64),
        v if v >= (1 << 10) as f64 => format!("{}Ki", v / (1 << 10) as f64),
        v => format!("{v}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(axis: &Axis) -> Vec<String> {
        axis.ticks.iter().map(|t| t.1.clone()).collect()
    }

    #[test]
    fn log_ticks_fall_on_powers_of_ten_or_of_two() {
        let rates = Axis::numeric("", [3e3, 0.0, -1.0, 7e7].into_iter(), true);
        assert_eq!(labels(&rates), ["1k", "10k", "100k", "1M", "10M", "100M"]);
        let sizes = Axis::numeric("", (4..=20).map(|e| f64::from(1 << e)), true);
        assert_eq!(labels(&sizes), ["16", "64", "256", "1Ki", "4Ki", "16Ki", "64Ki", "256Ki", "1Mi"]);
        let one = Axis::numeric("", [2.5e6].into_iter(), true);
        assert_eq!(labels(&one), ["1M", "10M"]);
        assert_eq!([si(0.0), si(0.00125), si(999.0), si(2.5e6), si(1.234e9)], ["0", "0.00125", "999", "2.5M", "1.23G"]);
    }

    #[test]
    fn every_contender_has_a_color_of_its_own() {
        let colors: Vec<RGBColor> = crate::contenders::all().iter().map(|c| color(&c.name())).collect();
        for (i, c) in colors.iter().enumerate() {
            assert_ne!(*c, OTHER_COLOR);
            assert!(!colors[..i].contains(c));
        }
    }

    #[test]
    fn charts_name_every_contender() {
        let dir = std::env::temp_dir();
        let names = ["streamlog", "streamlog (fsync every 100 ms)", "streamlog (fsync)", "crossbeam-channel", "SQLite (WAL)"];
        let series: Vec<Series> = names
            .iter()
            .enumerate()
            .map(|(i, name)| Series {
                name: name.to_string(),
                // Each series has fewer points than the one before, and the last starts at zero.
                points: (4..=20 - 2 * i as i32)
                    .step_by(2)
                    .map(|e| (f64::from(1 << e), if i == 4 && e == 4 { 0.0 } else { 5e7 / 10f64.powi(i as i32) / f64::from(e) }))
                    .collect(),
            })
            .collect();
        let line = dir.join("streamlog-compare-plot-line.svg");
        line_chart(&line, "Throughput by value size", "value size (bytes)", "records/s", true, true, &series).unwrap();

        let groups: Vec<BarGroup> = ["produce", "consume", "end to end"]
            .iter()
            .enumerate()
            .map(|(g, case)| BarGroup {
                case: case.to_string(),
                bars: names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| (name.to_string(), 8e7 / 10f64.powi(i as i32) / (g + 1) as f64))
                    .collect(),
            })
            .collect();
        let bars = dir.join("streamlog-compare-plot-bars.svg");
        bar_chart(&bars, "Throughput, 100-byte values", "records/s", true, &groups).unwrap();

        for (path, words) in [(&line, &["value size (bytes)", "1Mi"][..]), (&bars, &["end to end", "10M"][..])] {
            let svg = std::fs::read_to_string(path).unwrap();
            assert!(svg.contains("<svg"), "{}", path.display());
            for word in names.iter().chain(words).chain(&["records/s"]) {
                assert!(svg.contains(word), "{} lacks {word}", path.display());
            }
        }
    }
}
