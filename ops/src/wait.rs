//! The one "look, check the deadline, sleep" loop of `api db provision` and
//! `deploy` (the SDK's own waiters report no progress and know none of
//! the states these loops refuse).

use std::time::{Duration, Instant};

/// What one look found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look<T> {
    /// The wait is over.
    Done(T),
    /// Not yet: the state seen, for the message when time runs out.
    NotYet(String),
}

/// How long to wait, and how often to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patience {
    /// Longest wait, from the first look.
    pub timeout: Duration,
    /// Between two looks (never past the timeout).
    pub every: Duration,
}

/// A wait that ran out of time: the last state seen and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOut {
    /// What the last look said.
    pub last: String,
    /// From the first look to the last.
    pub waited: Duration,
}

/// Looks until `look` says done, fails (its error ends the wait at once),
/// or `patience.timeout` has passed since the first look, which
/// `timed_out` turns into the caller's error. `look` may keep state
/// between looks (the last status shown, events followed).
pub async fn until<T, E>(
    patience: Patience,
    mut look: impl AsyncFnMut() -> Result<Look<T>, E>,
    timed_out: impl FnOnce(TimedOut) -> E,
) -> Result<T, E> {
    let started = Instant::now();
    loop {
        let last = match look().await? {
            Look::Done(value) => return Ok(value),
            Look::NotYet(last) => last,
        };
        let waited = started.elapsed();
        let Some(left) = patience
            .timeout
            .checked_sub(waited)
            .filter(|left| !left.is_zero())
        else {
            return Err(timed_out(TimedOut { last, waited }));
        };
        tokio::time::sleep(patience.every.min(left)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: Patience = Patience {
        timeout: Duration::from_secs(5),
        every: Duration::from_millis(1),
    };

    #[tokio::test]
    async fn it_looks_until_done_keeping_state_between_looks() {
        let mut seen = Vec::new();
        let result: Result<u32, String> = until(
            QUICK,
            async || {
                seen.push(seen.len());
                Ok(if seen.len() == 3 {
                    Look::Done(7)
                } else {
                    Look::NotYet("creating".to_owned())
                })
            },
            |timed_out| timed_out.last,
        )
        .await;
        assert_eq!(result, Ok(7));
        assert_eq!(seen, [0, 1, 2]);
    }

    #[tokio::test]
    async fn an_error_ends_the_wait_at_once() {
        let mut looks = 0;
        let result: Result<(), String> = until(
            QUICK,
            async || {
                looks += 1;
                Err("failed".to_owned())
            },
            |_| "timed out".to_owned(),
        )
        .await;
        assert_eq!(result, Err("failed".to_owned()));
        assert_eq!(looks, 1);
    }

    #[tokio::test]
    async fn the_timeout_names_the_last_state_seen() {
        let patience = Patience {
            timeout: Duration::from_millis(30),
            every: Duration::from_millis(10),
        };
        let mut looks = 0;
        let waiting = until(
            patience,
            async || {
                looks += 1;
                Ok(Look::NotYet(format!("look {looks}")))
            },
            |timed_out| timed_out,
        );
        let result: Result<(), TimedOut> = tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("the wait gives up at its timeout, not never");
        let timed_out = result.unwrap_err();
        assert!(timed_out.waited >= patience.timeout, "{timed_out:?}");
        assert_eq!(timed_out.last, format!("look {looks}"));
        assert!(looks >= 2, "looked again before giving up: {looks}");
    }
}
