//! Tests of the job store: creation, list filters, guarded transitions, uploads, recovery,
//! destruction and persistence.

use std::path::PathBuf;

use chrono::{Duration, Utc};

use super::*;

/// A scratch folder removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("aster-jobs-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        Scratch(dir)
    }

    fn store(&self) -> JobStore {
        JobStore::open(&self.0.join("jobs.sqlite")).expect("open store")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn new_job(service: &str, owner: Option<&str>, parameters: &[(&str, &str)]) -> NewJob {
    NewJob {
        service: service.into(),
        owner: owner.map(Into::into),
        run_id: Some("run-1".into()),
        parameters: parameters
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        uploads: None,
        execution_duration: 600,
        destruction: Utc::now() + Duration::days(1),
    }
}

#[test]
fn phase_names_round_trip() {
    for phase in Phase::ALL {
        assert_eq!(phase.to_string().parse::<Phase>(), Ok(phase));
    }
    assert!("executing".parse::<Phase>().is_err());
    assert!("".parse::<Phase>().is_err());
}

#[test]
fn create_and_get() {
    let scratch = Scratch::new();
    let store = scratch.store();
    let job = store
        .create(new_job(
            "tap",
            None,
            &[
                ("QUERY", "SELECT 1"),
                ("Lang", "ADQL"),
                ("upload", "a"),
                ("UPLOAD", "b"),
            ],
        ))
        .unwrap();
    assert_eq!(job.phase, Phase::Pending);
    assert_eq!(job.id.len(), 32);
    assert_eq!(job.run_id.as_deref(), Some("run-1"));
    assert_eq!(job.parameters[0], ("query".into(), "SELECT 1".into()));
    assert_eq!(job.parameter("LANG"), Some("ADQL"));
    assert_eq!(
        job.parameter_values("upload").collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(job.start_time.is_none() && job.end_time.is_none() && job.error.is_none());
    assert!(store.job_dir(&job.id).unwrap().is_dir());
    assert_eq!(store.get(&job.id).unwrap(), Some(job));
    assert_eq!(store.get("nope").unwrap(), None);
}

#[test]
fn list_filters() {
    let scratch = Scratch::new();
    let store = scratch.store();
    let a = store.create(new_job("tap", None, &[])).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let b = store.create(new_job("tap", None, &[])).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let c = store.create(new_job("tap", None, &[])).unwrap();
    store.create(new_job("soda", None, &[])).unwrap();
    store.create(new_job("tap", Some("alice"), &[])).unwrap();
    store.set_phase(&b.id, Phase::Queued).unwrap();
    store.abort(&c.id, None).unwrap();
    store.set_phase(&c.id, Phase::Archived).unwrap();

    let ids = |refs: Vec<JobRef>| refs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    // Oldest first; ARCHIVED hidden unless asked for.
    assert_eq!(
        ids(store.list("tap", None, &[], None, None).unwrap()),
        [a.id.clone(), b.id.clone()]
    );
    assert_eq!(
        ids(store
            .list("tap", None, &[Phase::Archived], None, None)
            .unwrap()),
        [c.id.as_str()]
    );
    assert_eq!(
        ids(store
            .list("tap", None, &[Phase::Queued, Phase::Pending], None, None)
            .unwrap()),
        [a.id.clone(), b.id.clone()]
    );
    // LAST: most recent first.
    assert_eq!(
        ids(store.list("tap", None, &[], None, Some(1)).unwrap()),
        [b.id.as_str()]
    );
    assert_eq!(
        ids(store.list("tap", None, &Phase::ALL, None, Some(2)).unwrap()),
        [c.id.clone(), b.id.clone()]
    );
    assert!(
        store
            .list("tap", None, &[], None, Some(0))
            .unwrap()
            .is_empty()
    );
    // AFTER: strictly later creation.
    assert_eq!(
        ids(store
            .list("tap", None, &[], Some(a.creation_time), None)
            .unwrap()),
        [b.id.as_str()]
    );
    let alice = store.list("tap", Some("alice"), &[], None, None).unwrap();
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].owner.as_deref(), Some("alice"));
    assert_eq!(alice[0].run_id.as_deref(), Some("run-1"));
}

