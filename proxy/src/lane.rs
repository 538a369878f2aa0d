//! Lanes: blocking jobs on one value, run in order on tokio's blocking
//! pool while the async caller goes on.
//!
//! A download writes each block to its file and hashes it. Done as one
//! blocking job per block, awaited before the next block, the network
//! waited for the disk and the hash in turn, and a miss moved at the speed
//! of write + hash + two thread hand-offs per block. A lane per kind of
//! work lets the write, the hash and the network overlap: the caller queues
//! a job and returns at once, waiting only when `depth` jobs are already
//! queued (which bounds the memory they hold). A thread runs the lane's
//! jobs while there are any and goes back to the pool when the queue is
//! empty, so a quiet download holds no thread.

use std::collections::VecDeque;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// A job on the lane's value.
type Job<T> = Box<dyn FnOnce(&mut T) -> io::Result<()> + Send>;

/// Ordered blocking work on a value of type `T`; see the module docs.
pub struct Lane<T> {
    shared: Arc<Shared<T>>,
    /// One permit per job queued or running.
    room: Arc<Semaphore>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Signalled when the lane's thread stops: the queue is empty or a job
    /// failed.
    stopped: Notify,
}

struct State<T> {
    /// The value, when no job holds it. `None` for good after a failure.
    value: Option<T>,
    queue: VecDeque<(Job<T>, OwnedSemaphorePermit)>,
    /// Whether a thread is running the queue.
    running: bool,
    /// The first job's error, until someone is told.
    failed: Option<io::Error>,
}

impl<T: Send + 'static> Lane<T> {
    /// A lane for `value`, holding at most `depth` jobs queued or running.
    pub fn new(value: T, depth: usize) -> Lane<T> {
        Lane {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    value: Some(value),
                    queue: VecDeque::new(),
                    running: false,
                    failed: None,
                }),
                stopped: Notify::new(),
            }),
            room: Arc::new(Semaphore::new(depth.max(1))),
        }
    }

    /// Queues `job`, first waiting for room. Fails, queueing nothing, once
    /// a job has failed: the value went with it (dropped on the lane's
    /// thread), and the jobs queued behind it were dropped unrun.
    pub async fn push(
        &self,
        job: impl FnOnce(&mut T) -> io::Result<()> + Send + 'static,
    ) -> io::Result<()> {
        let permit = self
            .room
            .clone()
            .acquire_owned()
            .await
            .expect("a lane's semaphore is never closed");
        let mut state = self.shared.lock();
        state.check()?;
        state.queue.push_back((Box::new(job), permit));
        if !state.running {
            state.running = true;
            drop(state);
            let shared = self.shared.clone();
            tokio::task::spawn_blocking(move || shared.run());
        }
        Ok(())
    }

    /// Waits for every queued job to run, then hands the value back; or
    /// the error of the job that failed.
    pub async fn finish(self) -> io::Result<T> {
        loop {
            // Made before looking, so a stop in between is not missed.
            let stopped = self.shared.stopped.notified();
            {
                let mut state = self.shared.lock();
                state.check()?;
                if !state.running {
                    return Ok(state.value.take().expect("checked: the value is home"));
                }
            }
            stopped.await;
        }
    }
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A job runs outside the lock, so a poisoned lock means a bug in
        // the few lines here; the state itself is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The lane's thread: runs jobs until the queue is empty or one fails.
    fn run(&self) {
        loop {
            let (job, permit, mut value) = {
                let mut state = self.lock();
                let Some((job, permit)) = state.queue.pop_front() else {
                    state.running = false;
                    drop(state);
                    self.stopped.notify_one();
                    return;
                };
                let value = state.value.take().expect("a running lane holds its value");
                (job, permit, value)
            };
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut value)))
                .unwrap_or_else(|_| Err(io::Error::other("a blocking job panicked")));
            drop(permit);
            let mut state = self.lock();
            match result {
                Ok(()) => state.value = Some(value),
                Err(error) => {
                    state.failed = Some(error);
                    state.running = false;
                    let unrun = std::mem::take(&mut state.queue);
                    drop(state);
                    drop((unrun, value));
                    self.stopped.notify_one();
                    return;
                }
            }
        }
    }
}

