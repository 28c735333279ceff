//! The report's charts: inline SVG (no script, nothing fetched), a bar chart and a line chart
//! over time, with round axis ticks.
//!
//! # Tricky parts
//! - Ticks are multiples of a 1-2-5 step (1, 2, 5, 10, 20, ...), and an axis ends at the
//!   first tick at or above the data: `0, 625, 1250` are not ticks a reader can use.
//! - Ticks are `i * step`, never a running sum, and labelled with as many decimals as the
//!   step needs, so floating-point drift (`0.6000000000000001`) never shows.

use std::fmt::Write as _;

/// Escapes text for HTML.
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

const CHART_W: f64 = 900.0;
const CHART_H: f64 = 260.0;
const PAD_L: f64 = 60.0;
const PAD_B: f64 = 40.0;
const PAD_T: f64 = 10.0;
const PAD_R: f64 = 10.0;

/// A "nice" upper bound for an axis.
pub(crate) fn nice_max(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= v {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

/// The largest 1-2-5 step (1, 2, 5, 10, 20, ...) that splits `0..=max` into at most
/// `intervals` intervals; 1 for an empty range.
fn nice_step(max: f64, intervals: u32) -> f64 {
    if !(max.is_finite() && max > 0.0) {
        return 1.0;
    }
    let raw = max / f64::from(intervals.max(1));
    let magnitude = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0] {
        // A hair of tolerance: 0.4 / 0.2 is 2.0000000000000004.
        if m * magnitude >= raw * (1.0 - 1e-9) {
            return m * magnitude;
        }
    }
    10.0 * magnitude
}

/// Axis ticks from 0 to the first multiple of a 1-2-5 step at or above `max`, at most
/// `intervals` intervals (a chart's axis ends at the last one).
fn ticks(max: f64, intervals: u32) -> Vec<f64> {
    let step = nice_step(max, intervals);
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let n = (max / step - 1e-9).ceil().max(1.0) as u32;
    // `i * step`, not a running sum: no drift (0.1 + 0.2 is not 0.3).
    (0..=n).map(|i| f64::from(i) * step).collect()
}

/// A tick's label: as many decimals as its step needs.
fn tick_label(v: f64, step: f64) -> String {
    if step >= 1.0 {
        return short_number(v);
    }
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}")
}