#[test]
fn guarded_transitions() {
    let scratch = Scratch::new();
    let store = scratch.store();
    let job = store.create(new_job("tap", None, &[])).unwrap();
    let id = job.id.as_str();

    // A PENDING job cannot start executing before it is queued.
    assert!(matches!(
        store.start(id),
        Err(JobStoreError::InvalidTransition {
            from: Phase::Pending,
            to: Phase::Executing,
            ..
        })
    ));
    store.set_phase(id, Phase::Queued).unwrap();
    let running = store.start(id).unwrap();
    assert_eq!(running.phase, Phase::Executing);
    assert!(running.start_time.is_some());
    // Parameters and execution duration are frozen once the job left PENDING.
    assert!(matches!(
        store.update_parameters(id, vec![("a".into(), "b".into())], None),
        Err(JobStoreError::NotPending { .. })
    ));
    assert!(matches!(
        store.set_execution_duration(id, 5),
        Err(JobStoreError::NotPending { .. })
    ));
    let result = JobResult {
        id: "result".into(),
        file_name: "result.vot".into(),
        media_type: "application/x-votable+xml".into(),
        size: 42,
        rows: Some(3),
    };
    let done = store.complete(id, vec![result.clone()]).unwrap();
    assert_eq!(done.phase, Phase::Completed);
    assert_eq!(done.results, [result]);
    assert!(done.end_time.is_some());
    // A finished job stays finished.
    assert!(store.start(id).is_err());
    assert!(store.abort(id, None).is_err());
    assert!(store.fail(id, "late").is_err());
    assert!(matches!(
        store.set_phase("missing", Phase::Queued),
        Err(JobStoreError::NotFound(_))
    ));

    let other = store.create(new_job("tap", None, &[])).unwrap();
    let failed = store.fail(&other.id, "no QUERY").unwrap();
    assert_eq!(failed.phase, Phase::Error);
    assert_eq!(failed.error.as_deref(), Some("no QUERY"));
    assert!(failed.end_time.is_some());

    let third = store.create(new_job("tap", None, &[])).unwrap();
    let aborted = store.abort(&third.id, Some("too long")).unwrap();
    assert_eq!(aborted.phase, Phase::Aborted);
    assert_eq!(aborted.error.as_deref(), Some("too long"));
}

#[test]
fn phase_changes_are_published() {
    let scratch = Scratch::new();
    let store = scratch.store();
    let mut changes = store.subscribe();
    let job = store.create(new_job("tap", None, &[])).unwrap();
    store.set_phase(&job.id, Phase::Queued).unwrap();
    store.delete(&job.id).unwrap();
    let first = changes.try_recv().unwrap();
    assert_eq!(
        (first.job_id.as_str(), first.service.as_str(), first.phase),
        (job.id.as_str(), "tap", Some(Phase::Queued))
    );
    assert_eq!(changes.try_recv().unwrap().phase, None);
}

#[test]
fn parameters_replace_by_name() {
    let scratch = Scratch::new();
    let store = scratch.store();
    let job = store
        .create(new_job(
            "tap",
            None,
            &[("query", "a"), ("maxrec", "1"), ("QUERY", "b")],
        ))
        .unwrap();
    let job = store
        .update_parameters(&job.id, vec![("Query".into(), "c".into())], None)
        .unwrap();
    assert_eq!(
        job.parameters,
        [("maxrec".into(), "1".into()), ("query".into(), "c".into())]
    );
    let job = store.set_execution_duration(&job.id, 30).unwrap();
    assert_eq!(job.execution_duration, 30);
    let quote = Utc::now() + Duration::hours(1);
    let job = store.set_quote(&job.id, Some(quote)).unwrap();
    assert_eq!(
        job.quote.map(|q| q.timestamp_micros()),
        Some(quote.timestamp_micros())
    );
}

#[test]
fn uploads_move_into_the_job_folder() {
    let scratch = Scratch::new();
    let store = scratch.store();
    let mut uploads = store.uploads();
    std::fs::create_dir_all(uploads.dir()).unwrap();
    std::fs::write(uploads.next_path(), b"first table").unwrap();
    uploads.add("t1".into(), "text/csv".into(), 11);
    let staging = uploads.dir().to_owned();
    let mut new = new_job("tap", None, &[("upload", "t,param:t1")]);
    new.uploads = Some(uploads);
    let job = store.create(new).unwrap();
    assert!(!staging.exists(), "staging folder removed");
    let file = job.file("t1").unwrap().clone();
    assert_eq!((file.media_type.as_str(), file.size), ("text/csv", 11));
    let path = store.file_path(&job.id, &file).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"first table");

    // Re-sending part t1 replaces the file.
    let mut uploads = store.uploads();
    std::fs::create_dir_all(uploads.dir()).unwrap();
    std::fs::write(uploads.next_path(), b"second").unwrap();
    uploads.add("t1".into(), "text/csv".into(), 6);
    let job = store
        .update_parameters(&job.id, Vec::new(), Some(uploads))
        .unwrap();
    assert_eq!(job.files.len(), 1);
    assert!(!path.exists());
    let path = store.file_path(&job.id, job.file("t1").unwrap()).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), b"second");

    // Dropped uploads leave nothing behind.
    let uploads = store.uploads();
    std::fs::create_dir_all(uploads.dir()).unwrap();
    let dir = uploads.dir().to_owned();
    drop(uploads);
    assert!(!dir.exists());
}

