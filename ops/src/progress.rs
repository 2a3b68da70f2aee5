//! Progress of a long operation (`api db provision`, `deploy`) on stderr,
//! for the person watching or the CI log.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One line per change, with the time since the start; on a terminal a
/// spinner under those lines keeps the latest one and the clock moving
/// while nothing changes. Off a terminal (a CI log, a pipe) the spinner
/// draws nothing (indicatif hides it) and the lines are all there is.
#[derive(Debug)]
pub struct Progress {
    /// Starts each line: `rds`, `deploy`.
    label: &'static str,
    /// indicatif's spinner on stderr, hidden off a terminal; its clock
    /// (started with it) times the lines.
    spinner: ProgressBar,
}

impl Progress {
    /// Starts the clock; the lines start with `label`.
    pub fn new(label: &'static str) -> Progress {
        let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            spinner.set_style(style);
        }
        if !spinner.is_hidden() {
            spinner.enable_steady_tick(Duration::from_millis(200));
        }
        Progress { label, spinner }
    }

    /// Prints `message` as a line; on a terminal it also becomes the
    /// spinner's.
    pub fn say(&self, message: &str) {
        let line = self.line(message);
        if self.spinner.is_hidden() {
            eprintln!("{line}");
        } else {
            self.spinner.println(line);
            self.spinner.set_message(message.to_owned());
        }
    }

    /// Runs `work` with the spinner off the screen: for a child process
    /// that writes (or draws its own progress) on the same terminal.
    pub fn suspend<R>(&self, work: impl FnOnce() -> R) -> R {
        self.spinner.suspend(work)
    }

    fn line(&self, message: &str) -> String {
        let secs = self.spinner.elapsed().as_secs();
        format!(
            "{}: [{:>2}m{:02}s] {message}",
            self.label,
            secs / 60,
            secs % 60
        )
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.spinner.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::Progress;

    #[test]
    fn a_line_carries_the_label_and_the_time_since_the_start() {
        let progress = Progress::new("rds");
        assert_eq!(progress.line("creating"), "rds: [ 0m00s] creating");
    }

    #[test]
    fn off_a_terminal_the_spinner_draws_nothing() {
        // The test harness's stderr is captured, not a terminal.
        let progress = Progress::new("deploy");
        assert!(progress.spinner.is_hidden());
        progress.say("still printed as a line");
    }
}
