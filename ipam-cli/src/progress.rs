//! Progress on a terminal: a bar while blocks are read one by one, a
//! spinner while a long read or check runs. Drawn on stderr, and only when
//! stderr is a terminal, so that piped output and tests see nothing of it.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Below this many blocks a bar would only flicker.
const BAR_THRESHOLD: u64 = 32;

/// How a bar is drawn.
const BAR_TEMPLATE: &str = "{msg} [{bar:40}] {pos}/{len} ({eta})";

/// A progress indicator, hidden when stderr is not a terminal.
pub struct Progress(ProgressBar);

impl Progress {
    /// A bar over `len` steps, shown when there are many.
    pub fn bar(len: u64, message: &str) -> Progress {
        if len < BAR_THRESHOLD || !std::io::stderr().is_terminal() {
            return Progress(ProgressBar::hidden());
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(BAR_TEMPLATE) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(message.to_string());
        Progress(bar)
    }

    /// A spinner with a message.
    pub fn spinner(message: &str) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress(ProgressBar::hidden());
        }
        let spinner = ProgressBar::new_spinner();
        spinner.set_draw_target(ProgressDrawTarget::stderr());
        spinner.set_message(message.to_string());
        spinner.enable_steady_tick(Duration::from_millis(120));
        Progress(spinner)
    }

    /// One step done.
    pub fn inc(&self) {
        self.0.inc(1);
    }

    /// Changes the message.
    pub fn message(&self, message: &str) {
        self.0.set_message(message.to_string());
    }

    /// Removes the indicator from the terminal.
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_template_is_one_indicatif_accepts() {
        assert!(ProgressStyle::with_template(BAR_TEMPLATE).is_ok());
    }
}
