//! The one "look, check the deadline, sleep" loop of the fixtures: every
//! wait for a server, a cluster or a count goes through [`wait_until`].

use std::io;
use std::time::{Duration, Instant};

/// How often [`wait_until`] looks.
const LOOK_EVERY: Duration = Duration::from_millis(10);

/// Looks every 10 ms until `ready` answers true and returns how long that
/// took; a failed look ends the wait with its error, and `within` passing
/// first with "waited … for `what`" (an [`io::ErrorKind::TimedOut`]).
pub fn wait_until<E: From<io::Error>>(
    what: &str,
    within: Duration,
    mut ready: impl FnMut() -> Result<bool, E>,
) -> Result<Duration, E> {
    let started = Instant::now();
    loop {
        if ready()? {
            return Ok(started.elapsed());
        }
        let Some(left) = within
            .checked_sub(started.elapsed())
            .filter(|left| !left.is_zero())
        else {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("waited {within:?} for {what}"),
            )
            .into());
        };
        std::thread::sleep(LOOK_EVERY.min(left));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_ends_when_ready_on_a_failed_look_or_at_the_deadline() {
        let mut looks = 0;
        let took = wait_until::<io::Error>("the third look", Duration::from_secs(30), || {
            looks += 1;
            Ok(looks == 3)
        })
        .expect("ready on the third look");
        assert_eq!(looks, 3);
        assert!(took >= 2 * LOOK_EVERY, "{took:?}");

        let failed = wait_until::<io::Error>("nothing", Duration::from_secs(30), || {
            Err(io::Error::other("the process exited"))
        })
        .unwrap_err();
        assert_eq!(failed.to_string(), "the process exited");

        let timed_out = wait_until::<io::Error>("a reply", Duration::from_millis(30), || Ok(false))
            .unwrap_err();
        assert_eq!(timed_out.kind(), io::ErrorKind::TimedOut);
        assert_eq!(timed_out.to_string(), "waited 30ms for a reply");
    }
}
