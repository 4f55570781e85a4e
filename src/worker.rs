//! The worker: acts on stored deliveries, and runs the reconcile pass at start-up and on every
//! tick.
//!
//! Deliveries are handled side by side, at most `Pacing::jobs` at once, each as a job in its
//! lane (see [`crate::release::bot::Lane`]): one release's events one at a time and in the
//! order they arrived, independent releases independently, so one slow or failing release
//! never delays another. Reconcile takes each release's lane in turn, so a tick never races a
//! delivery about the same release.
//!
//! A delivery whose handling fails (the forge answered 500, git could not reach a remote) is
//! tried again with backoff, `Pacing::retries` times (`defaults.maxRetries`); releases already in flight are also
//! made good by the reconcile pass, which re-reads the forge.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{Notify, Semaphore};
use tracing::Instrument;

use crate::events::Event;
use crate::release::bot::{Bot, BotError};
use crate::store::Store;
use crate::store::deliveries::PendingDelivery;

/// The stack of the service's threads. A job is a deep chain of futures (a delivery, its
/// release's lifecycle, a plan, a forge call), and a debug build polls it with large frames: 2
/// MiB, tokio's default, has been seen to overflow, which aborts the whole process. Only the
/// pages a thread touches take memory.
pub const STACK_SIZE: usize = 8 << 20;

/// Deliveries read from the store and not yet handled, at most: the worker reads no more than
/// that (a flood waits in the store, not in memory).
const QUEUED_AT_MOST: usize = 1000;

/// How the worker paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// Between reconcile passes.
    pub reconcile_every: Duration,
    /// The first retry of a failed delivery; each further one waits four times longer.
    pub retry_base: Duration,
    /// The longest one delivery's handling may take. Past it the handling is stopped (as if
    /// the process had stopped there: every step is durable before the next) and tried again
    /// later, so one stuck release does not hold up the others.
    pub job_limit: Duration,
    /// Deliveries handled at once.
    pub jobs: usize,
    /// How many times a failed delivery is tried again (the operator's `defaults.maxRetries`)
    /// before it is left to reconcile.
    pub retries: u32,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            reconcile_every: Duration::from_secs(300),
            retry_base: Duration::from_secs(5),
            job_limit: Duration::from_secs(300),
            jobs: 8,
            retries: 4,
        }
    }
}

/// What the dispatcher and the queues share.
struct Shared {
    bot: Arc<Bot>,
    store: Store,
    pacing: Pacing,
    slots: Arc<Semaphore>,
    /// Deliveries queued or being handled (their store ids).
    taken: Mutex<HashSet<i64>>,
    /// Deliveries handled lately, each with the number of its ending (counting every ending):
    /// a read of the store that began before one ended may still show it pending, and must
    /// not hand it out again.
    ended: Mutex<(u64, HashMap<i64, u64>)>,
    /// Per ordering key, the deliveries waiting; a key present has a task working through it.
    queues: Mutex<HashMap<String, VecDeque<PendingDelivery>>>,
    /// Told when a delivery is done (room to read more).
    done: Notify,
    /// A delivery whose retry could not be scheduled: read again from there (its id may be
    /// older than the newest one dispatched).
    rewind: Mutex<Option<i64>>,
}

