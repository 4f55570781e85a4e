//! Which work may run side by side.
//!
//! Independent releases are handled independently: one slow or failing release never delays
//! another. Work on one release runs one job at a time, in its lane: a lane is the release
//! (every event about its pull requests, and reconcile's pass over it) or, for a push of a
//! trigger, the pushed commit. Two commits of one repository are two releases (or two
//! refusals): the store reserves each version once, so when both name the same version, the
//! one reserved first is released and the other is refused as a reused version.
//!
//! An event about a pull request or branch the store does not know yet may be about a release
//! a running job is creating right now (the forge's webhook for a pull request the bot just
//! opened can arrive before the job records its number). Such an event waits until every job
//! that was running when it asked has ended, then is placed again, as the one-at-a-time worker
//! would have seen it.
//!
//! A job placed in no lane may find, once running, that its event is about a release after all
//! (the release was made in between): it claims that release's lane before acting on it. A
//! job in another lane that finds a release not its own does not act on it: its delivery is
//! tried again, and placed again.
//!
//! Locks are always taken in one order, so no two jobs can wait on each other: the worker's
//! job slot together with the job's lane (never one while waiting for the other); then, for a
//! trigger, a version's lane, then the lane of the release it makes (or finds); for a job in
//! no lane, the lanes of the releases it claims, in ascending order of release; then the merge
//! turn; then a git cache's lock. A job waiting for a lane gives its slot back and takes one
//! again after the wait (`without_slot`), so a job holding a slot never waits for a lane with
//! it. The merge turn is waited for with the slot: a turn holder never waits for a slot, and so
//! at most `--jobs` jobs wait for the turn, each within its time limit. Every wait past the
//! lanes is bounded: git commands and forge requests have time limits, and every job has one.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, watch};

use super::{Bot, BotError};
use crate::events::{self, Event};

/// The lane a job runs in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lane {
    /// A trigger pushed to an application repository: the repository (lower case) and the
    /// pushed commit.
    Trigger(String, String),
    /// One release (its id in the store).
    Release(i64),
    /// A version being released: two trigger commits naming one version are read one after
    /// the other (taken by a trigger's job once it knows the version, before it reserves it).
    Version(String),
    /// Work that touches no release (an event the bot ignores).
    Free,
}

/// The job a task runs for.
struct JobScope {
    id: u64,
    lane: Lane,
    /// A job placed in no lane that found, once running, that its event is about releases
    /// after all (made meanwhile, or sharing a head commit): their lanes, taken for the rest of
    /// the job, in ascending order of release.
    claimed: Mutex<Vec<(i64, OwnedMutexGuard<()>)>>,
    /// Releases whose lanes the job holds through [`Lanes::hold`] right now.
    held: Mutex<Vec<i64>>,
    /// The worker's job slot, while the job has it (see [`without_slot`]).
    slot: Mutex<Option<OwnedSemaphorePermit>>,
    /// Where the slot came from, to take one again.
    slots: Option<Arc<tokio::sync::Semaphore>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Gives the running job's worker slot back, before it waits for a lock another job holds:
/// a waiting job does not keep another from running. [`retake_slot`] takes one again.
fn give_back_slot() {
    let _ = JOB.try_with(|j| locked(&j.slot).take());
}

/// Takes a worker slot again if the running job gave its slot back, so `--jobs` still bounds
/// the jobs at work. A job holding a slot never waits for a lane with it, so waiting here while
/// holding a release's or a version's lane closes no circle (and holds up only that release).
async fn retake_slot() {
    let Ok(Some(slots)) =
        JOB.try_with(|j| locked(&j.slot).is_none().then(|| j.slots.clone()).flatten())
    else {
        return;
    };
    let slot = slots
        .acquire_owned()
        .await
        .expect("the slots are never closed");
    let _ = JOB.try_with(|j| *locked(&j.slot) = Some(slot));
}

/// Waits for `lock` (a release's lane, a version's) without the job's worker slot, and takes
/// a slot again after.
pub(super) async fn without_slot<T>(lock: impl Future<Output = T>) -> T {
    give_back_slot();
    let taken = lock.await;
    retake_slot().await;
    taken
}

tokio::task_local! {
    /// The job a task runs for, and its lane: a decision to merge reuses a team membership
    /// only if it was read during the same job.
    static JOB: JobScope;
}

/// The job the current task runs for (0 outside any).
pub(super) fn current_job() -> u64 {
    JOB.try_with(|j| j.id).unwrap_or(0)
}

/// Whether the current task's job holds `release`'s lane (its own, claimed or held).
pub(super) fn in_lane_of(release: i64) -> bool {
    JOB.try_with(|j| {
        j.lane == Lane::Release(release)
            || locked(&j.claimed).iter().any(|(r, _)| *r == release)
            || locked(&j.held).contains(&release)
    })
    .unwrap_or(false)
}

/// A lane taken by [`Lanes::hold`]; dropping it frees the lane.
pub(super) struct Held {
    release: Option<i64>,
    _guard: OwnedMutexGuard<()>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(release) = self.release {
            let _ = JOB.try_with(|j| {
                let mut held = locked(&j.held);
                if let Some(at) = held.iter().position(|r| *r == release) {
                    held.remove(at);
                }
            });
        }
    }
}

