//! SVG charts drawn on the server: lines, shaded intervals, bars and error bars on linear axes.
//!
//! A [`Chart`] collects layers in data coordinates and renders one `<svg class="chart">` with
//! axes, tick labels and a legend; no scripts, so pages render the same with JavaScript off.

use std::fmt::Write;

const WIDTH: f64 = 720.0;
const PLOT_HEIGHT: f64 = 192.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 40.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 40.0;
/// Below the plot when the x axis names categories (their names slanted).
const CATEGORY_BOTTOM: f64 = 110.0;

/// Colours of the layers, in order of their legend entries.
pub const PALETTE: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

enum Layer {
    Line {
        label: String,
        colour: &'static str,
        points: Vec<(f64, f64)>,
    },
    Band {
        colour: &'static str,
        points: Vec<(f64, f64, f64)>,
    },
    Bars {
        label: String,
        colour: &'static str,
        bars: Vec<(f64, f64)>,
        width: f64,
    },
    Intervals {
        label: String,
        colour: &'static str,
        points: Vec<(f64, f64, f64, f64)>,
    },
    HorizontalRule {
        label: String,
        y: f64,
    },
}

/// A chart in data coordinates; x labels can be dates or plain numbers.
pub struct Chart {
    name: String,
    title: String,
    x_label: String,
    y_label: String,
    x_is_date: bool,
    y_from_zero: bool,
    /// Names of the x positions 1, 2, ... (a categorical axis), if any.
    categories: Vec<String>,
    layers: Vec<Layer>,
}

impl Chart {
    /// `name` identifies the chart on the page (`data-chart`).
    pub fn new(name: &str, title: &str, x_label: &str, y_label: &str) -> Chart {
        Chart {
            name: name.into(),
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            x_is_date: false,
            y_from_zero: true,
            categories: Vec::new(),
            layers: Vec::new(),
        }
    }

    /// x values are milliseconds since the epoch, labelled as dates.
    /// Names the x positions 1, 2, ... (what [`crate::dashboard::html::X::Position`] plots).
    pub fn categories(mut self, names: Vec<String>) -> Chart {
        self.categories = names;
        self
    }

    fn height(&self) -> f64 {
        let bottom = if self.categories.is_empty() {
            BOTTOM
        } else {
            CATEGORY_BOTTOM
        };
        TOP + PLOT_HEIGHT + bottom
    }

    pub fn dates(mut self) -> Chart {
        self.x_is_date = true;
        self
    }

    /// The y axis fits the data instead of starting at zero.
    pub fn free_y(mut self) -> Chart {
        self.y_from_zero = false;
        self
    }

    pub fn line(&mut self, label: &str, colour: &'static str, points: Vec<(f64, f64)>) {
        let points = points.into_iter().filter(|p| finite(&[p.0, p.1])).collect();
        self.layers.push(Layer::Line {
            label: label.into(),
            colour,
            points,
        });
    }

    /// A shaded band (x, low, high), drawn under the lines.
    pub fn band(&mut self, colour: &'static str, points: Vec<(f64, f64, f64)>) {
        let points = points
            .into_iter()
            .filter(|p| finite(&[p.0, p.1, p.2]))
            .collect();
        self.layers.push(Layer::Band { colour, points });
    }

    /// Bars (x, height) of `width` in x units, centred on x.
    pub fn bars(&mut self, label: &str, colour: &'static str, bars: Vec<(f64, f64)>, width: f64) {
        let bars = bars.into_iter().filter(|b| finite(&[b.0, b.1])).collect();
        self.layers.push(Layer::Bars {
            label: label.into(),
            colour,
            bars,
            width,
        });
    }

    /// Points with vertical intervals (x, y, low, high).
    pub fn intervals(
        &mut self,
        label: &str,
        colour: &'static str,
        points: Vec<(f64, f64, f64, f64)>,
    ) {
        let points = points
            .into_iter()
            .filter(|p| finite(&[p.0, p.1, p.2, p.3]))
            .collect();
        self.layers.push(Layer::Intervals {
            label: label.into(),
            colour,
            points,
        });
    }

    /// A dashed reference line across the chart.
    pub fn rule(&mut self, label: &str, y: f64) {
        if y.is_finite() {
            self.layers.push(Layer::HorizontalRule {
                label: label.into(),
                y,
            });
        }
    }

