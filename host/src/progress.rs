//! Progress bars (indicatif) behind the SDK's [`ProgressSink`].

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RArc, RStr};
use clisc_sdk::progress::{ProgressSink, ProgressSink_TO};
use clisc_sdk::ProgressSinkBox;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Draws one bar per task on stderr; hidden when quiet.
#[derive(Clone)]
pub struct Bars {
    multi: MultiProgress,
    bars: Arc<Mutex<HashMap<String, ProgressBar>>>,
    prefix: String,
}

impl Bars {
    /// Bars on stderr, or nowhere when `quiet`.
    pub fn new(quiet: bool) -> Self {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        Self {
            multi: MultiProgress::with_draw_target(target),
            bars: Default::default(),
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