/// What [`Bot::claim`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claim {
    /// The job held the release's lane already (or runs outside any job: a test, one at a time).
    Held,
    /// The job, placed in no lane, has just taken the release's lane, maybe after a wait: what
    /// it read about the release before must be read again.
    Taken,
}

/// The lanes' locks and the jobs that are running.
pub(super) struct Lanes {
    locks: Mutex<HashMap<Lane, Weak<tokio::sync::Mutex<()>>>>,
    running: Mutex<BTreeSet<u64>>,
    next: AtomicU64,
    /// Bumped whenever a job ends.
    ended: watch::Sender<u64>,
}

/// A job holding its lane. Dropping it ends the job.
pub struct Job<'a> {
    id: u64,
    lane: Lane,
    lanes: &'a Lanes,
    _lane: Option<OwnedMutexGuard<()>>,
}

impl Drop for Job<'_> {
    fn drop(&mut self) {
        self.lanes
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        self.lanes.ended.send_modify(|n| *n += 1);
    }
}

impl Default for Lanes {
    fn default() -> Self {
        Lanes {
            locks: Mutex::new(HashMap::new()),
            running: Mutex::new(BTreeSet::new()),
            next: AtomicU64::new(1),
            ended: watch::Sender::new(0),
        }
    }
}

impl Lanes {
    /// Waits for `lane` (no one else's job in it runs), then starts a job in it.
    pub(super) async fn enter(&self, lane: &Lane) -> Job<'_> {
        let guard = match lane {
            Lane::Free => None,
            lane => Some(self.lock_of(lane).lock_owned().await),
        };
        self.start(lane, guard)
    }

    fn start(&self, lane: &Lane, guard: Option<OwnedMutexGuard<()>>) -> Job<'_> {
        // Numbered and registered in one step, so a waiter that read the next number under
        // the same lock sees every job numbered before it.
        let id = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            running.insert(id);
            id
        };
        Job {
            id,
            lane: lane.clone(),
            lanes: self,
            _lane: guard,
        }
    }

    /// Takes `lane` from inside a job of another lane (a trigger linking the release it made);
    /// the guard frees it. Waiting for it, the job gives its slot back.
    pub(super) async fn hold(&self, lane: &Lane) -> Held {
        let lock = self.lock_of(lane);
        let guard = match lock.clone().try_lock_owned() {
            Ok(g) => g,
            Err(_) => without_slot(lock.lock_owned()).await,
        };
        let release = match lane {
            Lane::Release(r) => Some(*r),
            _ => None,
        };
        if let Some(r) = release {
            let _ = JOB.try_with(|j| locked(&j.held).push(r));
        }
        Held {
            release,
            _guard: guard,
        }
    }

    /// Starts a job in `lane` if no other job holds it now.
    pub(super) fn try_enter(&self, lane: &Lane) -> Option<Job<'_>> {
        let guard = match lane {
            Lane::Free => None,
            lane => Some(self.lock_of(lane).try_lock_owned().ok()?),
        };
        Some(self.start(lane, guard))
    }

    /// Waits until `lane` is free at least for a moment (taking nothing).
    pub(super) async fn wait_until_free(&self, lane: &Lane) {
        if *lane != Lane::Free {
            drop(self.lock_of(lane).lock_owned().await);
        }
    }

    fn lock_of(&self, lane: &Lane) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = locks.get(lane).and_then(Weak::upgrade) {
            return lock;
        }
        // Lanes come and go with releases: forget the ones nobody holds.
        if locks.len() > 64 {
            locks.retain(|_, l| l.strong_count() > 0);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(lane.clone(), Arc::downgrade(&lock));
        lock
    }

    /// Makes sure the running job holds `release`'s lane. A job placed in no lane (its event
    /// was about nothing the store knew) takes the lane now, for the rest of the job: the
    /// release was made after the event was placed. `None`: the job holds another lane (or
    /// has claimed another release already) and may not act on this release.
    pub(super) async fn claim(&self, release: i64) -> Option<Claim> {
        let Ok(lane) = JOB.try_with(|j| j.lane.clone()) else {
            return Some(Claim::Held);
        };
        if in_lane_of(release) {
            return Some(Claim::Held);
        }
        let after_last = JOB.with(|j| locked(&j.claimed).iter().all(|(r, _)| *r < release));
        if lane != Lane::Free || !after_last {
            return None;
        }
        // A job in no lane holds no lane but the ones it claimed, always in ascending order of
        // release, and a job in a release's lane takes no other: waiting here closes no circle.
        let lock = self.lock_of(&Lane::Release(release));
        let guard = match lock.clone().try_lock_owned() {
            Ok(g) => g,
            Err(_) => without_slot(lock.lock_owned()).await,
        };
        JOB.with(|j| locked(&j.claimed).push((release, guard)));
        Some(Claim::Taken)
    }

    /// Waits until every job that is running now has ended (jobs started later do not count).
    pub(super) async fn wait_for_running(&self) {
        let started_before = {
            let _running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            self.next.load(Ordering::Relaxed)
        };
        let mut ended = self.ended.subscribe();
        loop {
            let oldest = self
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .first()
                .copied();
            if oldest.is_none_or(|id| id >= started_before) {
                return;
            }
            if ended.changed().await.is_err() {
                return;
            }
        }
    }
}