    fn extent(&self) -> Option<((f64, f64), (f64, f64))> {
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for layer in &self.layers {
            match layer {
                Layer::Line { points, .. } => {
                    xs.extend(points.iter().map(|p| p.0));
                    ys.extend(points.iter().map(|p| p.1));
                }
                Layer::Band { points, .. } => {
                    xs.extend(points.iter().map(|p| p.0));
                    ys.extend(points.iter().flat_map(|p| [p.1, p.2]));
                }
                Layer::Bars { bars, width, .. } => {
                    xs.extend(
                        bars.iter()
                            .flat_map(|b| [b.0 - width / 2.0, b.0 + width / 2.0]),
                    );
                    ys.extend(bars.iter().map(|b| b.1));
                }
                Layer::Intervals { points, .. } => {
                    xs.extend(points.iter().map(|p| p.0));
                    ys.extend(points.iter().flat_map(|p| [p.1, p.2, p.3]));
                }
                Layer::HorizontalRule { y, .. } => ys.push(*y),
            }
        }
        let range = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (lo.is_finite() && hi.is_finite()).then_some((lo, hi))
        };
        let (mut x, mut y) = (range(&xs)?, range(&ys)?);
        if self.integral_x() {
            // Categories or counts: half a step of room either side.
            x = (x.0 - 0.5, x.1 + 0.5);
        }
        if self.y_from_zero {
            y.0 = y.0.min(0.0);
        }
        if x.1 - x.0 <= 0.0 {
            x = (x.0 - 1.0, x.1 + 1.0);
        }
        if y.1 - y.0 <= 0.0 {
            y = (y.0 - 1.0, y.1 + 1.0);
        }
        // A little headroom above the highest point.
        y.1 += (y.1 - y.0) * 0.05;
        Some((x, y))
    }

    /// Every x is a whole number (ranks, categories, counts): ticks fall on whole numbers.
    fn integral_x(&self) -> bool {
        !self.x_is_date
            && self.layers.iter().all(|layer| match layer {
                Layer::Line { points, .. } => points.iter().all(|p| p.0.fract() == 0.0),
                Layer::Band { points, .. } => points.iter().all(|p| p.0.fract() == 0.0),
                Layer::Bars { bars, .. } => bars.iter().all(|b| b.0.fract() == 0.0),
                Layer::Intervals { points, .. } => points.iter().all(|p| p.0.fract() == 0.0),
                Layer::HorizontalRule { .. } => true,
            })
    }

    /// The `<svg>` element; a chart without data says so in its body.
    pub fn render(&self) -> String {
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg class="chart" data-chart="{}" viewBox="0 0 {WIDTH} {}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg"><title>{}</title>"#,
            escape(&self.name),
            self.height(),
            escape(&self.title),
            escape(&self.title),
        );
        let _ = write!(
            svg,
            r#"<text x="{LEFT}" y="16" class="chart-title">{}</text>"#,
            escape(&self.title)
        );
        let Some(((x0, x1), (y0, y1))) = self.extent() else {
            let _ = write!(
                svg,
                r#"<text x="{}" y="{}" class="chart-empty">no data yet</text></svg>"#,
                WIDTH / 2.0 - 40.0,
                self.height() / 2.0
            );
            return svg;
        };
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = PLOT_HEIGHT;
        let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * plot_w;
        let sy = |y: f64| TOP + plot_h - (y - y0) / (y1 - y0) * plot_h;
        self.axes(&mut svg, (x0, x1), (y0, y1), &sx, &sy);
        let mut legend = Vec::new();
        for layer in &self.layers {
            match layer {
                Layer::Band { colour, points } if !points.is_empty() => {
                    let mut path = String::from("M");
                    for p in points {
                        let _ = write!(path, "{:.1},{:.1} L", sx(p.0), sy(p.2));
                    }
                    for p in points.iter().rev() {
                        let _ = write!(path, "{:.1},{:.1} L", sx(p.0), sy(p.1));
                    }
                    path.truncate(path.len() - 2);
                    let _ = write!(
                        svg,
                        r#"<path class="band" d="{path}Z" fill="{colour}" fill-opacity="0.18" stroke="none"/>"#
                    );
                }
                Layer::Line {
                    label,
                    colour,
                    points,
                } => {
                    let coords: Vec<String> = points
                        .iter()
                        .map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.1)))
                        .collect();
                    let _ = write!(
                        svg,
                        r#"<polyline class="series" points="{}" fill="none" stroke="{colour}" stroke-width="1.8"/>"#,
                        coords.join(" ")
                    );
                    legend.push((label.as_str(), *colour));
                }
                Layer::Bars {
                    label,
                    colour,
                    bars,
                    width,
                } => {
                    let w = (width / (x1 - x0) * plot_w).max(1.0);
                    for (x, h) in bars {
                        let (top, base) = (sy(h.max(y0)), sy(0f64.max(y0)));
                        let _ = write!(
                            svg,
                            r#"<rect class="bar" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}" fill-opacity="0.75"/>"#,
                            sx(*x) - w / 2.0,
                            top.min(base),
                            w * 0.9,
                            (base - top).abs()
                        );
                    }
                    legend.push((label.as_str(), *colour));
                }
                Layer::Intervals {
                    label,
                    colour,
                    points,
                } => {
                    for (x, y, lo, hi) in points {
                        let _ = write!(
                            svg,
                            r#"<line class="interval" x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2"/><circle class="point" cx="{x:.1}" cy="{:.1}" r="3.5" fill="{colour}"/>"#,
                            sy(*lo),
                            sy(*hi),
                            sy(*y),
                            x = sx(*x),
                        );
                    }
                    legend.push((label.as_str(), *colour));
                }
                Layer::HorizontalRule { label, y } => {
                    let _ = write!(
                        svg,
                        r##"<line class="rule" x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#555" stroke-dasharray="5,4"/><text class="rule-label" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                        WIDTH - RIGHT,
                        WIDTH - RIGHT - 4.0,
                        sy(*y) - 4.0,
                        escape(label),
                        y = sy(*y),
                    );
                }
                Layer::Band { .. } => {}
            }
        }
        let mut x = LEFT + plot_w;
        for (label, colour) in legend.iter().rev() {
            x -= 14.0 + 7.0 * label.chars().count() as f64;
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="7" width="10" height="10" fill="{colour}"/><text x="{:.1}" y="16" class="legend">{}</text>"#,
                x + 13.0,
                escape(label)
            );
        }
        svg.push_str("</svg>");
        svg
    }

    fn axes(
        &self,
        svg: &mut String,
        (x0, x1): (f64, f64),
        (y0, y1): (f64, f64),
        sx: &dyn Fn(f64) -> f64,
        sy: &dyn Fn(f64) -> f64,
    ) {
        let (bottom, right) = (TOP + PLOT_HEIGHT, WIDTH - RIGHT);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{bottom}" stroke="#333"/><line x1="{LEFT}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#333"/>"##
        );
        for y in ticks(y0, y1, 5) {
            let _ = write!(
                svg,
                r##"<line x1="{LEFT}" x2="{right}" y1="{v:.1}" y2="{v:.1}" stroke="#e5e5e5"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT - 6.0,
                sy(y) + 4.0,
                short_number(y),
                v = sy(y),
            );
        }
        if !self.categories.is_empty() {
            for (i, name) in self.categories.iter().enumerate() {
                let x = sx(i as f64 + 1.0);
                let y = bottom + 12.0;
                let _ = write!(
                    svg,
                    r#"<text class="tick category" x="{x:.1}" y="{y:.1}" text-anchor="end" transform="rotate(-55 {x:.1} {y:.1})">{}</text>"#,
                    escape(name)
                );
            }
        }
        let mut x_ticks = ticks(x0, x1, 6);
        if self.integral_x() {
            x_ticks.retain(|x| x.fract() == 0.0);
        }
        if !self.categories.is_empty() {
            x_ticks.clear();
        }
        for x in x_ticks {
            let label = if self.x_is_date {
                crate::model::utc_date(x as i64)
            } else {
                short_number(x)
            };
            let _ = write!(
                svg,
                r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                sx(x),
                bottom + 15.0,
                label
            );
        }
        let _ = write!(
            svg,
            r#"<text class="axis-label" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text class="axis-label" transform="translate(14,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            LEFT + (right - LEFT) / 2.0,
            self.height() - 6.0,
            escape(&self.x_label),
            TOP + (bottom - TOP) / 2.0,
            escape(&self.y_label)
        );
    }
}

