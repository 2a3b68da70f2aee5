//! How many statements the store keeps in flight: a limit between 1 and
//! `database.max_connections`, chosen from the latency requests see.
//!
//! The family is the latency-driven limiters of Netflix's
//! concurrency-limits (TCP Vegas, gradient), which move a limit by what
//! latency says about queueing. Their usual signal, a statement's time
//! against its least time, misleads a store that batches: fewer
//! statements in flight make larger batches, which take longer without
//! any queueing, and steady load makes the recent average the norm (the
//! gradient limiter then climbs to the maximum whatever it costs). So the
//! signal here is the whole wait of a request in the store, from joining
//! the queue to its reply, and the limit is found by trying its
//! neighbours, as a hill climber does:
//! - every [`WINDOW`] (with [`MIN_REQUESTS`] answered, or a second), the
//!   mean wait of the window's requests is kept for the limit in force
//!   (the latest [`KEPT`] per limit, none older than [`MEMORY`]);
//! - after [`PROBE_EVERY`] windows, the limit moves to a neighbour,
//!   alternately one higher (only while the load takes every slot) and one
//!   lower, for one window that is not judged (the queue drains or builds
//!   then, which would flatter a higher limit or blame a lower one) and
//!   [`PROBE_WINDOWS`] that are;
//! - the neighbour is kept when it did better: a higher limit when its
//!   mean wait is below the current one's by [`GAIN`] and by twice the
//!   standard error of the difference (window means on a busy machine
//!   vary by far more than [`GAIN`]), a lower one unless its mean wait is
//!   above by more than [`GAIN`]. Ties go down: fewer backends cost the
//!   database less and make larger, cheaper batches.
//!
//! Under a closed load (a fixed number of clients) the mean wait is the
//! requests in the store over the rate it serves them (Little's law), so a
//! shorter wait is a higher rate; under an open load it is what clients
//! wait. A database that queues statements inside (few cores, or cores
//! shared with the service) settles low; one with idle cores climbs. A
//! slow or stalled database makes every limit as slow, and the ties bring
//! it down to 1 while the queue in front fills and answers 503 at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::metrics::StoreMetrics;

/// How long a window lasts at least.
pub(super) const WINDOW: Duration = Duration::from_millis(100);

/// Requests a window needs before [`WINDOW`] is enough (any number once a
/// second has passed).
const MIN_REQUESTS: u64 = 32;

/// Windows between probes.
pub(super) const PROBE_EVERY: u32 = 5;

/// Windows a probe is judged on (after the one that settles it).
const PROBE_WINDOWS: u32 = 2;

/// How much less a higher limit must make requests wait to be kept, and
/// how much more a lower one may.
pub(super) const GAIN: f64 = 0.03;

/// Window means kept per limit: the latest [`KEPT`], none older than
/// [`MEMORY`] (what a limit did under another load says little now).
const KEPT: usize = 8;
const MEMORY: Duration = Duration::from_secs(10);

/// The limit, the gate that enforces it, and what moves it.
#[derive(Debug)]
pub(super) struct Limiter {
    /// The most the limit may be: `database.max_connections`.
    max: usize,
    /// Whether the limit moves; when not, it is `max`.
    adaptive: bool,
    /// One permit per statement in flight; as many permits exist as the
    /// limit says (more only while a lowered limit waits for statements
    /// to end).
    gate: Semaphore,
    /// The limit now, for reading without the lock.
    current: AtomicUsize,
    state: Mutex<State>,
    /// Where the limit is reported.
    metrics: Arc<StoreMetrics>,
}

#[derive(Debug)]
struct State {
    /// The limit in force (a probe's, during a probe).
    limit: usize,
    /// The limit a probe returns to.
    home: usize,
    /// Permits that exist: free ones plus those in flight.
    permits: usize,
    in_flight: usize,
    window: Window,
    /// Whether the current window is the first after the limit moved:
    /// the queue drains or builds then, so it is not judged.
    settling: bool,
    /// Windows judged since the limit moved, and whether the next probe
    /// goes up.
    steady: u32,
    probe_up: bool,
    /// Per limit (index `limit - 1`): the mean waits of its latest
    /// windows, in seconds.
    waits: Vec<std::collections::VecDeque<(Instant, f64)>>,
}