impl Job<'_> {
    /// Runs `work` as this job.
    pub async fn run<T>(&self, work: impl Future<Output = T>) -> T {
        self.scoped(None, work).await
    }

    /// Runs `work` as this job, holding the worker's `slot` until it ends or gives it back.
    pub async fn run_in_slot<T>(
        &self,
        slot: OwnedSemaphorePermit,
        work: impl Future<Output = T>,
    ) -> T {
        self.scoped(Some(slot), work).await
    }

    async fn scoped<T>(
        &self,
        slot: Option<OwnedSemaphorePermit>,
        work: impl Future<Output = T>,
    ) -> T {
        let slots = slot.as_ref().map(|s| s.semaphore().clone());
        let scope = JobScope {
            id: self.id,
            lane: self.lane.clone(),
            claimed: Mutex::new(Vec::new()),
            held: Mutex::new(Vec::new()),
            slot: Mutex::new(slot),
            slots,
        };
        JOB.scope(scope, work).await
    }
}

/// Where an event's work belongs, judged from the store, or `None` when the store does not
/// know the pull request, branch or commit it is about.
enum Placed {
    Lane(Lane),
    Unknown,
}

impl Bot {
    /// The lane `event`'s work runs in. An event about a pull request, branch or commit the
    /// store does not know yet first waits for the jobs running now (see the module's notes).
    pub async fn lane_of(&self, event: &Event) -> Result<Lane, BotError> {
        match self.place(event).await? {
            Placed::Lane(lane) => Ok(lane),
            Placed::Unknown => {
                self.lanes.wait_for_running().await;
                match self.place(event).await? {
                    Placed::Lane(lane) => Ok(lane),
                    Placed::Unknown => Ok(Lane::Free),
                }
            }
        }
    }

