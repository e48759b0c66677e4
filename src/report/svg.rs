//! Plots as standalone SVG, written by hand (no plotting dependency): a grouped bar chart
//! (categories × series, e.g. languages × models) and a heatmap (e.g. query language ×
//! candidate language). Values are expected in [0, 1] (retrieval measures); the axes are
//! fixed to that range so charts of different runs compare at a glance. The `delta_`
//! variants draw signed differences (e.g. a model minus its baseline) on a scale symmetric
//! around zero, with a diverging colour map for the heatmap.

use std::fmt::Write;

/// Escape text for SVG content and attribute values. Characters XML 1.0 does not allow at
/// all (control characters other than tab, newline and carriage return; U+FFFE, U+FFFF)
/// become U+FFFD: escaped or not, they would make the file unreadable.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Colour-blind-safe qualitative palette (Okabe–Ito).
const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
];

fn header(w: f64, h: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n"
    )
}

/// Grouped bars: one group per category, one bar per series, y from 0 to 1.
/// `series[s].1[c]` is the value of series `s` in category `c` (`NaN` = missing).
pub fn bar_chart(
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[(String, Vec<f64>)],
) -> String {
    bars(title, y_label, categories, series, (0.0, 1.0))
}

/// The largest absolute finite value, rounded up to a "nice" bound (1, 2 or 5 × 10^k).
fn symmetric_bound<'a>(values: impl Iterator<Item = &'a f64>) -> f64 {
    let m = values
        .filter(|v| v.is_finite())
        .fold(0.0f64, |a, v| a.max(v.abs()));
    if m <= 0.0 {
        return 0.01;
    }
    let e = 10f64.powf(m.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|f| f * e)
        .find(|&b| b >= m)
        .unwrap_or(10.0 * e)
}

/// Grouped bars of signed differences: the y axis is symmetric around 0 and bars start at
/// 0. `series[s].1[c]` as in [`bar_chart`].
pub fn delta_bar_chart(
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[(String, Vec<f64>)],
) -> String {
    let m = symmetric_bound(series.iter().flat_map(|(_, v)| v.iter()));
    bars(title, y_label, categories, series, (-m, m))
}

fn bars(
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[(String, Vec<f64>)],
    (lo, hi): (f64, f64),
) -> String {
    let ns = series.len().max(1) as f64;
    let bar = 14.0;
    let group = bar * ns + 10.0;
    // Category labels are rotated by 45°: leave room below for the longest one (~7 px
    // per character at 12 px), and make the chart wide enough for its title.
    let longest = categories
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(0) as f64;
    // Signed tick labels ("+0.020") are wider than "0.6".
    let left = if lo < 0.0 { 78.0 } else { 60.0 };
    let (right, top) = (20.0, 40.0);
    let bottom = (longest * 7.0 * 0.71 + 30.0).max(70.0);
    let title_w = title.chars().count() as f64 * 8.0 + 40.0;
    let plot_w = (group * categories.len().max(1) as f64)
        .max(200.0)
        .max(title_w - left - right);
    let plot_h = 260.0;
    let legend_h = 18.0 * series.len() as f64;
    let (w, h) = (left + plot_w + right, top + plot_h + bottom + legend_h);
    let mut s = header(w, h);
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>",
        w / 2.0,
        escape(title)
    );
    // Axes and grid.
    let ypos = |v: f64| top + plot_h * (1.0 - (v - lo) / (hi - lo));
    let signed = lo < 0.0;
    for i in 0..=if signed { 4 } else { 5 } {
        let v = lo + (hi - lo) * i as f64 / if signed { 4.0 } else { 5.0 };
        let y = ypos(v);
        let label = if signed {
            format!("{v:+.3}")
        } else {
            format!("{v:.1}")
        };
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            left + plot_w,
            left - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">{}</text>",
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        escape(y_label)
    );
    for (c, cat) in categories.iter().enumerate() {
        let x0 = left + group * c as f64 + 5.0;
        for (k, (name, values)) in series.iter().enumerate() {
            let v = values.get(c).copied().unwrap_or(f64::NAN);
            if !v.is_finite() {
                continue;
            }
            let shown = v.clamp(lo, hi);
            let x = x0 + bar * k as f64;
            let (y0, y1) = (ypos(0.0f64.clamp(lo, hi)), ypos(shown));
            let y = y0.min(y1);
            let _ = writeln!(
                s,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\">\
                 <title>{} {}: {v:.4}</title></rect>",
                bar - 1.0,
                (y1 - y0).abs(),
                PALETTE[k % PALETTE.len()],
                escape(name),
                escape(cat)
            );
        }
        let cx = x0 + bar * ns / 2.0;
        let cy = top + plot_h + 14.0;
        let _ = writeln!(
            s,
            "<text x=\"{cx:.1}\" y=\"{cy:.1}\" text-anchor=\"end\" transform=\"rotate(-45 {cx:.1} {cy:.1})\">{}</text>",
            escape(cat)
        );
    }
    let axis = ypos(0.0f64.clamp(lo, hi));
    let _ = writeln!(
        s,
        "<line x1=\"{left}\" y1=\"{axis:.1}\" x2=\"{:.1}\" y2=\"{axis:.1}\" stroke=\"black\"/>",
        left + plot_w,
    );
    for (k, (name, _)) in series.iter().enumerate() {
        let y = top + plot_h + bottom + 18.0 * k as f64;
        let _ = writeln!(
            s,
            "<rect x=\"{left}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            y,
            PALETTE[k % PALETTE.len()],
            left + 18.0,
            y + 10.0,
            escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Interpolate white → dark blue for a value in [0, 1].
fn colour(v: f64) -> String {
    let v = v.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * v).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        lerp(247.0, 8.0),
        lerp(251.0, 48.0),
        lerp(255.0, 107.0)
    )
}

