//! A live progress display of a simulator run: a bar on a terminal, a line every few seconds
//! otherwise (CI logs).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;
use weir_simulator::Counters;

pub struct Progress {
    bar: ProgressBar,
    task: JoinHandle<()>,
}

fn summary(counters: &Counters, rate: f64) -> String {
    format!(
        "accepted {} · rejected {} · failed {} · {rate:.0}/s",
        counters.accepted.load(Ordering::Relaxed),
        counters.rejected.load(Ordering::Relaxed),
        counters.failed.load(Ordering::Relaxed),
    )
}

impl Progress {
    /// Starts displaying `counters` of a run of `total` readings.
    pub fn start(counters: Arc<Counters>, total: u64) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = if terminal {
            ProgressBar::new(total)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} sent · {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let display = bar.clone();
        let task = tokio::spawn(async move {
            let tick = if terminal {
                Duration::from_millis(250)
            } else {
                Duration::from_secs(5)
            };
            let mut interval = tokio::time::interval(tick);
            let mut last = 0;
            loop {
                interval.tick().await;
                let sent = counters.sent.load(Ordering::Relaxed);
                let rate = (sent - last) as f64 / tick.as_secs_f64();
                last = sent;
                display.set_position(sent);
                display.set_message(summary(&counters, rate));
                if !terminal && sent > 0 {
                    eprintln!("sent {sent}/{total} · {}", summary(&counters, rate));
                }
            }
        });
        Progress { bar, task }
    }

    pub fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}