fn finite(values: &[f64]) -> bool {
    values.iter().all(|v| v.is_finite())
}

/// About `count` round tick values covering [lo, hi].
fn ticks(lo: f64, hi: f64, count: usize) -> Vec<f64> {
    let raw = (hi - lo) / count as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(raw);
    let first = (lo / step).ceil();
    let mut out = Vec::new();
    for k in 0..50 {
        let tick = (first + k as f64) * step;
        if tick > hi + step * 1e-9 {
            break;
        }
        // A tick a rounding error away from zero is zero (never "-0").
        out.push(if tick.abs() < step * 1e-6 { 0.0 } else { tick });
    }
    out
}

fn short_number(v: f64) -> String {
    // -0.0 + 0.0 is 0.0: no "-0".
    let v = v + 0.0;
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Text safe inside HTML and SVG elements and attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(0.013, 0.092, 4);
        assert!(t.iter().all(|v| (0.013..=0.092).contains(v)), "{t:?}");
        assert!(t.len() >= 3, "{t:?}");
    }

    #[test]
    fn a_chart_draws_each_layer_inside_its_viewbox_and_escapes_labels() {
        let mut chart = Chart::new("c", "A <b> chart", "x", "y");
        chart.line(
            "rate",
            PALETTE[0],
            vec![(0.0, 1.0), (1.0, 3.0), (2.0, f64::NAN)],
        );
        chart.band(PALETTE[0], vec![(0.0, 0.5, 1.5), (1.0, 2.0, 4.0)]);
        chart.bars("n", PALETTE[1], vec![(0.0, 2.0), (1.0, 1.0)], 0.5);
        chart.intervals("hr", PALETTE[2], vec![(1.0, 2.0, 1.0, 3.0)]);
        let svg = chart.render();
        assert!(svg.contains("A &lt;b&gt; chart") && !svg.contains("<b>"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(svg.matches(r#"class="bar""#).count(), 2);
        assert_eq!(svg.matches(r#"class="point""#).count(), 1);
        assert_eq!(svg.matches(r#"class="band""#).count(), 1);
        // Every coordinate lies in the view box.
        for part in svg.split(['"', ',', ' ']) {
            if let Ok(v) = part.parse::<f64>() {
                assert!((-1.0..=WIDTH + 1.0).contains(&v), "{v} outside in {svg}");
            }
        }
    }

    #[test]
    fn a_chart_without_data_says_so() {
        let svg = Chart::new("empty", "Nothing", "x", "y").render();
        assert!(svg.contains("no data yet"));
    }
}