impl<T> State<T> {
    /// The failure, if a job failed: its own error the first time asked,
    /// a plain one after.
    fn check(&mut self) -> io::Result<()> {
        if let Some(error) = self.failed.take() {
            return Err(error);
        }
        if self.value.is_none() && !self.running {
            return Err(io::Error::other("an earlier blocking job failed"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn jobs_run_in_order_and_the_value_comes_back() {
        let lane = Lane::new(Vec::new(), 3);
        for i in 0..100 {
            lane.push(move |seen: &mut Vec<i32>| {
                seen.push(i);
                Ok(())
            })
            .await
            .unwrap();
        }
        assert_eq!(lane.finish().await.unwrap(), (0..100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn push_waits_while_the_lane_is_full() {
        let lane = Lane::new((), 2);
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        for _ in 0..2 {
            let gate = gate.clone();
            lane.push(move |_| {
                gate.lock().unwrap().recv().ok();
                Ok(())
            })
            .await
            .unwrap();
        }
        {
            let third = lane.push(|_| Ok(()));
            tokio::pin!(third);
            assert!(
                tokio::time::timeout(Duration::from_millis(50), &mut third)
                    .await
                    .is_err(),
                "two jobs held: the third waits"
            );
            release.send(()).unwrap();
            tokio::time::timeout(Duration::from_secs(5), third)
                .await
                .expect("room once a job finished")
                .unwrap();
        }
        release.send(()).unwrap();
        lane.finish().await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_job_drops_the_value_and_the_jobs_behind_it() {
        #[derive(Debug)]
        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let drops = Arc::new(AtomicUsize::new(0));
        let ran = Arc::new(AtomicUsize::new(0));
        let lane = Lane::new(Counted(drops.clone()), 8);
        lane.push(|_| Err(io::Error::other("disk full")))
            .await
            .unwrap();
        for _ in 0..3 {
            let ran = ran.clone();
            // Queued behind the failure, or refused once it is known.
            let _ = lane
                .push(move |_| {
                    ran.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .await;
        }
        let error = lane.finish().await.expect_err("the lane failed");
        assert!(
            error.to_string().contains("disk full") || error.to_string().contains("earlier"),
            "{error}"
        );
        assert_eq!(ran.load(Ordering::SeqCst), 0, "no job runs after a failure");
        assert_eq!(drops.load(Ordering::SeqCst), 1, "the value was dropped");
    }

    #[tokio::test]
    async fn the_first_error_is_the_one_reported() {
        let lane = Lane::new((), 4);
        lane.push(|_| Err(io::Error::other("disk full")))
            .await
            .unwrap();
        let error = lane.finish().await.expect_err("the lane failed");
        assert_eq!(error.to_string(), "disk full");
    }

    #[tokio::test]
    async fn a_panicking_job_fails_the_lane_instead_of_hanging_it() {
        let lane = Lane::new((), 4);
        lane.push(|_| panic!("bug")).await.unwrap();
        let finished = tokio::time::timeout(Duration::from_secs(5), lane.finish())
            .await
            .expect("finish returns");
        assert!(finished.is_err());
    }

    #[tokio::test]
    async fn an_idle_lane_holds_no_thread_and_starts_again() {
        let lane = Lane::new(0u32, 2);
        lane.push(|n| {
            *n += 1;
            Ok(())
        })
        .await
        .unwrap();
        // Wait until the lane's thread has gone.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while lane.shared.lock().running {
            assert!(
                std::time::Instant::now() < deadline,
                "the lane never stopped"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lane.push(|n| {
            *n += 1;
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(lane.finish().await.unwrap(), 2);
    }
}