#[test]
fn file_names_are_checked() {
    let scratch = Scratch::new();
    let store = scratch.store();
    let job = store.create(new_job("tap", None, &[])).unwrap();
    let path = store.result_path(&job.id, "result.vot").unwrap();
    assert_eq!(path, store.jobs_dir().join(&job.id).join("result.vot"));
    for bad in ["", "..", "../x", "a/b", "a\\b", ".hidden", "x\0y"] {
        assert!(
            matches!(
                store.result_path(&job.id, bad),
                Err(JobStoreError::InvalidName(_))
            ),
            "{bad:?} accepted"
        );
    }
    assert!(store.result_path("../etc", "passwd").is_err());
}

#[test]
fn delete_removes_row_and_folder() {
    let scratch = Scratch::new();
    let store = scratch.store();
    let job = store.create(new_job("tap", None, &[("a", "b")])).unwrap();
    let path = store.result_path(&job.id, "result.vot").unwrap();
    std::fs::write(&path, b"x").unwrap();
    assert!(store.delete(&job.id).unwrap());
    assert!(!store.job_dir(&job.id).unwrap().exists());
    assert_eq!(store.get(&job.id).unwrap(), None);
    assert!(!store.delete(&job.id).unwrap());
}

#[test]
fn expired_and_overrun_jobs() {
    let scratch = Scratch::new();
    let store = scratch.store();
    let old = store.create(new_job("tap", None, &[])).unwrap();
    let young = store.create(new_job("tap", None, &[])).unwrap();
    store.create(new_job("soda", None, &[])).unwrap();
    let now = Utc::now();
    store
        .set_destruction(&old.id, now - Duration::seconds(1))
        .unwrap();
    assert_eq!(store.expired("tap", now).unwrap(), [old.id.as_str()]);
    assert!(store.expired("soda", now).unwrap().is_empty());

    store.set_execution_duration(&young.id, 1).unwrap();
    store.set_phase(&young.id, Phase::Queued).unwrap();
    store.start(&young.id).unwrap();
    assert!(store.overrun("tap", Utc::now()).unwrap().is_empty());
    assert_eq!(
        store
            .overrun("tap", Utc::now() + Duration::seconds(2))
            .unwrap(),
        [young.id.as_str()]
    );
}

#[test]
fn recovery_and_persistence_across_reopen() {
    let scratch = Scratch::new();
    let (queued, executing, done) = {
        let store = scratch.store();
        let queued = store
            .create(new_job("tap", Some("bob"), &[("q", "1")]))
            .unwrap();
        store.set_phase(&queued.id, Phase::Queued).unwrap();
        let executing = store.create(new_job("tap", None, &[])).unwrap();
        store.set_phase(&executing.id, Phase::Queued).unwrap();
        store.start(&executing.id).unwrap();
        let done = store.create(new_job("tap", None, &[])).unwrap();
        store.fail(&done.id, "boom").unwrap();
        (queued, executing, done)
    };
    let store = scratch.store();
    let reopened = store.get(&queued.id).unwrap().unwrap();
    assert_eq!(reopened.owner.as_deref(), Some("bob"));
    assert_eq!(reopened.parameters, [("q".into(), "1".into())]);
    assert_eq!(reopened.creation_time, queued.creation_time);
    assert_eq!(
        store.get(&done.id).unwrap().unwrap().error.as_deref(),
        Some("boom")
    );

    assert!(store.recover_after_restart("soda").unwrap().is_empty());
    let recovered = store.recover_after_restart("tap").unwrap();
    assert_eq!(recovered, [queued.id.clone(), executing.id.clone()]);
    let again = store.get(&executing.id).unwrap().unwrap();
    assert_eq!(again.phase, Phase::Queued);
    assert!(again.start_time.is_none());
    assert_eq!(store.get(&done.id).unwrap().unwrap().phase, Phase::Error);
}
