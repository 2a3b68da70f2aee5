//! Write load for the fault scenarios: threads posting entries to a port,
//! each outcome recorded, and the check that every acknowledged write is
//! stored.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::ensure;
use domain::NewDataRequest;

use crate::http::{Reply, call, local};
use crate::postgres::Cluster;

/// What one `POST /data` got.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The scenario's phase when the request was sent.
    pub phase: u8,
    /// The reply, or why there was none (connection refused or reset).
    pub reply: Result<Reply, String>,
    /// How long the request took.
    pub latency: Duration,
    /// The id the API answered a 201 with.
    pub stored: Option<i64>,
}

impl Outcome {
    /// The status of the reply, if one came.
    pub fn status(&self) -> Option<u16> {
        self.reply.as_ref().ok().map(|reply| reply.status)
    }

    /// The id of an acknowledged (201) write.
    pub fn acknowledged_id(&self) -> Option<i64> {
        self.stored
    }
}

/// Writers posting to a port until [`Load::finish`] (or, with
/// `until_refused`, until the server stops accepting connections).
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicU8>,
    /// Writes acknowledged (201) so far.
    acknowledged: Arc<AtomicUsize>,
    writers: Vec<JoinHandle<Vec<Outcome>>>,
}

impl Load {
    /// Starts `writers` threads posting entries whose notes start with `label`.
    pub fn start(port: u16, writers: usize, label: &'static str, until_refused: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicU8::new(0));
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let writers = (0..writers)
            .map(|writer| {
                let (stop, phase) = (Arc::clone(&stop), Arc::clone(&phase));
                let acknowledged = Arc::clone(&acknowledged);
                std::thread::spawn(move || {
                    let api = local(port);
                    let mut outcomes = Vec::new();
                    for i in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let entry = NewDataRequest {
                            notes: format!("{label} {writer} write {i}"),
                            greeting: "load".to_owned(),
                        };
                        // No Idempotency-Key: the scenarios count what a
                        // client that cannot retry safely gets.
                        let write = api.create_entry(&entry, None);
                        let sent = Instant::now();
                        let phase_at_send = phase.load(Ordering::Relaxed);
                        let answer = call(&write).map_err(|error| error.to_string());
                        let refused = answer.is_err();
                        let stored = answer
                            .as_ref()
                            .ok()
                            .and_then(|(_, created)| created.as_ref().ok())
                            .map(|created| created.record.id);
                        if stored.is_some() {
                            acknowledged.fetch_add(1, Ordering::Relaxed);
                        }
                        outcomes.push(Outcome {
                            phase: phase_at_send,
                            reply: answer.map(|(reply, _)| reply),
                            latency: sent.elapsed(),
                            stored,
                        });
                        if refused && until_refused {
                            break;
                        }
                        if refused {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                    outcomes
                })
            })
            .collect();
        Load {
            stop,
            phase,
            acknowledged,
            writers,
        }
    }

    /// Writes acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.acknowledged.load(Ordering::Relaxed)
    }

    /// Returns once `count` writes in all have been acknowledged: the load
    /// is under way, with writes in flight.
    pub fn wait_for_acknowledged(&self, count: usize, within: Duration) -> anyhow::Result<()> {
        crate::wait::wait_until(&format!("{count} acknowledged writes"), within, || {
            Ok::<_, std::io::Error>(self.acknowledged() >= count)
        })
        .map_err(|error| anyhow::anyhow!("{error}: {} acknowledged", self.acknowledged()))?;
        Ok(())
    }

    /// Marks the outcomes of requests sent from now on with `phase`.
    pub fn set_phase(&self, phase: u8) {
        self.phase.store(phase, Ordering::Relaxed);
    }

    /// Stops the writers and returns every outcome.
    pub fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        self.writers
            .into_iter()
            .flat_map(|writer| writer.join().unwrap_or_default())
            .collect()
    }
}

/// Ids the `data` table holds (`table` names it when it is not on the
/// superuser's search path, e.g. `notes_app.data`).
pub fn stored_ids(cluster: &Cluster, database: &str, table: &str) -> anyhow::Result<BTreeSet<i64>> {
    Ok(cluster
        .query(database, &format!("SELECT id FROM {table}"))?
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect())
}

/// Acknowledged ids: all distinct, all stored. Returns how many.
pub fn check_acknowledged(outcomes: &[Outcome], stored: &BTreeSet<i64>) -> anyhow::Result<usize> {
    let acknowledged: Vec<i64> = outcomes
        .iter()
        .filter_map(Outcome::acknowledged_id)
        .collect();
    let distinct: BTreeSet<i64> = acknowledged.iter().copied().collect();
    ensure!(
        distinct.len() == acknowledged.len(),
        "an id was acknowledged twice"
    );
    let lost: Vec<&i64> = distinct.difference(stored).collect();
    ensure!(
        lost.is_empty(),
        "{} acknowledged writes are missing: {lost:?}",
        lost.len()
    );
    Ok(acknowledged.len())
}