/// The mean of `samples`, and the variance of that mean (unknown with
/// fewer than 2).
fn mean_and_error(samples: &std::collections::VecDeque<(Instant, f64)>) -> Option<(f64, f64)> {
    let n = samples.len() as f64;
    if samples.is_empty() {
        return None;
    }
    let mean = samples.iter().map(|(_, wait)| wait).sum::<f64>() / n;
    if samples.len() < 2 {
        return Some((mean, f64::INFINITY));
    }
    let variance = samples
        .iter()
        .map(|(_, wait)| (wait - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0);
    Some((mean, variance / n))
}

/// What the requests of the current window waited.
#[derive(Debug)]
struct Window {
    started: Instant,
    requests: u64,
    /// Seconds waited, summed over the window's requests.
    waited: f64,
    /// Slots taken, and of them those that took the last free one.
    taken: u32,
    last_free: u32,
}

impl Window {
    fn new(now: Instant) -> Window {
        Window {
            started: now,
            requests: 0,
            waited: 0.0,
            taken: 0,
            last_free: 0,
        }
    }
}

/// A statement's slot; dropping it frees the slot (or retires it, when
/// the limit was lowered meanwhile).
#[derive(Debug)]
pub(super) struct Slot<'a> {
    limiter: &'a Limiter,
    permit: Option<SemaphorePermit<'a>>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut state = self.limiter.lock();
        state.in_flight -= 1;
        if state.permits > state.limit
            && let Some(permit) = self.permit.take()
        {
            permit.forget();
            state.permits -= 1;
        }
    }
}

/// No slot was free by the deadline.
#[derive(Debug)]
pub(super) struct NoSlot;

