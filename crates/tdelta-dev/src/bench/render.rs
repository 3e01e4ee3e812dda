//! CSV, JSON and SVG renderings of a [`BenchReport`].

use std::fmt::Write as _;

use super::{BenchReport, StrategyResult};

/// The columns of [`BenchReport::to_csv`], in order:
///
/// - `strategy`: name, as `--strategies` takes it;
/// - `lossy`: `true` or `false`;
/// - `versions`: versions in the series;
/// - `raw_bytes`: bytes of the whole series;
/// - `stored_bytes`: bytes on disk of the store after the last version;
/// - `ratio`: `stored_bytes / raw_bytes` (smaller is better);
/// - `pack_mb_s`: source MB (10^6 B) stored per second over the series;
/// - `restore_newest_mb_s`: MB/s restoring the newest version;
/// - `restore_worst_mb_s`: MB/s restoring the slowest version;
/// - `restore_worst_version`: that version, 0-based;
/// - `max_levels`: deepest chain one block needed, over all versions;
/// - `verified`: every version restored bit-exactly;
/// - `peak_rss_bytes`: peak resident memory while it ran (empty if unknown);
/// - `max_abs_err`, `rel_l2_err`, `delta_rel_l2_err`: error of a lossy
///   strategy, worst version: largest absolute element error, relative L2
///   error of the weights, and of the deltas (empty if lossless);
/// - `added_bytes`: bytes each version added, `;`-separated.
pub const CSV_COLUMNS: &[&str] = &[
    "strategy",
    "lossy",
    "versions",
    "raw_bytes",
    "stored_bytes",
    "ratio",
    "pack_mb_s",
    "restore_newest_mb_s",
    "restore_worst_mb_s",
    "restore_worst_version",
    "max_levels",
    "verified",
    "peak_rss_bytes",
    "max_abs_err",
    "rel_l2_err",
    "delta_rel_l2_err",
    "added_bytes",
];

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// Escapes text for XML content and attribute values.
fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

/// One CSV field, quoted when it holds a comma, quote or newline.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

