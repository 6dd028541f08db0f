//! The progress bar: drawn on an interactive terminal only. Under cron (no TTY), with
//! `--no-progress` or with JSON logs there is none, and nothing here writes anything.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar on stderr when `enabled` and stderr is a terminal.
    pub fn new(enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Self { bar }
    }

    /// No bar at all.
    pub fn hidden() -> Self {
        Self { bar: None }
    }

    pub fn start(&self, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    pub fn update(&self, deleted: u64, failed: u64, in_flight: u64, rate_per_s: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(deleted + failed);
            bar.set_message(format!(
                "deleted {deleted} · failed {failed} · in flight {in_flight} · rate {rate_per_s:.2}/s"
            ));
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