/// A heatmap with the value printed in each cell (`None` = no data, drawn grey).
pub fn heatmap(
    title: &str,
    row_label: &str,
    col_label: &str,
    rows: &[String],
    cols: &[String],
    values: &[Vec<Option<f64>>],
) -> String {
    let style = |v: f64| {
        (
            colour(v),
            format!("{:.0}", v * 100.0),
            if v > 0.55 { "white" } else { "black" },
        )
    };
    grid(title, row_label, col_label, rows, cols, values, &style)
}

/// Red (negative) → white (0) → blue (positive), saturating at ±`bound`.
fn diverging(v: f64, bound: f64) -> String {
    let t = (v / bound).clamp(-1.0, 1.0);
    let (r, g, b) = if t >= 0.0 {
        (33.0, 102.0, 172.0)
    } else {
        (178.0, 24.0, 43.0)
    };
    let a = t.abs();
    let lerp = |x: f64| (255.0 + (x - 255.0) * a).round() as u8;
    format!("#{:02x}{:02x}{:02x}", lerp(r), lerp(g), lerp(b))
}

/// A heatmap of signed differences (e.g. a model's mAP minus its baseline's), printed ×100
/// with a sign, on a diverging scale symmetric around 0.
pub fn delta_heatmap(
    title: &str,
    row_label: &str,
    col_label: &str,
    rows: &[String],
    cols: &[String],
    values: &[Vec<Option<f64>>],
) -> String {
    let bound = symmetric_bound(values.iter().flatten().flatten());
    let style = |v: f64| {
        (
            diverging(v, bound),
            format!("{:+.1}", v * 100.0),
            if v.abs() > 0.6 * bound {
                "white"
            } else {
                "black"
            },
        )
    };
    let title = format!("{title} (scale ±{:.1})", bound * 100.0);
    grid(&title, row_label, col_label, rows, cols, values, &style)
}

type CellStyle<'a> = dyn Fn(f64) -> (String, String, &'static str) + 'a;

fn grid(
    title: &str,
    row_label: &str,
    col_label: &str,
    rows: &[String],
    cols: &[String],
    values: &[Vec<Option<f64>>],
    style: &CellStyle<'_>,
) -> String {
    let cell = 40.0;
    let (left, top) = (70.0, 70.0);
    let (w, h) = (
        left + cell * cols.len() as f64 + 20.0,
        top + cell * rows.len() as f64 + 30.0,
    );
    let mut s = header(w.max(240.0), h);
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"20\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n\
         <text x=\"{:.1}\" y=\"42\" text-anchor=\"middle\">{}</text>\n\
         <text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">{}</text>",
        w.max(240.0) / 2.0,
        escape(title),
        left + cell * cols.len() as f64 / 2.0,
        escape(col_label),
        top + cell * rows.len() as f64 / 2.0,
        top + cell * rows.len() as f64 / 2.0,
        escape(row_label)
    );
    for (j, c) in cols.iter().enumerate() {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            left + cell * (j as f64 + 0.5),
            top - 8.0,
            escape(c)
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let y = top + cell * i as f64;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left - 6.0,
            y + cell / 2.0 + 4.0,
            escape(r)
        );
        for j in 0..cols.len() {
            let x = left + cell * j as f64;
            let v = values.get(i).and_then(|row| row.get(j)).copied().flatten();
            let (fill, label, ink) = match v {
                Some(v) if v.is_finite() => style(v),
                _ => ("#cccccc".to_string(), String::new(), "black"),
            };
            let _ = writeln!(
                s,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cell}\" height=\"{cell}\" fill=\"{fill}\" stroke=\"white\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{ink}\" font-size=\"11\">{label}</text>",
                x + cell / 2.0,
                y + cell / 2.0 + 4.0
            );
        }
    }
    s.push_str("</svg>\n");
    s
}