/// Line colours of the chart, one per strategy (cycled).
const COLORS: &[&str] =
    &["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

/// Human size for chart labels (binary units).
fn short_bytes(n: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{v:.0} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// Dash patterns of the lines, one per strategy (cycled with an offset
/// from the colours, so no two of the first 30 strategies look alike).
const DASHES: &[&str] = &["", "8 4", "2 3", "10 3 2 3", "4 4"];

/// Marker shapes at the points of a line, drawn as SVG path data around
/// (0, 0) (cycled like the dashes).
const MARKERS: &[&str] = &[
    "M-3.5,0a3.5,3.5 0 1,0 7,0a3.5,3.5 0 1,0 -7,0Z",
    "M-3.5,-3.5h7v7h-7Z",
    "M0,-4.5L4,3h-8Z",
    "M0,-4.5L4.5,0L0,4.5L-4.5,0Z",
    "M-4,-4L4,4M4,-4L-4,4",
];

/// A binary unit (B, KiB, MiB…) for an axis whose largest value is `max`:
/// its name and size in bytes.
fn byte_unit(max: f64) -> (&'static str, f64) {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut u = 0;
    let mut size = 1.0;
    while max / size >= 1024.0 && u + 1 < UNITS.len() {
        size *= 1024.0;
        u += 1;
    }
    (UNITS[u], size)
}

/// A "nice" tick step for a range: 1, 2 or 5 times a power of ten, giving
/// at most about `ticks` intervals.
fn nice_step(range: f64, ticks: f64) -> f64 {
    if range <= 0.0 || !range.is_finite() {
        return 1.0;
    }
    let raw = range / ticks;
    let p = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= raw {
            return m * p;
        }
    }
    10.0 * p
}

/// A tick label without needless decimals (`40`, `2.5`).
fn tick_label(v: f64) -> String {
    let t = format!("{v:.3}");
    t.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Spreads label positions (sorted by wanted y) so that consecutive ones
/// are at least `gap` apart, none below `hi` when they fit above it.
fn spread(wanted: &[f64], gap: f64, hi: f64) -> Vec<f64> {
    let mut y: Vec<f64> = wanted.to_vec();
    for i in 1..y.len() {
        if y[i] < y[i - 1] + gap {
            y[i] = y[i - 1] + gap;
        }
    }
    // Pushed past the bottom: shift everything up, keeping the gaps.
    if let Some(&last) = y.last()
        && last > hi
    {
        let up = last - hi;
        for v in y.iter_mut() {
            *v -= up;
        }
        for i in (0..y.len().saturating_sub(1)).rev() {
            if y[i] > y[i + 1] - gap {
                y[i] = y[i + 1] - gap;
            }
        }
    }
    y
}

impl BenchReport {
    /// The report as pretty JSON (the fields of [`BenchReport`] and
    /// [`StrategyResult`]).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// The report as CSV: a header line with [`CSV_COLUMNS`], then one line
    /// per strategy.
    pub fn to_csv(&self) -> String {
        let mut out = CSV_COLUMNS.join(",");
        out.push('\n');
        for r in &self.strategies {
            let added: Vec<String> = r.added_bytes.iter().map(u64::to_string).collect();
            let row = [
                field(&r.strategy),
                r.lossy.to_string(),
                self.versions.to_string(),
                r.raw_bytes.to_string(),
                r.stored_bytes.to_string(),
                format!("{:.6}", r.ratio),
                format!("{:.1}", r.pack_mb_s),
                format!("{:.1}", r.restore_newest_mb_s),
                format!("{:.1}", r.restore_worst_mb_s),
                r.restore_worst_version.to_string(),
                r.max_levels.iter().max().copied().unwrap_or(0).to_string(),
                r.verified.to_string(),
                opt(r.peak_rss_bytes),
                opt(r.max_abs_err),
                opt(r.rel_l2_err),
                opt(r.delta_rel_l2_err),
                added.join(";"),
            ];
            out.push_str(&row.join(","));
            out.push('\n');
        }
        out
    }

    /// A self-contained SVG chart: stored bytes after each version, one
    /// line per strategy (top), and pack / restore-newest /
    /// restore-worst throughput bars per strategy (bottom). Each strategy's
    /// line and bars sit in one `<g class="series" data-strategy="NAME">`.
    pub fn to_svg(&self) -> String {
        let n = self.strategies.len().max(1);
        let w = 1000.0f64;
        let (left, right) = (90.0, 260.0);
        let pw = w - left - right;
        // Room for one end label per strategy beside the lines.
        let (top1, h1) = (50.0, (16.0 * n as f64 + 20.0).max(300.0));
        let (top2, h2) = (top1 + h1 + 90.0, 240.0);
        let h = top2 + h2 + 120.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect x="0" y="0" width="{w}" height="{h}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{left}" y="24" font-size="16" font-weight="bold">tdelta bench: {} versions, {} raw</text>"#,
            self.versions,
            xml(&short_bytes(self.raw_bytes as f64))
        );

        // Top: stored bytes vs version, the axis fitted to the data (from a
        // tick at or below the smallest value to one at or above the
        // largest), ticks at round values of the unit it names.
        let all = self.strategies.iter().flat_map(|r| r.stored_after.iter().map(|&b| b as f64));
        let (dmin, dmax) = all.fold((f64::INFINITY, 0.0f64), |(lo, hi), b| (lo.min(b), hi.max(b)));
        let dmin = if dmin.is_finite() { dmin } else { 0.0 };
        let (unit, usize_) = byte_unit(dmax);
        let (umin, umax) = (dmin / usize_, dmax / usize_);
        let step = nice_step((umax - umin).max(umax * 0.02).max(1e-9), 6.0);
        let lo_tick = (umin / step).floor() * step;
        let hi_tick = ((umax / step).ceil() * step).max(lo_tick + step);
        let (ylo, yhi) = (lo_tick * usize_, hi_tick * usize_);
        let vmax = self.versions.saturating_sub(1).max(1) as f64;
        let x_of = |v: usize| left + pw * v as f64 / vmax;
        let y_of = |b: f64| top1 + h1 - h1 * (b - ylo) / (yhi - ylo);
        let _ = writeln!(s, r#"<g class="axes">"#);
        let _ = writeln!(
            s,
            r#"<text x="{left}" y="{}" font-weight="bold">Store size after each version, {unit}</text>"#,
            top1 - 10.0
        );
        let ticks = ((hi_tick - lo_tick) / step).round() as usize;
        for k in 0..=ticks {
            let u = lo_tick + step * k as f64;
            let y = y_of(u * usize_);
            let _ = writeln!(
                s,
                r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text class="y-tick" x="{:.1}" y="{:.1}" text-anchor="end">{} {unit}</text>"##,
                left + pw,
                left - 6.0,
                y + 4.0,
                tick_label(u)
            );
        }
        for v in 0..self.versions {
            let x = x_of(v);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#999"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">v{v}</text>"##,
                top1 + h1,
                top1 + h1 + 4.0,
                top1 + h1 + 18.0
            );
        }
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{top1}" x2="{left}" y2="{:.1}" stroke="#333"/><line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
            top1 + h1,
            top1 + h1,
            left + pw,
            top1 + h1
        );
        let _ = writeln!(s, "</g>");

        // Bottom: throughput bars.
        // Round ticks in MB/s, with headroom above the tallest bar for its
        // value.
        let top_mb = self
            .strategies
            .iter()
            .flat_map(|r| [r.pack_mb_s, r.restore_newest_mb_s, r.restore_worst_mb_s])
            .fold(0.0, f64::max)
            * 1.2;
        let mb_step = nice_step(top_mb, 5.0);
        let mb_ticks = (top_mb / mb_step).ceil().max(1.0) as usize;
        let mbmax = mb_step * mb_ticks as f64;
        let yb = |m: f64| top2 + h2 - h2 * m / mbmax;
        let slot = pw / n as f64;
        let bar = (slot * 0.8 / 3.0).min(28.0);
        let _ = writeln!(s, r#"<g class="axes">"#);
        let _ = writeln!(
            s,
            r#"<text x="{left}" y="{}" font-weight="bold">Throughput, MB/s (pack, restore newest, restore worst)</text>"#,
            top2 - 10.0
        );
        for k in 0..=mb_ticks {
            let m = mb_step * k as f64;
            let y = yb(m);
            let _ = writeln!(
                s,
                r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                left + pw,
                left - 6.0,
                y + 4.0,
                tick_label(m)
            );
        }
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
            top2 + h2,
            left + pw,
            top2 + h2
        );
        let _ = writeln!(s, "</g>");

        // End labels, one per line, spread so that none overlaps another;
        // a leader joins each to the end of its line.
        let ends: Vec<f64> =
            self.strategies.iter().map(|r| y_of(r.stored_after.last().copied().unwrap_or(0) as f64)).collect();
        let mut order: Vec<usize> = (0..ends.len()).collect();
        order.sort_by(|&a, &b| ends[a].total_cmp(&ends[b]).then(a.cmp(&b)));
        let placed = spread(&order.iter().map(|&i| ends[i]).collect::<Vec<_>>(), 16.0, top1 + h1);
        let mut label_y = vec![0.0; ends.len()];
        for (k, &i) in order.iter().enumerate() {
            label_y[i] = placed[k];
        }
        for (i, r) in self.strategies.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let dash = DASHES[(i + i / COLORS.len()) % DASHES.len()];
            let marker = MARKERS[(i + i / COLORS.len()) % MARKERS.len()];
            let dash_attr = if dash.is_empty() { String::new() } else { format!(r#" stroke-dasharray="{dash}""#) };
            let name = xml(&r.strategy);
            let _ = writeln!(s, r#"<g class="series" data-strategy="{name}">"#);
            let _ = writeln!(s, "<title>{name}</title>");
            let pts: Vec<String> = r
                .stored_after
                .iter()
                .enumerate()
                .map(|(v, &b)| format!("{:.1},{:.1}", x_of(v), y_of(b as f64)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline class="line" fill="none" stroke="{color}" stroke-width="2"{dash_attr} data-marker="{}" points="{}"/>"#,
                (i + i / COLORS.len()) % MARKERS.len(),
                pts.join(" ")
            );
            for (v, &b) in r.stored_after.iter().enumerate() {
                let _ = writeln!(
                    s,
                    r#"<path transform="translate({:.1},{:.1})" d="{marker}" fill="{color}" stroke="{color}" stroke-width="1.5"><title>{name} v{v}: {}</title></path>"#,
                    x_of(v),
                    y_of(b as f64),
                    xml(&short_bytes(b as f64))
                );
            }
            // End label: line sample, name, value after the last version.
            let last = r.stored_after.last().copied().unwrap_or(0);
            let (ex, ey) = (x_of(r.stored_after.len().saturating_sub(1)), ends[i]);
            let (lx, ly) = (left + pw + 14.0, label_y[i]);
            let _ = writeln!(
                s,
                r##"<line x1="{ex:.1}" y1="{ey:.1}" x2="{lx:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="0.8"/><line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"{dash_attr}/><path transform="translate({:.1},{ly:.1})" d="{marker}" fill="{color}" stroke="{color}" stroke-width="1.5"/><text class="end-label" x="{:.1}" y="{:.1}">{name} {}</text>"##,
                lx + 28.0,
                lx + 14.0,
                lx + 32.0,
                ly + 4.0,
                xml(&short_bytes(last as f64))
            );
            // Bars.
            let x0 = left + slot * i as f64 + (slot - 3.0 * bar) / 2.0;
            for (k, (what, m, opacity)) in [
                ("pack", r.pack_mb_s, 1.0),
                ("restore newest", r.restore_newest_mb_s, 0.65),
                ("restore worst", r.restore_worst_mb_s, 0.35),
            ]
            .into_iter()
            .enumerate()
            {
                let y = yb(m);
                let _ = writeln!(
                    s,
                    r#"<rect x="{:.1}" y="{y:.1}" width="{bar:.1}" height="{:.1}" fill="{color}" fill-opacity="{opacity}"><title>{name} {what}: {m:.0} MB/s</title></rect>"#,
                    x0 + bar * k as f64,
                    (top2 + h2 - y).max(0.0)
                );
                // The value, upright above its bar (bars are narrow).
                let tx = x0 + bar * k as f64 + bar / 2.0 + 3.5;
                let _ = writeln!(
                    s,
                    r#"<text x="{tx:.1}" y="{:.1}" font-size="10" transform="rotate(-90 {tx:.1} {:.1})">{m:.0}</text>"#,
                    y - 3.0,
                    y - 3.0
                );
            }
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end" transform="rotate(-30 {:.1} {:.1})">{name}</text>"#,
                x0 + 1.5 * bar,
                top2 + h2 + 16.0,
                x0 + 1.5 * bar,
                top2 + h2 + 16.0
            );
            let _ = writeln!(s, "</g>");
        }
        let _ = writeln!(
            s,
            r##"<text x="{left}" y="{:.1}" fill="#555">Bars: pack (solid), restore newest (medium), restore worst (light). Lower lines store less.</text>"##,
            h - 12.0
        );
        s.push_str("</svg>\n");
        s
    }
}

impl StrategyResult {
    /// Mean bytes added per version after the first (the cost of one more
    /// checkpoint), or the first version's bytes for a one-version series.
    pub fn mean_added(&self) -> u64 {
        match self.added_bytes.len() {
            0 => 0,
            1 => self.added_bytes[0],
            n => self.added_bytes[1..].iter().sum::<u64>() / (n as u64 - 1),
        }
    }
}
