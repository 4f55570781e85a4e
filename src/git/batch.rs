//! Git work that many releases ask for at the same time, done in one command.
//!
//! Every git command that talks to the remote starts several processes (git itself, the
//! transport, the remote's `upload-pack` or `receive-pack`, pack and connectivity checks), and
//! when hundreds of triggers arrive at once, starting processes is most of the cost. So while
//! one such command for a cache runs, the requests of its kind that arrive wait, and the next
//! command takes them all (as many as fit in one). Fetches of commits and pushes of new
//! release branches are batched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, LazyLock, Mutex};

use super::{DEADLINE, blocking, time_left};

/// Requests of type `R` answered with `A`, batched (see the module's notes).
pub(super) struct Batcher<R, A> {
    pub(super) state: Mutex<State<R, A>>,
    pub(super) done: Condvar,
}

pub(super) struct State<R, A> {
    next: u64,
    /// Requests waiting, each with its caller's job's deadline (`None`: none).
    pub(super) queued: Vec<(u64, R, Option<tokio::time::Instant>)>,
    pub(super) running: bool,
    /// Answers not yet collected; `None`: the batch did not finish (its command panicked).
    answers: HashMap<u64, Option<A>>,
    /// Requests whose callers stopped waiting (their job's deadline): their answers are
    /// dropped.
    abandoned: std::collections::HashSet<u64>,
}

impl<R, A> Default for Batcher<R, A> {
    fn default() -> Self {
        Batcher {
            state: Mutex::new(State {
                next: 0,
                queued: Vec::new(),
                running: false,
                answers: HashMap::new(),
                abandoned: Default::default(),
            }),
            done: Condvar::new(),
        }
    }
}

impl<R, A> Batcher<R, A> {
    /// Asks for `request`: it is done in the next batch to start, by whichever caller starts
    /// it, with `run` (which answers each request of the batch, in order). `None`: the
    /// caller is to do its request alone (its batch did not finish, or the caller's job
    /// reached its deadline while waiting).
    pub(super) fn ask(&self, request: R, run: impl Fn(Vec<R>) -> Vec<A>) -> Option<A> {
        self.ask_fitting(request, |_, _| true, run)
    }

    /// [`Batcher::ask`], where a batch takes the waiting requests in order, each that `fits`
    /// says goes with those taken so far; the rest wait for the next batch.
    ///
    /// The batch's command runs until the latest deadline of the jobs it serves: each caller
    /// gives up waiting at its own, but a caller with little time left that happens to start
    /// the batch must not cut it short for the others.
    pub(super) fn ask_fitting(
        &self,
        request: R,
        fits: impl Fn(&[R], &R) -> bool,
        run: impl Fn(Vec<R>) -> Vec<A>,
    ) -> Option<A> {
        let lock = || self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = blocking(lock);
        let id = state.next;
        state.next += 1;
        state
            .queued
            .push((id, request, DEADLINE.try_with(|d| *d).ok()));
        loop {
            if let Some(answer) = state.answers.remove(&id) {
                return answer;
            }
            // Neither waiting nor in the running batch, nor answered: lost (a batch that
            // failed before it began); the caller does its own.
            if !state.running && !state.queued.iter().any(|(q, ..)| *q == id) {
                return None;
            }
            // A caller whose job has no time left does not start a batch for the others.
            if !state.running && time_left().is_none_or(|left| !left.is_zero()) {
                let (mut ids, mut batch, mut left) = (Vec::new(), Vec::new(), Vec::new());
                // The latest deadline of the jobs served; `None` once one has none.
                let mut latest = Some(tokio::time::Instant::now());
                for (id, r, until) in std::mem::take(&mut state.queued) {
                    if batch.is_empty() || fits(&batch, &r) {
                        latest = latest.zip(until).map(|(a, b)| a.max(b));
                        ids.push(id);
                        batch.push(r);
                    } else {
                        left.push((id, r, until));
                    }
                }
                state.queued = left;
                state.running = true;
                drop(state);
                // Ends the batch even if `run` panics: its callers then do their own.
                struct Running<'a, R, A> {
                    batcher: &'a Batcher<R, A>,
                    ids: Vec<u64>,
                    /// The caller running the batch: when `run` panics, the panic is its answer.
                    own: u64,
                    answers: Option<Vec<A>>,
                }
                impl<R, A> Drop for Running<'_, R, A> {
                    fn drop(&mut self) {
                        let mut state =
                            self.batcher.state.lock().unwrap_or_else(|e| e.into_inner());
                        state.running = false;
                        // None: `run` did not return (it panicked).
                        let mut answers = self.answers.take().map(Vec::into_iter);
                        let finished = answers.is_some();
                        for id in self.ids.drain(..) {
                            let answer = answers.as_mut().and_then(Iterator::next);
                            let unwound = id == self.own && !finished;
                            if !state.abandoned.remove(&id) && !unwound {
                                state.answers.insert(id, answer);
                            }
                        }
                        self.batcher.done.notify_all();
                    }
                }
                let mut running = Running {
                    batcher: self,
                    ids,
                    own: id,
                    answers: None,
                };
                // A job without a deadline among them: the remote's own time limit still holds.
                let until = latest.unwrap_or_else(|| {
                    tokio::time::Instant::now() + std::time::Duration::from_secs(24 * 3600)
                });
                running.answers = Some(DEADLINE.sync_scope(until, || run(batch)));
                drop(running);
                state = blocking(lock);
                continue;
            }
            // Waiting ends at the caller's job's deadline at the latest.
            state = match time_left() {
                None => blocking(|| self.done.wait(state).unwrap_or_else(|e| e.into_inner())),
                Some(left) if left.is_zero() => {
                    if let Some(at) = state.queued.iter().position(|(q, ..)| *q == id) {
                        state.queued.remove(at);
                    } else {
                        state.abandoned.insert(id);
                    }
                    return None;
                }
                Some(left) => blocking(|| {
                    self.done
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }),
            };
        }
    }
}