    /// Starts a job in `lane`.
    pub async fn enter(&self, lane: &Lane) -> Job<'_> {
        self.lanes.enter(lane).await
    }

    /// Starts a job in `lane` if it is free now.
    pub fn try_enter(&self, lane: &Lane) -> Option<Job<'_>> {
        self.lanes.try_enter(lane)
    }

    /// Waits until `lane` is free for a moment.
    pub async fn wait_until_free(&self, lane: &Lane) {
        self.lanes.wait_until_free(lane).await
    }

    /// Makes sure the running job holds `release`'s lane before it acts on the release (see
    /// [`Lanes::claim`]); a job holding another lane gets an error that has its delivery placed
    /// again on its next attempt.
    pub(super) async fn claim(&self, release: i64) -> Result<Claim, BotError> {
        self.lanes
            .claim(release)
            .await
            .ok_or(BotError::OtherLane(release))
    }

    async fn place(&self, event: &Event) -> Result<Placed, BotError> {
        let release = |pr: Option<crate::store::forge_releases::ReleasePr>| match pr {
            Some(pr) => Placed::Lane(Lane::Release(pr.release_id)),
            None => Placed::Unknown,
        };
        Ok(match event {
            Event::Push(p) if !self.is_deployment_repo(&p.repo) => Placed::Lane(Lane::Trigger(
                p.repo.full_name.to_ascii_lowercase(),
                p.after.clone(),
            )),
            Event::Push(p) if p.branch == self.config.orchestration.deployment.base_branch => {
                Placed::Lane(Lane::Free)
            }
            Event::Push(p) => release(self.store.release_pr_by_branch(&p.branch).await?),
            Event::Comment(c)
                if !c.on_pull_request || c.author.login.eq_ignore_ascii_case(self.bot_login()) =>
            {
                Placed::Lane(Lane::Free)
            }
            Event::Comment(events::Comment { repo, number, .. })
            | Event::Review(events::Review { repo, number, .. })
            | Event::PullRequest(events::PullRequest { repo, number, .. }) => {
                release(self.release_pr(repo, *number).await?)
            }
            Event::Check(c) if !self.is_deployment_repo(&c.repo) => Placed::Lane(Lane::Free),
            Event::Check(c) => {
                let prs = self.store.release_prs_by_head(&c.commit).await?;
                let mut releases: Vec<i64> = prs.iter().map(|p| p.release_id).collect();
                releases.sort_unstable();
                releases.dedup();
                match releases[..] {
                    [] => Placed::Unknown,
                    [one] => Placed::Lane(Lane::Release(one)),
                    // Someone pushed one release's head to another's branch: the job claims
                    // each release's lane in turn (see `on_check`).
                    _ => Placed::Lane(Lane::Free),
                }
            }
            // Claims the lanes of the releases it concerns (see `on_deployment_notice`).
            Event::Installation(_) | Event::Deployment(_) => Placed::Lane(Lane::Free),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_job_at_a_time_in_a_lane_and_side_by_side_across_lanes() {
        let lanes = Lanes::default();
        let a = lanes.enter(&Lane::Release(1)).await;
        // Another lane starts at once.
        let b = tokio::time::timeout(Duration::from_secs(1), lanes.enter(&Lane::Release(2)))
            .await
            .expect("another release's lane is free");
        // The same lane waits.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), lanes.enter(&Lane::Release(1)))
                .await
                .is_err(),
            "the same release's lane is taken"
        );
        drop(a);
        let again = tokio::time::timeout(Duration::from_secs(1), lanes.enter(&Lane::Release(1)))
            .await
            .expect("freed when the job ends");
        drop((b, again));
    }

    #[tokio::test]
    async fn a_job_in_no_lane_claims_releases_in_order_and_a_release_job_claims_none() {
        let lanes = Arc::new(Lanes::default());
        let other = lanes.enter(&Lane::Release(5)).await;
        let free = lanes.enter(&Lane::Free).await;
        let claiming = {
            let lanes = lanes.clone();
            tokio::spawn(async move {
                let job = lanes.enter(&Lane::Free).await;
                job.run(async {
                    let first = lanes.claim(5).await;
                    let held = in_lane_of(5);
                    let again = lanes.claim(5).await;
                    let lower = lanes.claim(4).await;
                    let higher = lanes.claim(6).await;
                    (first, held, again, (lower, higher))
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(
            !claiming.is_finished(),
            "the claim waits for the job in the release's lane"
        );
        drop(other);
        let (first, held, again, (lower, higher)) =
            tokio::time::timeout(Duration::from_secs(1), claiming)
                .await
                .expect("the claim is granted once the lane is free")
                .unwrap();
        assert_eq!(first, Some(Claim::Taken));
        assert!(held, "the claimed lane counts as the job's own");
        assert_eq!(again, Some(Claim::Held));
        assert_eq!(lower, None, "lanes are claimed in ascending order only");
        assert_eq!(higher, Some(Claim::Taken));
        // The claims ended with their job: the lanes are free again.
        assert!(lanes.try_enter(&Lane::Release(5)).is_some());
        assert!(lanes.try_enter(&Lane::Release(6)).is_some());
        // A job in one release's lane may not act on another release.
        let job = lanes.enter(&Lane::Release(1)).await;
        assert_eq!(job.run(lanes.claim(2)).await, None);
        assert_eq!(job.run(lanes.claim(1)).await, Some(Claim::Held));
        drop((free, job));
    }

    #[tokio::test]
    async fn trying_a_taken_lane_takes_nothing_and_waiting_for_it_holds_nothing() {
        let lanes = Arc::new(Lanes::default());
        let a = lanes.enter(&Lane::Release(1)).await;
        assert!(lanes.try_enter(&Lane::Release(1)).is_none());
        assert!(lanes.try_enter(&Lane::Free).is_some());
        let waiter = {
            let lanes = lanes.clone();
            tokio::spawn(async move { lanes.wait_until_free(&Lane::Release(1)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(a);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("told once the lane is free")
            .unwrap();
        assert!(
            lanes.try_enter(&Lane::Release(1)).is_some(),
            "waiting left the lane free"
        );
    }

    #[tokio::test]
    async fn waiting_for_running_jobs_ignores_jobs_started_later() {
        let lanes = Arc::new(Lanes::default());
        let first = lanes.enter(&Lane::Release(1)).await;
        let waiter = {
            let lanes = lanes.clone();
            tokio::spawn(async move { lanes.wait_for_running().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let later = lanes.enter(&Lane::Release(2)).await;
        assert!(
            !waiter.is_finished(),
            "the job running when it asked is still running"
        );
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("ends once the earlier job ended, though a later one still runs")
            .unwrap();
        drop(later);
    }
}
