//! # clisc progress
//!
//! Progress behind the SDK's [`ProgressSink`]: bars (indicatif) on a
//! terminal, log lines otherwise.
//!
//! When stderr is not a terminal (a Slurm log, CI, `nohup`) bars draw
//! nothing, so each task instead logs a line when it starts, on its first
//! update `LINE_INTERVAL` or more after its previous line while it runs
//! (a task that reports rarely logs rarely), and when it ends: task,
//! position, percentage, elapsed time,
//! an estimate of the time left, and the task's message (for training:
//! the loss). `CLISC_PROGRESS_INTERVAL` (seconds) changes the interval.
#![warn(unreachable_pub)]

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RArc, RStr};
use clisc_sdk::progress::{ProgressSink, ProgressSink_TO};
use clisc_sdk::ProgressSinkBox;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest time between two progress lines of a running task when stderr
/// is not a terminal.
const LINE_INTERVAL: Duration = Duration::from_secs(30);

/// Draws one bar per task on stderr, or logs progress lines when stderr
/// is not a terminal; silent when quiet.
#[derive(Clone)]
pub struct Bars {
    multi: MultiProgress,
    bars: Arc<Mutex<HashMap<String, ProgressBar>>>,
    /// Progress lines instead of bars, with their interval.
    lines: Option<Duration>,
    /// When each running task started and last logged a line.
    line_states: Arc<Mutex<HashMap<String, LineState>>>,
    prefix: String,
}

/// The last progress line of a task.
struct LineState {
    started: Instant,
    last_line: Instant,
}

impl Bars {
    /// Bars on stderr when it is a terminal, progress lines when it is not,
    /// nothing when `quiet`.
    pub fn new(quiet: bool) -> Self {
        let lines = (!quiet && !std::io::stderr().is_terminal()).then(line_interval);
        let target = if quiet || lines.is_some() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        Self {
            multi: MultiProgress::with_draw_target(target),
            bars: Default::default(),
            lines,
            line_states: Default::default(),
            prefix: String::new(),
        }
    }

    /// The same bars, with task names prefixed by `prefix` (the stage name).
    pub fn scoped(&self, prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            ..self.clone()
        }
    }

    /// An ABI-stable handle for plugins.
    pub fn sink(&self) -> ProgressSinkBox {
        ProgressSink_TO::from_ptr(RArc::new(self.clone()), TD_Opaque)
    }

    /// Updates (creating if needed) the bar of `task`.
    pub fn update(&self, task: &str, done: u64, total: u64, message: &str) {
        let key = if self.prefix.is_empty() {
            task.to_string()
        } else {
            format!("{}: {task}", self.prefix)
        };
        if let Some(interval) = self.lines {
            return self.line(&key, done, total, message, interval);
        }
        let mut bars = self.bars.lock().expect("progress lock");
        let bar = bars.entry(key.clone()).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>28} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(key.clone());
            bar
        });
        bar.set_length(total);
        bar.set_position(done);
        bar.set_message(message.to_string());
        if done >= total {
            bar.finish();
            bars.remove(&key);
        }
    }
}

impl Bars {
    /// Logs a progress line for `key` when it starts, ends, or has not
    /// logged for `interval`.
    fn line(&self, key: &str, done: u64, total: u64, message: &str, interval: Duration) {
        let now = Instant::now();
        let mut states = self.line_states.lock().expect("progress lock");
        let first = !states.contains_key(key);
        let state = states.entry(key.to_string()).or_insert(LineState {
            started: now,
            last_line: now,
        });
        let finished = done >= total;
        if !(first || finished || now - state.last_line >= interval) {
            return;
        }
        state.last_line = now;
        let elapsed = now - state.started;
        let pct = if total > 0 {
            100.0 * done as f64 / total as f64
        } else {
            100.0
        };
        let eta = if done > 0 && !finished && !first {
            let left = elapsed.as_secs_f64() * (total - done) as f64 / done as f64;
            format!(", ETA {}", clock(left))
        } else {
            String::new()
        };
        tracing::info!(
            "{key}: {done}/{total} ({pct:.0}%), {}{eta}{}{message}",
            clock(elapsed.as_secs_f64()),
            if message.is_empty() { "" } else { " - " },
        );
        if finished {
            states.remove(key);
        }
    }
}

/// `CLISC_PROGRESS_INTERVAL` seconds, or [`LINE_INTERVAL`].
fn line_interval() -> Duration {
    match std::env::var("CLISC_PROGRESS_INTERVAL") {
        Ok(v) => match v.parse::<f64>() {
            Ok(s) if s >= 0.0 && s.is_finite() => Duration::from_secs_f64(s),
            _ => {
                tracing::warn!(
                    "CLISC_PROGRESS_INTERVAL = {v:?} is not a number of seconds; using {}",
                    LINE_INTERVAL.as_secs()
                );
                LINE_INTERVAL
            }
        },
        Err(_) => LINE_INTERVAL,
    }
}

/// `h:mm:ss` or `m:ss`.
fn clock(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

impl ProgressSink for Bars {
    fn report(&self, task: RStr<'_>, done: u64, total: u64, message: RStr<'_>) {
        self.update(task.as_str(), done, total, message.as_str());
    }
    fn log(&self, message: RStr<'_>) {
        let line = if self.prefix.is_empty() {
            message.to_string()
        } else {
            format!("{}: {}", self.prefix, message)
        };
        self.multi.suspend(|| tracing::info!("{line}"));
    }
}

#[cfg(test)]
mod tests {
    use super::clock;

    #[test]
    fn clock_reads_like_a_stopwatch() {
        assert_eq!(clock(0.4), "0:00");
        assert_eq!(clock(75.0), "1:15");
        assert_eq!(clock(3723.0), "1:02:03");
    }
}