/// The batcher of `kind` for one cache directory.
pub(super) fn batcher<R: Send + 'static, A: Send + 'static>(
    path: &Path,
    kind: &'static str,
) -> Arc<Batcher<R, A>> {
    type Any = Arc<dyn std::any::Any + Send + Sync>;
    static BATCHERS: LazyLock<Mutex<HashMap<(PathBuf, &'static str), Any>>> =
        LazyLock::new(Default::default);
    let mut all = BATCHERS.lock().unwrap_or_else(|e| e.into_inner());
    let entry = all
        .entry((path.to_path_buf(), kind))
        .or_insert_with(|| Arc::new(Batcher::<R, A>::default()));
    entry
        .clone()
        .downcast::<Batcher<R, A>>()
        .expect("one request type per kind")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Requests made while a batch runs are done together in the next one; each caller gets
    /// its own answer.
    #[test]
    fn requests_made_while_a_batch_runs_share_the_next() {
        let batcher = Arc::new(Batcher::<u32, u32>::default());
        let batches = Arc::new(Mutex::new(Vec::new()));
        let (first_started, release_first) = (
            Arc::new(std::sync::Barrier::new(2)),
            Arc::new(std::sync::Barrier::new(2)),
        );
        let run = {
            let (batches, first_started, release_first) = (
                batches.clone(),
                first_started.clone(),
                release_first.clone(),
            );
            let calls = Arc::new(AtomicUsize::new(0));
            move |batch: Vec<u32>| {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    first_started.wait();
                    release_first.wait();
                }
                batches.lock().unwrap().push(batch.clone());
                batch.into_iter().map(|r| r * 10).collect()
            }
        };
        let ask = |request: u32| {
            let (batcher, run) = (batcher.clone(), run.clone());
            std::thread::spawn(move || batcher.ask(request, run))
        };
        let first = ask(1);
        first_started.wait();
        let later: Vec<_> = (2..=4).map(ask).collect();
        // Let the three queue up behind the running batch.
        while batcher.state.lock().unwrap().queued.len() < 3 {
            std::thread::yield_now();
        }
        release_first.wait();
        assert_eq!(first.join().unwrap(), Some(10));
        let answers: Vec<Option<u32>> = later.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(answers, vec![Some(20), Some(30), Some(40)]);
        let mut batches = batches.lock().unwrap().clone();
        batches[1].sort();
        assert_eq!(batches, vec![vec![1], vec![2, 3, 4]]);
    }

    /// The caller that starts a batch may have little time left; the batch's command runs
    /// until the latest deadline of the callers it serves, not cut short at the starter's.
    #[test]
    fn a_batch_runs_until_the_latest_deadline_of_its_callers() {
        use std::time::Duration;
        let batcher = Arc::new(Batcher::<u32, Option<Duration>>::default());
        let seen = |batch: Vec<u32>| batch.iter().map(|_| time_left()).collect();
        let now = tokio::time::Instant::now();
        batcher.state.lock().unwrap().running = true;
        let patient = {
            let batcher = batcher.clone();
            std::thread::spawn(move || {
                DEADLINE.sync_scope(now + Duration::from_secs(600), || batcher.ask(2, seen))
            })
        };
        while batcher.state.lock().unwrap().queued.is_empty() {
            std::thread::yield_now();
        }
        // This thread starts the next batch (the other is not woken), with 2 s left.
        batcher.state.lock().unwrap().running = false;
        let hurried = DEADLINE.sync_scope(now + Duration::from_secs(2), || batcher.ask(1, seen));
        let left = hurried.flatten().expect("a deadline");
        assert!(left > Duration::from_secs(60), "{left:?}");
        let theirs = patient.join().unwrap().flatten().expect("a deadline");
        assert!(theirs > Duration::from_secs(60), "{theirs:?}");
    }

    /// A batch whose command panics ends: the next caller runs its own.
    #[test]
    fn a_batch_that_panics_ends() {
        let batcher = Batcher::<u32, u32>::default();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            batcher.ask(1, |_| panic!("the command failed badly"))
        }));
        assert!(result.is_err());
        assert!(!batcher.state.lock().unwrap().running);
        assert_eq!(
            batcher.ask(2, |b| b.into_iter().map(|r| r + 1).collect()),
            Some(3)
        );
    }
}
