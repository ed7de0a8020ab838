//! The job scheduler shared by every async service (TAP, SODA, VOSpace): each owner may
//! have so many jobs running at once; the others wait, QUEUED, and start, highest priority
//! first and then oldest first, as running jobs end. Asking to run more than an owner may
//! have waiting is refused (429) with the limit in the message (DMS-REQ-0119).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aster_archive::identity::limits::{LimitPolicy, Limits};
use aster_archive::jobs::{Job, JobStore, Phase};

use super::JobRunner;

pub struct Scheduler {
    policy: LimitPolicy,
    store: JobStore,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Started jobs, with their owners.
    running: HashMap<String, Option<String>>,
    waiting: Vec<Waiting>,
    seq: u64,
}

struct Waiting {
    job: Job,
    runner: Arc<dyn JobRunner>,
    priority: i32,
    seq: u64,
}

impl State {
    fn running_of(&self, owner: &Option<String>) -> usize {
        self.running.values().filter(|o| *o == owner).count()
    }

    fn waiting_of(&self, owner: &Option<String>) -> usize {
        self.waiting
            .iter()
            .filter(|w| &w.job.owner == owner)
            .count()
    }
}

/// What a caller has under way, with their allocation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Usage {
    pub limits: Limits,
    pub running: usize,
    pub queued: usize,
}