/// An inline SVG bar chart.
pub(crate) fn bar_chart(title: &str, bars: &[(String, u64)]) -> String {
    let mut svg = format!(
        "<h2>{}</h2><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{CHART_W}\" \
         height=\"{CHART_H}\" role=\"img\">",
        escape(title)
    );
    let plot_w = CHART_W - PAD_L - PAD_R;
    let plot_h = CHART_H - PAD_T - PAD_B;
    let max = axes(&mut svg, bars.iter().map(|b| b.1).max().unwrap_or(0) as f64);
    let slot = plot_w / bars.len().max(1) as f64;
    for (i, (label, count)) in bars.iter().enumerate() {
        let h = *count as f64 / max * plot_h;
        let x = PAD_L + i as f64 * slot;
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"#1f77b4\">\
             <title>{}: {count}</title></rect>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            x + slot * 0.1,
            PAD_T + plot_h - h,
            slot * 0.8,
            escape(label),
            x + slot / 2.0,
            CHART_H - PAD_B + 14.0,
            escape(label)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The Y axis for values up to `y_max`: grid lines at round ticks; returns the axis top.
fn axes(svg: &mut String, y_max: f64) -> f64 {
    let plot_h = CHART_H - PAD_T - PAD_B;
    let ticks = ticks(nice_max(y_max), 5);
    let step = ticks.get(1).copied().unwrap_or(1.0);
    let top = ticks.last().copied().unwrap_or(1.0);
    for &v in &ticks {
        let y = PAD_T + plot_h - plot_h * v / top;
        let _ = write!(
            svg,
            "<line x1=\"{PAD_L}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            CHART_W - PAD_R,
            PAD_L - 6.0,
            y + 4.0,
            tick_label(v, step)
        );
    }
    top
}

pub(crate) fn short_number(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// One line of a [`line_chart`].
pub(crate) struct Series<'a> {
    pub(crate) name: &'a str,
    pub(crate) color: &'a str,
    /// `(seconds, value)`.
    pub(crate) points: Vec<(f64, f64)>,
}

/// An inline SVG line chart over time (x in seconds).
pub(crate) fn line_chart(title: &str, series: &[Series<'_>]) -> String {
    let mut svg = format!(
        "<h2>{}</h2><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{CHART_W}\" \
         height=\"{CHART_H}\" role=\"img\">",
        escape(title)
    );
    let points = series.iter().flat_map(|s| s.points.iter());
    let (mut x_max, mut y_max) = (1.0f64, 0.0f64);
    for &(x, y) in points {
        x_max = x_max.max(x);
        y_max = y_max.max(y);
    }
    let plot_w = CHART_W - PAD_L - PAD_R;
    let plot_h = CHART_H - PAD_T - PAD_B;
    let y_max = axes(&mut svg, y_max);
    let x_ticks = ticks(x_max, 8);
    let x_step = x_ticks.get(1).copied().unwrap_or(1.0);
    let x_max = x_ticks.last().copied().unwrap_or(1.0);
    for &t in &x_ticks {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{} s</text>",
            PAD_L + plot_w * t / x_max,
            CHART_H - PAD_B + 14.0,
            tick_label(t, x_step)
        );
    }
    for (
        n,
        Series {
            name,
            color,
            points,
        },
    ) in series.iter().enumerate()
    {
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| {
                format!(
                    "{:.1},{:.1}",
                    PAD_L + x / x_max * plot_w,
                    PAD_T + plot_h - (y / y_max).min(1.0) * plot_h
                )
            })
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\
             <rect x=\"{:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            path.join(" "),
            PAD_L + 10.0 + n as f64 * 110.0,
            CHART_H - 16.0,
            PAD_L + 24.0 + n as f64 * 110.0,
            CHART_H - 7.0,
            escape(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axis_bounds() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(180.0), 200.0);
        assert_eq!(nice_max(2100.0), 2500.0);
        assert_eq!(nice_max(f64::NAN), 1.0);
    }

    #[test]
    fn ticks_are_round_1_2_5_steps() {
        let is_1_2_5 = |step: f64| {
            let m = step / 10f64.powf(step.log10().floor());
            [1.0, 2.0, 5.0].iter().any(|x| (m - x).abs() < 1e-9)
        };
        for max in [
            0.3, 0.9, 1.0, 2.5, 7.0, 10.0, 13.0, 29.5, 61.0, 180.0, 2100.0, 86_400.0,
        ] {
            for intervals in [5, 8] {
                let t = ticks(max, intervals);
                let step = t[1] - t[0];
                assert_eq!(t[0], 0.0);
                assert!(is_1_2_5(step), "{max}: step {step}");
                assert!(*t.last().unwrap() >= max - 1e-9, "{max}: {t:?}");
                assert!(t.len() as u32 - 1 <= intervals, "{max}: {t:?}");
                // The axis ends at most one step past the data.
                assert!(*t.last().unwrap() < max + step, "{max}: {t:?}");
            }
        }
        assert_eq!(ticks(nice_max(7.0), 5), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(nice_max(180.0), 5), [0.0, 50.0, 100.0, 150.0, 200.0]);
        assert_eq!(ticks(29.5, 8), [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0]);
        assert_eq!(ticks(0.0, 5), [0.0, 1.0]);
        assert_eq!(tick_label(0.6000000000000001, 0.2), "0.6");
        assert_eq!(tick_label(25_000.0, 5000.0), "25k");
        assert_eq!(tick_label(1.5, 0.5), "1.5");
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn charts_are_svg_without_scripts_or_fetches() {
        let html = line_chart(
            "t",
            &[Series {
                name: "a",
                color: "#000",
                points: vec![(0.0, 1.0), (1.0, 2.0)],
            }],
        ) + &bar_chart("b", &[("0-1".to_owned(), 3), ("1+".to_owned(), 0)]);
        assert!(html.contains("<svg"));
        assert!(html.contains("<polyline"));
        assert!(html.contains("<rect"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("src="));
    }
}