pub async fn run(bot: Arc<Bot>, store: Store, stored: Arc<Notify>, pacing: Pacing) {
    let shared = Arc::new(Shared {
        bot,
        store,
        pacing,
        slots: Arc::new(Semaphore::new(pacing.jobs.max(1))),
        taken: Mutex::new(HashSet::new()),
        ended: Mutex::new((0, HashMap::new())),
        queues: Mutex::new(HashMap::new()),
        done: Notify::new(),
        rewind: Mutex::new(None),
    });
    // Every task the worker starts is its own: stopping the worker (a crash in the tests, the
    // end of the process) stops them at their next await, as a crash would.
    let mut tasks = tokio::task::JoinSet::new();
    let reconciling = Arc::new(tokio::sync::Mutex::new(()));
    spawn_reconcile(&mut tasks, &shared, &reconciling, "at start-up");
    let mut next_tick = tokio::time::Instant::now() + pacing.reconcile_every;
    // The newest delivery dispatched: only newer ones (and retries) are read again.
    let mut seen = 0;
    loop {
        while tasks.try_join_next().is_some() {}
        if let Some(id) = lock(&shared.rewind).take() {
            seen = seen.min(id - 1);
        }
        let handled: Vec<i64> = lock(&shared.taken).iter().copied().collect();
        let taken = handled.len();
        // Endings counted before the read: a delivery that ended later may show as pending.
        let ended_before = lock(&shared.ended).0;
        let read_at = OffsetDateTime::now_utc();
        let fresh: Vec<PendingDelivery> = if taken >= QUEUED_AT_MOST {
            Vec::new()
        } else {
            let room = (QUEUED_AT_MOST - taken).min(100 + taken);
            // Those being handled are left out by the store (due retries among them would
            // otherwise crowd out the new ones).
            match shared
                .store
                .pending_deliveries_after(seen, room as i64, &handled)
                .await
            {
                Ok(p) => {
                    let taken = lock(&shared.taken);
                    let mut ended = lock(&shared.ended);
                    let fresh = p
                        .into_iter()
                        .filter(|d| {
                            !taken.contains(&d.id)
                                && ended.1.get(&d.id).is_none_or(|at| *at <= ended_before)
                        })
                        .collect();
                    // Endings this read saw no longer need remembering.
                    ended.1.retain(|_, at| *at > ended_before);
                    fresh
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading stored deliveries failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        };
        if fresh.is_empty() {
            // Sleep until a delivery arrives or one is done, a retry is due, or the next
            // reconcile.
            let mut wake = next_tick;
            // Retries due before the read and not handed out are being handled now: their end
            // wakes the loop, not their time.
            if let Ok(Some(at)) = shared.store.next_retry_after(read_at).await {
                let wait = (at - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
                let due = tokio::time::Instant::now()
                    + Duration::try_from(wait).unwrap_or_default()
                    + Duration::from_millis(5);
                wake = wake.min(due);
            }
            tokio::select! {
                _ = stored.notified() => {}
                _ = shared.done.notified() => {}
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= next_tick {
                        next_tick = tokio::time::Instant::now() + pacing.reconcile_every;
                        spawn_reconcile(&mut tasks, &shared, &reconciling, "on the timer");
                    }
                }
            }
            continue;
        }
        for d in fresh {
            seen = seen.max(d.id);
            lock(&shared.taken).insert(d.id);
            let key = order_key(&d);
            let mut queues = lock(&shared.queues);
            match queues.get_mut(&key) {
                Some(queue) => queue.push_back(d),
                None => {
                    queues.insert(key.clone(), VecDeque::from([d]));
                    tasks.spawn(work_through(shared.clone(), key));
                }
            }
        }
    }
}

/// Runs a reconcile pass beside the deliveries, unless one is running already.
fn spawn_reconcile(
    tasks: &mut tokio::task::JoinSet<()>,
    shared: &Arc<Shared>,
    running: &Arc<tokio::sync::Mutex<()>>,
    when: &'static str,
) {
    let Ok(guard) = running.clone().try_lock_owned() else {
        return;
    };
    let bot = shared.bot.clone();
    let limit = shared.pacing.job_limit;
    tasks.spawn(async move {
        if let Err(e) = bot.reconcile_within(limit).await {
            tracing::error!(error = %e, "reconcile {when} failed");
        }
        drop(guard);
    });
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Deliveries with the same key are handled one after another, in the order they arrived:
/// events about one pull request, pushes to one branch, checks of one commit. (Which release
/// an event belongs to is the bot's to say; it keeps the releases' own order.)
fn order_key(d: &PendingDelivery) -> String {
    match &d.event {
        // A push to an application repository is a trigger of its own: it is placed by its
        // commit (see the bot's lanes). Pushes to one branch of the deployment repository
        // keep their order.
        Ok(Event::Push(p)) if p.branch == p.default_branch => {
            format!("push {} {}", p.repo.full_name.to_ascii_lowercase(), p.after)
        }
        Ok(Event::Push(p)) => format!(
            "push {} {}",
            p.repo.full_name.to_ascii_lowercase(),
            p.branch
        ),
        Ok(Event::Comment(c)) => {
            format!("pr {} {}", c.repo.full_name.to_ascii_lowercase(), c.number)
        }
        Ok(Event::Review(r)) => {
            format!("pr {} {}", r.repo.full_name.to_ascii_lowercase(), r.number)
        }
        Ok(Event::PullRequest(p)) => {
            format!("pr {} {}", p.repo.full_name.to_ascii_lowercase(), p.number)
        }
        Ok(Event::Check(c)) => format!(
            "commit {} {}",
            c.repo.full_name.to_ascii_lowercase(),
            c.commit
        ),
        Ok(Event::Installation(_)) => "installation".to_string(),
        Ok(Event::Deployment(n)) => format!("argocd {}", n.application),
        Err(_) => format!("unreadable {}", d.id),
    }
}

/// Handles the deliveries queued under `key` until none is left.
async fn work_through(shared: Arc<Shared>, key: String) {
    loop {
        let next = {
            let mut queues = lock(&shared.queues);
            match queues.get_mut(&key).and_then(VecDeque::pop_front) {
                Some(d) => d,
                None => {
                    queues.remove(&key);
                    return;
                }
            }
        };
        // `release` is filled in when a step of a release fails, so the failure line names it.
        let span = tracing::info_span!("delivery", id = %next.delivery_id, kind = %next.kind, release = tracing::field::Empty);
        let id = next.id;
        let read_again = handle_one(&shared, next).instrument(span).await;
        {
            // Locks in the dispatcher's order: `taken`, then `ended`.
            let mut taken = lock(&shared.taken);
            let mut ended = lock(&shared.ended);
            ended.0 += 1;
            let at = ended.0;
            ended.1.insert(id, at);
            taken.remove(&id);
        }
        // Its outcome could not be recorded: the dispatcher reads it again (after it has left
        // `taken`, so it is not filtered out), after the first retry's wait.
        if read_again {
            tokio::time::sleep(shared.pacing.retry_base).await;
            let mut rewind = lock(&shared.rewind);
            *rewind = Some(rewind.map_or(id, |r| r.min(id)));
        }
        shared.done.notify_one();
    }
}

/// Handles one delivery and records how it went: done, or to be tried again later. True when
/// neither could be recorded (the delivery must be read again).
async fn handle_one(shared: &Arc<Shared>, d: PendingDelivery) -> bool {
    let error = match &d.event {
        Ok(event) => match act_apart(shared, event).await {
            Ok(()) => None,
            Err(e) if d.attempts < i64::from(shared.pacing.retries) => {
                let wait = shared.pacing.retry_base * 4u32.pow(d.attempts as u32);
                tracing::warn!(delivery = %d.delivery_id, error = %e, retry_in = ?wait, "handling a delivery failed; it will be tried again");
                let at = OffsetDateTime::now_utc() + wait;
                if let Err(e) = shared.store.retry_delivery(d.id, &e.to_string(), at).await {
                    tracing::error!(error = %e, "scheduling a retry failed");
                    return true;
                }
                return false;
            }
            Err(e) => {
                tracing::error!(delivery = %d.delivery_id, error = %e, "handling a delivery failed for the last time");
                Some(e.to_string())
            }
        },
        Err(e) => Some(format!("stored event does not parse: {e}")),
    };
    if let Err(e) = shared
        .store
        .finish_deliveries(&[(d.id, error)], OffsetDateTime::now_utc())
        .await
    {
        tracing::error!(error = %e, "recording a processed delivery failed");
        return true;
    }
    false
}

/// [`act`] as a task of its own: a panic in the handling is a failed attempt like any other
/// (the queue it came from goes on).
async fn act_apart(shared: &Arc<Shared>, event: &Event) -> Result<(), BotError> {
    let (shared, event) = (shared.clone(), event.clone());
    let work = async move { act(&shared, &event).await };
    // Stopping the worker stops its jobs: a job outliving the worker would act outside its
    // bookkeeping (and a crash test would not crash it).
    let mut job = AbortOnDrop(tokio::spawn(work.in_current_span()));
    match (&mut job.0).await {
        Ok(outcome) => outcome,
        Err(e) => Err(BotError::Panicked(panic_text(e))),
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string()),
        Err(e) => e.to_string(),
    }
}

/// Acts on one event: finds its lane, then takes a slot and the lane together, and acts
/// within the job limit.
///
/// A job never holds a slot while it waits for its lane (a busy release with many events
/// queued would take every slot, and hold up the other releases), nor its lane while it waits
/// for a slot (a job holding a slot may wait for a lane: a trigger linking its release).
async fn act(shared: &Shared, event: &Event) -> Result<(), BotError> {
    let lane = shared.bot.lane_of(event).await?;
    tracing::debug!(?lane, "placed");
    let (slot, job) = loop {
        let slot = shared
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the slots are never closed");
        if let Some(job) = shared.bot.try_enter(&lane) {
            break (slot, job);
        }
        drop(slot);
        shared.bot.wait_until_free(&lane).await;
    };
    tracing::debug!(?lane, "entered");
    let limit = shared.pacing.job_limit;
    let deadline = tokio::time::Instant::now() + limit;
    let work = crate::git::within(deadline, job.run_in_slot(slot, shared.bot.act(event)));
    let outcome = tokio::time::timeout_at(deadline, work)
        .await
        .unwrap_or(Err(BotError::TimedOut(limit)));
    // Shown by `status` until the release moves on.
    if let (Err(e), crate::release::bot::Lane::Release(id)) = (&outcome, &lane) {
        if let Ok(Some(rel)) = shared.store.forge_release(*id).await {
            tracing::Span::current().record("release", rel.version_tag.as_str());
        }
        if let Err(store) = shared
            .store
            .set_release_error(*id, OffsetDateTime::now_utc(), &e.to_string())
            .await
        {
            tracing::warn!(error = %store, "recording a release's failed attempt failed");
        }
    }
    outcome
}