impl Scheduler {
    /// Starts following the store's phase changes, to start waiting jobs as others end.
    pub fn new(policy: LimitPolicy, store: JobStore) -> Arc<Self> {
        let s = Arc::new(Self {
            policy,
            store: store.clone(),
            state: Mutex::new(State::default()),
        });
        let weak = Arc::downgrade(&s);
        let mut changes = store.subscribe();
        tokio::spawn(async move {
            loop {
                let change = match changes.recv().await {
                    Ok(c) => c,
                    // Missed changes: look at every running job again.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        match weak.upgrade() {
                            Some(s) => s.recheck(),
                            None => return,
                        }
                        continue;
                    }
                    Err(_) => return,
                };
                let Some(s) = weak.upgrade() else { return };
                if change.phase.is_none_or(|p| !p.is_running()) {
                    s.finished(&change.job_id);
                }
            }
        });
        s
    }

    pub fn limits(&self, owner: Option<&str>) -> Limits {
        self.policy.for_user(owner)
    }

    pub fn usage(&self, owner: Option<&str>) -> Usage {
        let key = owner.map(String::from);
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Usage {
            limits: self.limits(owner),
            running: st.running_of(&key),
            queued: st.waiting_of(&key),
        }
    }

    /// Whether the owner may have one more job waiting; the refusal names the limit.
    pub fn check(&self, owner: Option<&str>) -> Result<(), String> {
        let limits = self.limits(owner);
        let key = owner.map(String::from);
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.running_of(&key) >= limits.async_jobs && st.waiting_of(&key) >= limits.queued_jobs {
            return Err(format!(
                "{} already {} {} jobs running and {} waiting, the most allowed ({}): wait for one to end, or abort one",
                owner.unwrap_or("anonymous callers"),
                if owner.is_some() { "has" } else { "have" },
                st.running_of(&key),
                st.waiting_of(&key),
                limits.source
            ));
        }
        Ok(())
    }

    /// Runs a QUEUED job now if its owner has room, else keeps it waiting.
    pub fn submit(&self, job: Job, runner: Arc<dyn JobRunner>) {
        let limits = self.limits(job.owner.as_deref());
        let start = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if st.running_of(&job.owner) < limits.async_jobs {
                st.running.insert(job.id.clone(), job.owner.clone());
                true
            } else {
                st.seq += 1;
                let seq = st.seq;
                st.waiting.push(Waiting {
                    job: job.clone(),
                    runner: runner.clone(),
                    priority: limits.priority,
                    seq,
                });
                false
            }
        };
        if start {
            runner.run(job);
        }
    }

    /// Forgets a job that ended, was aborted or deleted, and starts what may start.
    pub fn finished(&self, job_id: &str) {
        let removed = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let was_running = st.running.remove(job_id).is_some();
            let before = st.waiting.len();
            st.waiting.retain(|w| w.job.id != job_id);
            was_running || st.waiting.len() != before
        };
        if removed {
            self.dispatch();
        }
    }

    /// Forgets running jobs the store no longer has running (after missed changes).
    fn recheck(&self) {
        let ids: Vec<String> = {
            let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.running.keys().cloned().collect()
        };
        for id in ids {
            let still = matches!(self.store.get(&id), Ok(Some(j)) if j.phase.is_running());
            if !still {
                self.finished(&id);
            }
        }
    }

    /// Starts the waiting jobs whose owners have room, best first.
    fn dispatch(&self) {
        loop {
            let next = {
                let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                st.waiting
                    .sort_by(|a, b| b.priority.cmp(&a.priority).then(a.seq.cmp(&b.seq)));
                let pick = (0..st.waiting.len()).find(|&i| {
                    let w = &st.waiting[i];
                    st.running_of(&w.job.owner) < self.limits(w.job.owner.as_deref()).async_jobs
                });
                match pick {
                    None => return,
                    Some(i) => {
                        let w = st.waiting.remove(i);
                        st.running.insert(w.job.id.clone(), w.job.owner.clone());
                        w
                    }
                }
            };
            // A job aborted or deleted while it waited is not started.
            match self.store.get(&next.job.id) {
                Ok(Some(j)) if j.phase == Phase::Queued => next.runner.run(j),
                _ => {
                    let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                    st.running.remove(&next.job.id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use aster_archive::identity::limits::{LimitOverrides, LimitPolicy, Limits};
    use aster_archive::jobs::{Job, JobStore, NewJob, Phase};
    use chrono::Utc;

    use super::*;

    /// Starts each job it is given and records the order; the test ends them.
    struct Recorder {
        store: JobStore,
        started: Mutex<Vec<String>>,
    }

    impl JobRunner for Recorder {
        fn validate(&self, _: &Job) -> Result<(), String> {
            Ok(())
        }
        fn run(&self, job: Job) {
            self.store.start(&job.id).unwrap();
            self.started
                .lock()
                .unwrap()
                .push(job.run_id.clone().unwrap_or_default());
        }
        fn abort(&self, _: &str) {}
    }

    fn limits(jobs: usize, priority: i32) -> Limits {
        Limits {
            async_jobs: jobs,
            queued_jobs: 2,
            execution_secs: 0,
            quota_bytes: 0,
            priority,
            source: "default".into(),
        }
    }

    #[tokio::test]
    async fn one_at_a_time_best_first_and_the_queue_ends() {
        let dir = std::env::temp_dir().join(format!("aster-sched-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = JobStore::open(&dir.join("jobs.sqlite")).unwrap();
        let policy = LimitPolicy::new(
            limits(1, 0),
            limits(1, 0),
            HashMap::from([(
                "vip".to_string(),
                LimitOverrides {
                    priority: Some(9),
                    ..Default::default()
                },
            )]),
            HashMap::new(),
            None,
        );
        let s = Scheduler::new(policy, store.clone());
        let runner = Arc::new(Recorder {
            store: store.clone(),
            started: Mutex::new(Vec::new()),
        });
        let job = |owner: &str, name: &str| {
            let j = store
                .create(NewJob {
                    service: "tap".into(),
                    owner: Some(owner.into()),
                    run_id: Some(name.into()),
                    parameters: Vec::new(),
                    uploads: None,
                    execution_duration: 0,
                    destruction: Utc::now() + chrono::Duration::days(1),
                })
                .unwrap();
            store.set_phase(&j.id, Phase::Queued).unwrap()
        };
        // ann's first job runs; her second and third wait; a fourth is one too many.
        let a1 = job("ann", "a1");
        s.submit(a1.clone(), runner.clone());
        let a2 = job("ann", "a2");
        s.check(Some("ann")).unwrap();
        s.submit(a2, runner.clone());
        let a3 = job("ann", "a3");
        s.check(Some("ann")).unwrap();
        s.submit(a3, runner.clone());
        assert!(s.check(Some("ann")).unwrap_err().contains("2 waiting"));
        // Another owner is not held up by ann's queue.
        let v1 = job("vip", "v1");
        s.submit(v1.clone(), runner.clone());
        assert_eq!(*runner.started.lock().unwrap(), ["a1", "v1"]);
        // The vip's next job, though later, starts before ann's waiting ones when vip has room.
        let v2 = job("vip", "v2");
        s.submit(v2, runner.clone());
        store.complete(&v1.id, Vec::new()).unwrap();
        store.complete(&a1.id, Vec::new()).unwrap();
        for _ in 0..100 {
            if runner.started.lock().unwrap().len() == 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*runner.started.lock().unwrap(), ["a1", "v1", "v2", "a2"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
