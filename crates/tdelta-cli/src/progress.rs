//! Progress bars on stderr, shown only on a terminal and without `-q`.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A [`tdelta::Progress`] drawing one indicatif bar per phase.
pub struct Bar {
    enabled: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bar {
    /// A bar that draws only when stderr is a terminal and not `quiet`.
    pub fn new(quiet: bool) -> Bar {
        Bar { enabled: !quiet && std::io::stderr().is_terminal(), bar: Mutex::new(None) }
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
        let what = what.to_string();
        self.with(|b| {
            let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
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
