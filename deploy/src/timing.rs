//! How long a deploy waits for Elastic Beanstalk, and how often it looks.

use std::time::Duration;

use ops::wait::Patience;

/// How long to wait, and how often to look.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Between two looks at the environment.
    pub poll: Duration,
    /// Longest wait for Ready and Green (and for a version's processing).
    pub timeout: Duration,
    /// How long a Ready environment may stay short of Green before the
    /// deploy counts as failed (health checks need a few rounds).
    pub green_grace: Duration,
}

impl Timing {
    /// The patience of each wait: look every `poll`, up to `timeout`.
    pub fn patience(&self) -> Patience {
        Patience {
            timeout: self.timeout,
            every: self.poll,
        }
    }
}