impl Limiter {
    /// A limiter up to `max`, starting there (nothing measured says less
    /// yet); fixed at `max` unless `adaptive`.
    pub(super) fn new(max: usize, adaptive: bool, metrics: Arc<StoreMetrics>) -> Limiter {
        let max = max.max(1);
        metrics.limit(max);
        Limiter {
            metrics,
            max,
            adaptive,
            gate: Semaphore::new(max),
            current: AtomicUsize::new(max),
            state: Mutex::new(State {
                limit: max,
                home: max,
                permits: max,
                in_flight: 0,
                window: Window::new(Instant::now()),
                settling: false,
                steady: 0,
                probe_up: false,
                waits: vec![std::collections::VecDeque::new(); max],
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The limit now.
    pub(super) fn limit(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// A slot for one statement, by `deadline`.
    pub(super) async fn slot(&self, deadline: tokio::time::Instant) -> Result<Slot<'_>, NoSlot> {
        let permit = match tokio::time::timeout_at(deadline, self.gate.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => return Err(NoSlot),
        };
        let mut state = self.lock();
        state.in_flight += 1;
        state.window.taken += 1;
        if state.in_flight >= state.limit {
            state.window.last_free += 1;
        }
        Ok(Slot {
            limiter: self,
            permit: Some(permit),
        })
    }

    /// `requests` requests were answered, having waited `waited` in all
    /// since they joined the queue: may move the limit.
    pub(super) fn answered(&self, requests: usize, waited: Duration) {
        if !self.adaptive || requests == 0 {
            return;
        }
        self.answered_at(requests as u64, waited.as_secs_f64(), Instant::now());
    }

    fn answered_at(&self, requests: u64, waited: f64, now: Instant) {
        let mut state = self.lock();
        let window = &mut state.window;
        window.requests += requests;
        window.waited += waited;
        let elapsed = now.duration_since(window.started);
        if elapsed < WINDOW || (window.requests < MIN_REQUESTS && elapsed < Duration::from_secs(1))
        {
            return;
        }
        let mean = window.waited / window.requests as f64;
        let wanted = window.last_free * 2 >= window.taken;
        state.window = Window::new(now);
        let next = state.decide(mean, wanted, self.max, now);
        self.apply(&mut state, next);
    }

    /// Puts limit `next` in force.
    fn apply(&self, state: &mut State, next: usize) {
        if next == state.limit {
            return;
        }
        state.limit = next;
        if next > state.permits {
            self.gate.add_permits(next - state.permits);
            state.permits = next;
        } else {
            // Free permits past the limit go now; those in flight go as
            // their slots are dropped.
            state.permits -= self.gate.forget_permits(state.permits - next);
        }
        self.current.store(next, Ordering::Relaxed);
        self.metrics.limit(next);
    }
}

impl State {
    /// The limit for the next window, after one at `self.limit` whose
    /// requests waited `mean` seconds on average; `wanted` when the load
    /// took every slot.
    fn decide(&mut self, mean: f64, wanted: bool, max: usize, now: Instant) -> usize {
        if std::mem::take(&mut self.settling) {
            return self.limit;
        }
        let next = self.judge(mean, wanted, max, now);
        self.settling = next != self.limit;
        next
    }

    /// [`State::decide`] for a window that is judged.
    fn judge(&mut self, mean: f64, wanted: bool, max: usize, now: Instant) -> usize {
        let limit = self.limit;
        for samples in &mut self.waits {
            while samples
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > MEMORY)
            {
                samples.pop_front();
            }
        }
        let samples = &mut self.waits[limit - 1];
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back((now, mean));
        self.steady += 1;
        if limit != self.home {
            if self.steady < PROBE_WINDOWS {
                return limit;
            }
            // A probe ended: keep its limit if it did better.
            let probe = mean_and_error(&self.waits[limit - 1]);
            let home = mean_and_error(&self.waits[self.home - 1]);
            let keep = match (probe, home) {
                (Some((probe, probe_error)), Some((home, home_error))) => {
                    let better = home - probe;
                    if limit > self.home {
                        // Clearly better: by GAIN, and by twice the
                        // standard error of the difference (noise on a
                        // busy machine is far above GAIN).
                        better > GAIN * home && better.powi(2) > 4.0 * (probe_error + home_error)
                    } else {
                        -better <= GAIN * home
                    }
                }
                _ => false,
            };
            if keep {
                self.home = limit;
            }
            tracing::debug!(
                probe = limit,
                kept = keep,
                wait_ms = probe.map(|(mean, _)| mean * 1000.0),
                home_wait_ms = home.map(|(mean, _)| mean * 1000.0),
                "the store's concurrency probe ended"
            );
            self.steady = 0;
            return self.home;
        }
        if self.steady < PROBE_EVERY {
            return limit;
        }
        self.steady = 0;
        self.probe_up = !self.probe_up;
        let up = self.probe_up && wanted && limit < max;
        if up {
            limit + 1
        } else if limit > 1 {
            limit - 1
        } else {
            limit
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a limiter for `seconds` of simulated time with a closed load
    /// of `clients` requests always in the store, served by a model
    /// database whose rate at each limit is `rate(limit)` requests a
    /// second; returns the limits seen every 50 ms.
    fn simulate(
        limiter: &Limiter,
        seconds: u64,
        clients: f64,
        rate: impl Fn(usize) -> f64,
    ) -> Vec<usize> {
        let start = Instant::now();
        let mut now = start;
        let mut limits = Vec::new();
        let mut next_sample = Duration::ZERO;
        // Deterministic noise of ±2 % on each batch.
        let mut noise = 0.98;
        while now.duration_since(start) < Duration::from_secs(seconds) {
            let limit = limiter.limit();
            {
                let mut state = limiter.lock();
                state.window.taken += 1;
                state.window.last_free += 1;
            }
            // A batch of 16 requests; each waited clients / rate (Little).
            let served = rate(limit) * noise;
            noise = if noise > 1.0 { 0.98 } else { noise + 0.01 };
            now += Duration::from_secs_f64(16.0 / served);
            limiter.answered_at(16, 16.0 * clients / served, now);
            while now.duration_since(start) >= next_sample {
                limits.push(limiter.limit());
                next_sample += Duration::from_millis(50);
            }
        }
        limits
    }

    /// The limit the load spent most of the last `tail` samples at.
    fn settled(limits: &[usize], tail: usize) -> usize {
        let last = &limits[limits.len() - tail..];
        let mut best = (0, 0);
        for &limit in last {
            let count = last.iter().filter(|&&other| other == limit).count();
            if count > best.1 {
                best = (limit, count);
            }
        }
        best.0
    }

    #[test]
    fn a_database_that_queues_settles_where_it_serves_most() {
        // Best at 2, 10 % worse at 4 (this machine's shape: the database
        // shares its cores with the service).
        let limiter = Limiter::new(4, true, Arc::default());
        let rates = [20_000.0, 21_000.0, 20_000.0, 19_000.0];
        let limits = simulate(&limiter, 30, 32.0, |limit| rates[limit - 1]);
        assert_eq!(settled(&limits, 200), 2, "limits every 50 ms: {limits:?}");
    }

    #[test]
    fn a_database_with_idle_cores_gets_more_in_flight() {
        // Eight cores: each statement in flight adds what one serves.
        let limiter = Limiter::new(8, true, Arc::default());
        {
            // Start from 1, as after a slow spell.
            let mut state = limiter.lock();
            limiter.apply(&mut state, 1);
            state.home = 1;
        }
        let limits = simulate(&limiter, 30, 64.0, |limit| 5_000.0 * limit as f64);
        assert_eq!(settled(&limits, 100), 8, "limits every 50 ms: {limits:?}");
    }

    #[test]
    fn a_stalled_database_brings_the_limit_down_to_one() {
        // Every limit as slow: ties go down.
        let limiter = Limiter::new(4, true, Arc::default());
        let limits = simulate(&limiter, 60, 32.0, |_| 100.0);
        assert_eq!(settled(&limits, 200), 1, "limits every 50 ms: {limits:?}");
    }

    #[test]
    fn a_fixed_limit_never_moves() {
        let limiter = Limiter::new(4, false, Arc::default());
        for _ in 0..1000 {
            limiter.answered(16, Duration::from_secs(5));
        }
        assert_eq!(limiter.limit(), 4);
    }

    #[tokio::test]
    async fn a_lowered_limit_retires_slots_as_statements_end() {
        let limiter = Limiter::new(3, true, Arc::default());
        let far = tokio::time::Instant::now() + Duration::from_secs(5);
        let slots = [
            limiter.slot(far).await.unwrap(),
            limiter.slot(far).await.unwrap(),
            limiter.slot(far).await.unwrap(),
        ];
        limiter.apply(&mut limiter.lock(), 1);
        drop(slots);
        assert_eq!(limiter.gate.available_permits(), 1);
        let one = limiter.slot(far).await.unwrap();
        let soon = tokio::time::Instant::now() + Duration::from_millis(50);
        assert!(
            limiter.slot(soon).await.is_err(),
            "a second slot past the limit"
        );
        drop(one);
        assert!(limiter.slot(soon).await.is_ok());
    }

    #[tokio::test]
    async fn a_limit_lowered_while_idle_holds_at_once() {
        let limiter = Limiter::new(4, true, Arc::default());
        limiter.apply(&mut limiter.lock(), 2);
        let far = tokio::time::Instant::now() + Duration::from_secs(5);
        let _slots = [
            limiter.slot(far).await.unwrap(),
            limiter.slot(far).await.unwrap(),
        ];
        let soon = tokio::time::Instant::now() + Duration::from_millis(50);
        assert!(
            limiter.slot(soon).await.is_err(),
            "a third slot past a limit of 2"
        );
        limiter.apply(&mut limiter.lock(), 3);
        assert!(
            limiter.slot(soon).await.is_ok(),
            "a third slot once raised to 3"
        );
    }
}
