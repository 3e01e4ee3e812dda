//! Progress bars on stderr, shown only on a terminal and without `-q`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A [`tdelta::Progress`] drawing one indicatif bar per phase, in the
/// units of the summaries: sizes in KiB/MiB/GiB, speeds in MB/s (10^6).
pub struct Bar {
    enabled: bool,
    bar: Mutex<Option<ProgressBar>>,
    /// Versions in the series being processed (demo, bench): each phase
    /// then says which version of how many it is on.
    series: Option<u64>,
    /// How many times each phase began.
    seen: Mutex<HashMap<String, u64>>,
}

impl Bar {
    /// A bar that draws only when stderr is a terminal and not `quiet`.
    pub fn new(quiet: bool) -> Bar {
        Bar {
            enabled: !quiet && std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
            series: None,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// A bar for a series of `versions` processed in order: the n-th time
    /// a phase (`pack`, `[2/5] zstd restore`) begins, it is on version n
    /// (counted again from 1 on a repeat).
    pub fn series(quiet: bool, versions: u64) -> Bar {
        Bar { series: Some(versions.max(1)), ..Bar::new(quiet) }
    }

    /// The text shown for a phase: `pack v3/10` in a series.
    fn label(&self, what: &str) -> String {
        let Some(n) = self.series else { return what.to_string() };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let k = seen.entry(what.to_string()).or_insert(0);
        *k += 1;
        format!("{what} v{}/{n}", (*k - 1) % n + 1)
    }

    fn with(&self, f: impl FnOnce(&mut Option<ProgressBar>)) {
        if self.enabled {
            let mut g = self.bar.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut g);
        }
    }
}

impl tdelta::Progress for Bar {
    fn begin(&self, what: &str, total: u64) {
        let what = self.label(what);
        self.with(|b| {
            let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {decimal_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            pb.set_style(style);
            pb.set_message(what);
            *b = Some(pb);
        });
    }

    fn advance(&self, n: u64) {
        self.with(|b| {
            if let Some(pb) = b {
                pb.inc(n);
            }
        });
    }

    fn end(&self) {
        self.with(|b| {
            if let Some(pb) = b.take() {
                pb.finish_and_clear();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_phases_say_which_version_of_how_many() {
        let b = Bar::series(true, 3);
        let got: Vec<String> = ["packing", "restoring", "packing", "[1/2] zstd pack", "packing", "packing"]
            .iter()
            .map(|w| b.label(w))
            .collect();
        assert_eq!(
            got,
            ["packing v1/3", "restoring v1/3", "packing v2/3", "[1/2] zstd pack v1/3", "packing v3/3", "packing v1/3"]
        );
        assert_eq!(Bar::new(true).label("packing"), "packing");
    }
}
