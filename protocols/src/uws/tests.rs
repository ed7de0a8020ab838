//! Tests of the UWS routes through `tower::ServiceExt::oneshot`, with a runner that completes
//! jobs after a delay and writes a result file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aster_archive::jobs::JobResult;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request as HttpRequest};
use axum::middleware::{self, Next};
use tower::ServiceExt;

use super::*;

/// A scratch folder removed when the test ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a job by waiting `delay`, then writing its QUERY into `result.txt`. A QUERY of `fail`
/// makes the job fail instead.
struct TestRunner {
    store: JobStore,
    delay: Duration,
    tasks: Mutex<HashMap<String, JoinHandle<()>>>,
    aborted: Mutex<Vec<String>>,
}

impl JobRunner for TestRunner {
    fn validate(&self, job: &Job) -> Result<(), String> {
        match job.parameter("query") {
            Some(_) => Ok(()),
            None => Err("the QUERY parameter is missing".into()),
        }
    }

    fn run(&self, job: Job) {
        let store = self.store.clone();
        let delay = self.delay;
        let id = job.id.clone();
        let task = tokio::spawn(async move {
            if store.start(&job.id).is_err() {
                return;
            }
            tokio::time::sleep(delay).await;
            let query = job.parameter("query").unwrap_or_default().to_owned();
            if query == "fail" {
                let _ = store.fail(&job.id, "the query failed");
                return;
            }
            let Ok(path) = store.result_path(&job.id, "result.txt") else {
                return;
            };
            if tokio::fs::write(&path, &query).await.is_err() {
                return;
            }
            let result = JobResult {
                id: "result".into(),
                file_name: "result.txt".into(),
                media_type: "text/plain".into(),
                size: query.len() as u64,
                rows: Some(1),
            };
            let _ = store.complete(&job.id, vec![result]);
        });
        self.tasks.lock().unwrap().insert(id, task);
    }

    fn abort(&self, job_id: &str) {
        if let Some(task) = self.tasks.lock().unwrap().remove(job_id) {
            task.abort();
        }
        self.aborted.lock().unwrap().push(job_id.to_owned());
    }
}

struct Harness {
    _scratch: Scratch,
    store: JobStore,
    runner: Arc<TestRunner>,
    app: Router,
}

/// Puts the identity named by header `x-test-user` in the request, as an authentication layer
/// would.
async fn fake_authentication(mut request: Request, next: Next) -> Response {
    let user = request
        .headers()
        .get("x-test-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(user) = user {
        request.extensions_mut().insert(Owner(user));
    }
    next.run(request).await
}

fn harness_with(delay: Duration, configure: impl FnOnce(&mut UwsConfig)) -> Harness {
    let dir = std::env::temp_dir().join(format!("aster-uws-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = JobStore::open(&dir.join("jobs.sqlite")).unwrap();
    let runner = Arc::new(TestRunner {
        store: store.clone(),
        delay,
        tasks: Mutex::default(),
        aborted: Mutex::default(),
    });
    let mut config = UwsConfig::new("tap");
    configure(&mut config);
    let app = Router::new()
        .nest("/tap/async", router(store.clone(), runner.clone(), config))
        .layer(middleware::from_fn(fake_authentication));
    Harness {
        _scratch: Scratch(dir),
        store,
        runner,
        app,
    }
}

fn harness(delay: Duration) -> Harness {
    harness_with(delay, |_| {})
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

fn request(method: Method, uri: &str) -> axum::http::request::Builder {
    HttpRequest::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "example.org")
}

fn form(uri: &str, body: &str) -> Request {
    request(Method::POST, uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn get_request(uri: &str) -> Request {
    request(Method::GET, uri).body(Body::empty()).unwrap()
}

impl Harness {
    async fn send(&self, request: Request) -> Reply {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, uri: &str) -> Reply {
        self.send(get_request(uri)).await
    }

    async fn post(&self, uri: &str, body: &str) -> Reply {
        self.send(form(uri, body)).await
    }

    /// Creates a job and returns its id.
    async fn create(&self, body: &str) -> String {
        let reply = self.post("/tap/async", body).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        let prefix = "http://example.org/tap/async/";
        let id = reply.location().strip_prefix(prefix).expect("job URL");
        id.to_owned()
    }

    async fn phase(&self, id: &str) -> String {
        self.get(&format!("/tap/async/{id}/phase")).await.body
    }

    /// Polls the store until job `id` is in `phase`.
    async fn reach(&self, id: &str, phase: Phase) {
        for _ in 0..500 {
            if self.store.get(id).unwrap().map(|job| job.phase) == Some(phase) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("job {id} never reached {phase}");
    }

    /// Waits with UWS blocking until job `id` is final.
    async fn wait_final(&self, id: &str) -> Reply {
        for _ in 0..50 {
            let reply = self.get(&format!("/tap/async/{id}?WAIT=5")).await;
            let final_phase = ["COMPLETED", "ERROR", "ABORTED"]
                .iter()
                .any(|p| reply.body.contains(&format!("<uws:phase>{p}</uws:phase>")));
            if final_phase {
                return reply;
            }
        }
        panic!("job {id} did not finish");
    }
}

#[tokio::test]
async fn uws_create_shows_a_pending_job() {
    let h = harness(Duration::ZERO);
    let id = h
        .create("QUERY=SELECT+1&lang=ADQL&RUNID=run+%231&upload=a&UPLOAD=b")
        .await;
    let reply = h.get(&format!("/tap/async/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.content_type().starts_with("text/xml"));
    let body = &reply.body;
    for expected in [
        "xmlns:uws=\"http://www.ivoa.net/xml/UWS/v1.0\"",
        "version=\"1.1\"",
        &format!("<uws:jobId>{id}</uws:jobId>"),
        "<uws:runId>run #1</uws:runId>",
        "<uws:ownerId xsi:nil=\"true\"/>",
        "<uws:phase>PENDING</uws:phase>",
        "<uws:quote xsi:nil=\"true\"/>",
        "<uws:startTime xsi:nil=\"true\"/>",
        "<uws:executionDuration>3600</uws:executionDuration>",
        "<uws:parameter id=\"query\">SELECT 1</uws:parameter>",
        "<uws:parameter id=\"lang\">ADQL</uws:parameter>",
        "<uws:parameter id=\"upload\">a</uws:parameter>",
        "<uws:parameter id=\"upload\">b</uws:parameter>",
        "<uws:results>",
    ] {
        assert!(body.contains(expected), "{expected} missing from {body}");
    }
    assert!(!body.contains("errorSummary") && !body.contains("id=\"runid\""));
    // Schema order: phase, quote, creationTime, startTime, endTime, executionDuration, ...
    let order = [
        "<uws:jobId>",
        "<uws:runId>",
        "<uws:ownerId",
        "<uws:phase>",
        "<uws:quote",
        "<uws:creationTime>",
        "<uws:startTime",
        "<uws:endTime",
        "<uws:executionDuration>",
        "<uws:destruction>",
        "<uws:parameters>",
        "<uws:results>",
    ];
    let positions: Vec<usize> = order.iter().map(|e| body.find(e).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{body}");

    assert_eq!(h.phase(&id).await, "PENDING");
    assert_eq!(h.get(&format!("/tap/async/{id}/quote")).await.body, "");
    assert_eq!(h.get(&format!("/tap/async/{id}/owner")).await.body, "");
    let parameters = h.get(&format!("/tap/async/{id}/parameters")).await;
    assert!(parameters.body.contains("<uws:parameters xmlns:uws="));
    assert!(
        parameters
            .body
            .contains("<uws:parameter id=\"query\">SELECT 1</uws:parameter>")
    );
}

#[tokio::test]
async fn uws_run_wait_and_download_result() {
    let h = harness(Duration::from_millis(200));
    let started = Instant::now();
    let id = h.create("QUERY=hello+%26+goodbye&PHASE=RUN").await;
    let job = h.wait_final(&id).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        job.body.contains("<uws:phase>COMPLETED</uws:phase>"),
        "{}",
        job.body
    );
    let href = format!("http://example.org/tap/async/{id}/results/result");
    assert!(
        job.body.contains(&format!(
            "<uws:result id=\"result\" xlink:href=\"{href}\" size=\"15\" mime-type=\"text/plain\"/>"
        )),
        "{}",
        job.body
    );
    assert!(!job.body.contains("<uws:endTime xsi:nil"));

    let results = h.get(&format!("/tap/async/{id}/results")).await;
    assert!(results.body.contains(&href));
    let file = h.get(&format!("/tap/async/{id}/results/result")).await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(file.content_type(), "text/plain");
    assert_eq!(file.headers[header::CONTENT_LENGTH], "15");
    assert_eq!(file.body, "hello & goodbye");

    // RUN again on a finished job is refused; missing results are 404.
    let again = h.post(&format!("/tap/async/{id}/phase"), "PHASE=RUN").await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let missing = h.get(&format!("/tap/async/{id}/results/other")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn uws_run_via_phase_and_wait_returns_on_change() {
    let h = harness(Duration::from_millis(300));
    let id = h.create("QUERY=x").await;
    let reply = h.post(&format!("/tap/async/{id}/phase"), "phase=RUN").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(
        reply.location(),
        format!("http://example.org/tap/async/{id}")
    );
    // RUN twice changes nothing.
    let reply = h.post(&format!("/tap/async/{id}/phase"), "PHASE=RUN").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    h.reach(&id, Phase::Executing).await;
    let started = Instant::now();
    let reply = h
        .get(&format!("/tap/async/{id}?WAIT=30&PHASE=EXECUTING"))
        .await;
    let waited = started.elapsed();
    assert!(waited > Duration::from_millis(100), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert!(
        reply.body.contains("<uws:phase>COMPLETED</uws:phase>"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn uws_wait_blocks_only_while_active_and_matching() {
    let h = harness_with(Duration::ZERO, |c| c.max_wait = Duration::from_millis(400));
    let id = h.create("QUERY=x").await;

    let started = Instant::now();
    let reply = h.get(&format!("/tap/async/{id}?WAIT=-1")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(350), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    // Another phase than the job's: no blocking.
    let started = Instant::now();
    h.get(&format!("/tap/async/{id}?WAIT=30&PHASE=EXECUTING"))
        .await;
    h.get(&format!("/tap/async/{id}?WAIT=0")).await;
    assert!(started.elapsed() < Duration::from_millis(300));

    // A final job: no blocking.
    h.post(&format!("/tap/async/{id}/phase"), "PHASE=ABORT")
        .await;
    let started = Instant::now();
    h.get(&format!("/tap/async/{id}?WAIT=30")).await;
    assert!(started.elapsed() < Duration::from_millis(300));

    for bad in ["WAIT=soon", "WAIT=-2", "WAIT=1&PHASE=RUNNING"] {
        let reply = h.get(&format!("/tap/async/{id}?{bad}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(reply.content_type().starts_with("text/plain"));
    }
}

#[tokio::test]
async fn uws_wait_ends_when_the_job_is_deleted() {
    let h = harness_with(Duration::ZERO, |c| c.max_wait = Duration::from_secs(20));
    let id = h.create("QUERY=x").await;
    let deleter = {
        let app = h.app.clone();
        let uri = format!("/tap/async/{id}");
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            app.oneshot(request(Method::DELETE, &uri).body(Body::empty()).unwrap())
                .await
                .unwrap()
                .status()
        })
    };
    let started = Instant::now();
    let reply = h.get(&format!("/tap/async/{id}?WAIT=20")).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(deleter.await.unwrap(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn uws_job_list_filters() {
    let h = harness(Duration::ZERO);
    let first = h.create("QUERY=1").await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let second = h.create("QUERY=2&RUNID=two").await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let third = h.create("QUERY=3&PHASE=RUN").await;
    h.wait_final(&third).await;

    let list = h.get("/tap/async").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.content_type().starts_with("text/xml"));
    assert!(list.body.contains("<uws:jobs xmlns:uws="));
    assert!(list.body.contains(&format!(
        "<uws:jobref id=\"{second}\" xlink:href=\"http://example.org/tap/async/{second}\">"
    )));
    assert!(list.body.contains("<uws:runId>two</uws:runId>"));
    assert!(list.body.contains("<uws:creationTime>"));
    assert_eq!(list.body.matches("<uws:jobref ").count(), 3);

    let pending = h.get("/tap/async?PHASE=PENDING").await;
    assert_eq!(pending.body.matches("<uws:jobref ").count(), 2);
    assert!(!pending.body.contains(&third));
    let both = h.get("/tap/async?PHASE=PENDING&phase=COMPLETED").await;
    assert_eq!(both.body.matches("<uws:jobref ").count(), 3);

    let last = h.get("/tap/async?LAST=2").await;
    let (at_third, at_second) = (last.body.find(&third), last.body.find(&second));
    assert!(at_third.unwrap() < at_second.unwrap(), "most recent first");
    assert!(!last.body.contains(&first));

    let created = h.store.get(&first).unwrap().unwrap().creation_time;
    let after = xml::timestamp(created + chrono::Duration::milliseconds(5));
    let later = h.get(&format!("/tap/async?AFTER={after}")).await;
    assert_eq!(
        later.body.matches("<uws:jobref ").count(),
        2,
        "{}",
        later.body
    );
    assert!(!later.body.contains(&first));

    for bad in [
        "PHASE=pending",
        "PHASE=",
        "LAST=-1",
        "LAST=many",
        "AFTER=yesterday",
    ] {
        let reply = h.get(&format!("/tap/async?{bad}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn uws_validation_failure_gives_error_document() {
    let h = harness(Duration::ZERO);
    let id = h.create("LANG=ADQL").await;
    let no_error = h.get(&format!("/tap/async/{id}/error")).await;
    assert_eq!(no_error.status, StatusCode::NOT_FOUND);

    h.post(&format!("/tap/async/{id}/phase"), "PHASE=RUN").await;
    assert_eq!(h.phase(&id).await, "ERROR");
    let job = h.get(&format!("/tap/async/{id}")).await;
    assert!(job.body.contains(
        "<uws:errorSummary type=\"fatal\" hasDetail=\"true\">\n    \
         <uws:message>the QUERY parameter is missing</uws:message>"
    ));
    let error = h.get(&format!("/tap/async/{id}/error")).await;
    assert_eq!(error.status, StatusCode::OK);
    assert_eq!(error.content_type(), "application/x-votable+xml");
    assert!(error.body.contains("<RESOURCE type=\"results\">"));
    assert!(error.body.contains(
        "<INFO name=\"QUERY_STATUS\" value=\"ERROR\">the QUERY parameter is missing</INFO>"
    ));

    // A runner failure shows the same way.
    let failing = h.create("QUERY=fail&PHASE=RUN").await;
    let job = h.wait_final(&failing).await;
    assert!(job.body.contains("<uws:phase>ERROR</uws:phase>"));
    let error = h.get(&format!("/tap/async/{failing}/error")).await;
    assert!(error.body.contains("the query failed"));
}

#[tokio::test]
async fn uws_abort_stops_the_runner() {
    let h = harness(Duration::from_secs(30));
    let id = h.create("QUERY=slow&PHASE=RUN").await;
    let reply = h
        .post(&format!("/tap/async/{id}/phase"), "PHASE=ABORT")
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(h.phase(&id).await, "ABORTED");
    assert_eq!(*h.runner.aborted.lock().unwrap(), [id.as_str()]);
    assert!(h.runner.tasks.lock().unwrap().is_empty());
    // Aborting again changes nothing; running an aborted job is refused.
    let again = h
        .post(&format!("/tap/async/{id}/phase"), "PHASE=ABORT")
        .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    let run = h.post(&format!("/tap/async/{id}/phase"), "PHASE=RUN").await;
    assert_eq!(run.status, StatusCode::CONFLICT);
    assert!(run.content_type().starts_with("text/plain"));

    for bad in ["PHASE=SUSPEND", "", "ACTION=RUN"] {
        let reply = h.post(&format!("/tap/async/{id}/phase"), bad).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad:?}");
    }
}

#[tokio::test]
async fn uws_delete_destroys_the_job() {
    let h = harness(Duration::from_secs(30));
    let id = h.create("QUERY=slow&PHASE=RUN").await;
    let dir = h.store.job_dir(&id).unwrap();
    assert!(dir.is_dir());
    let reply = h
        .send(
            request(Method::DELETE, &format!("/tap/async/{id}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.location(), "http://example.org/tap/async");
    assert_eq!(
        h.get(&format!("/tap/async/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(!dir.exists());
    assert_eq!(*h.runner.aborted.lock().unwrap(), [id]);

    let other = h.create("QUERY=x").await;
    let no_action = h.post(&format!("/tap/async/{other}"), "QUERY=y").await;
    assert_eq!(no_action.status, StatusCode::BAD_REQUEST);
    let bad_action = h
        .post(&format!("/tap/async/{other}"), "ACTION=REMOVE")
        .await;
    assert_eq!(bad_action.status, StatusCode::BAD_REQUEST);
    let reply = h
        .post(&format!("/tap/async/{other}"), "action=DELETE")
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(h.store.get(&other).unwrap(), None);
}

#[tokio::test]
async fn uws_execution_duration_and_destruction() {
    let h = harness_with(Duration::from_secs(30), |c| {
        c.max_execution_duration = 600;
        c.default_execution_duration = 60;
    });
    let id = h.create("QUERY=x").await;
    let path = format!("/tap/async/{id}/executionduration");
    assert_eq!(h.get(&path).await.body, "60");
    let reply = h.post(&path, "EXECUTIONDURATION=120").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(
        reply.location(),
        format!("http://example.org/tap/async/{id}")
    );
    assert_eq!(h.get(&path).await.body, "120");
    // Unlimited or too long: the service maximum.
    h.post(&path, "executionDuration=0").await;
    assert_eq!(h.get(&path).await.body, "600");
    h.post(&path, "EXECUTIONDURATION=100000").await;
    assert_eq!(h.get(&path).await.body, "600");
    for bad in ["EXECUTIONDURATION=-5", "EXECUTIONDURATION=soon", "OTHER=1"] {
        assert_eq!(
            h.post(&path, bad).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }

    let path = format!("/tap/async/{id}/destruction");
    let reply = h.post(&path, "DESTRUCTION=2030-01-02T03:04:05Z").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let granted = h.get(&path).await.body;
    let limit = Utc::now() + chrono::Duration::days(30);
    let granted = params::parse_timestamp(&granted).unwrap();
    assert!(granted <= limit && granted > limit - chrono::Duration::minutes(1));
    h.post(&path, "DESTRUCTION=2020-01-02T03:04:05.5").await;
    assert_eq!(h.get(&path).await.body, "2020-01-02T03:04:05.500Z");
    assert!(
        h.get(&format!("/tap/async/{id}"))
            .await
            .body
            .contains("<uws:destruction>2020-01-02T03:04:05.500Z</uws:destruction>")
    );
    for bad in ["DESTRUCTION=tomorrow", "DESTRUCTION=2020-13-01", ""] {
        assert_eq!(
            h.post(&path, bad).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }

    // Once running, the execution duration is frozen; destruction can still move.
    h.post(&format!("/tap/async/{id}/phase"), "PHASE=RUN").await;
    let reply = h
        .post(
            &format!("/tap/async/{id}/executionduration"),
            "EXECUTIONDURATION=10",
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    let reply = h.post(&path, "DESTRUCTION=2021-01-01").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(h.get(&path).await.body, "2021-01-01T00:00:00.000Z");
}

#[tokio::test]
async fn uws_parameters_change_while_pending() {
    let h = harness(Duration::from_secs(30));
    let id = h.create("QUERY=SELECT+1&MAXREC=5").await;
    let path = format!("/tap/async/{id}/parameters");
    let reply = h.post(&path, "query=SELECT+2&LANG=ADQL").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let job = h.store.get(&id).unwrap().unwrap();
    assert_eq!(
        job.parameters,
        [
            ("maxrec".to_owned(), "5".to_owned()),
            ("query".to_owned(), "SELECT 2".to_owned()),
            ("lang".to_owned(), "ADQL".to_owned()),
        ]
    );
    h.post(&format!("/tap/async/{id}/phase"), "PHASE=RUN").await;
    let reply = h.post(&path, "QUERY=SELECT+3").await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert!(reply.body.contains("PENDING"), "{}", reply.body);
}

/// A multipart/form-data part: name, (file name, media type) for a file part, content.
type Part<'a> = (&'a str, Option<(&'a str, &'a str)>, &'a str);

fn multipart(uri: &str, parts: &[Part<'_>]) -> Request {
    let boundary = "uws-test-boundary";
    let mut body = String::new();
    for (name, file, content) in parts {
        body.push_str(&format!("--{boundary}\r\n"));
        match file {
            Some((file_name, media_type)) => body.push_str(&format!(
                "Content-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\n\
                 Content-Type: {media_type}\r\n\r\n"
            )),
            None => body.push_str(&format!(
                "Content-Disposition: form-data; name=\"{name}\"\r\n\r\n"
            )),
        }
        body.push_str(content);
        body.push_str("\r\n");
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    request(Method::POST, uri)
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn uws_multipart_uploads_are_kept() {
    let h = harness(Duration::ZERO);
    let reply = h
        .send(multipart(
            "/tap/async",
            &[
                ("QUERY", None, "SELECT * FROM TAP_UPLOAD.t"),
                ("UPLOAD", None, "t,param:table1"),
                ("table1", Some(("t.csv", "text/csv")), "a,b\n1,2\n"),
                ("RUNID", None, "multi"),
            ],
        ))
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let id = reply.location().rsplit('/').next().unwrap().to_owned();
    let job = h.store.get(&id).unwrap().unwrap();
    assert_eq!(job.run_id.as_deref(), Some("multi"));
    assert_eq!(job.parameter("upload"), Some("t,param:table1"));
    let file = job.file("table1").unwrap();
    assert_eq!((file.media_type.as_str(), file.size), ("text/csv", 8));
    let bytes = std::fs::read(h.store.file_path(&id, file).unwrap()).unwrap();
    assert_eq!(bytes, b"a,b\n1,2\n");

    // A new upload of the same part replaces the file.
    let reply = h
        .send(multipart(
            &format!("/tap/async/{id}/parameters"),
            &[("table1", Some(("u.csv", "text/csv")), "a\n3\n")],
        ))
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let job = h.store.get(&id).unwrap().unwrap();
    assert_eq!(job.files.len(), 1);
    let bytes = std::fs::read(h.store.file_path(&id, &job.files[0]).unwrap()).unwrap();
    assert_eq!(bytes, b"a\n3\n");
    // Nothing is left staged.
    let incoming = h.store.jobs_dir().join(".incoming");
    let leftovers = std::fs::read_dir(&incoming).map_or(0, |d| d.count());
    assert_eq!(leftovers, 0);
}

#[tokio::test]
async fn uws_bad_bodies_are_refused() {
    let h = harness_with(Duration::ZERO, |c| c.max_body_bytes = 1024);
    let too_big = format!("QUERY={}", "x".repeat(4096));
    assert_eq!(
        h.post("/tap/async", &too_big).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let reply = h
        .send(
            request(Method::POST, "/tap/async")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let reply = h
        .send(
            request(Method::POST, "/tap/async")
                .body(Body::from("QUERY=1"))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let reply = h.post("/tap/async", "QUERY=1&PHASE=ABORT").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let unnamed = h.send(multipart("/tap/async", &[("", None, "x")])).await;
    assert_eq!(unnamed.status, StatusCode::BAD_REQUEST);
    // No job was left behind by the refusals.
    assert!(
        h.store
            .list("tap", None, &[], None, None)
            .unwrap()
            .is_empty()
    );

    // Parameters in the query string of a body-less POST are read.
    let reply = h
        .send(
            request(Method::POST, "/tap/async?QUERY=1&RUNID=q")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn uws_unknown_jobs_are_404() {
    let h = harness(Duration::ZERO);
    for path in [
        "/tap/async/nope",
        "/tap/async/nope/phase",
        "/tap/async/nope/executionduration",
        "/tap/async/nope/destruction",
        "/tap/async/nope/error",
        "/tap/async/nope/quote",
        "/tap/async/nope/owner",
        "/tap/async/nope/results",
        "/tap/async/nope/results/result",
        "/tap/async/nope/parameters",
        "/tap/async/..%2F..%2Fetc/results/result",
    ] {
        let reply = h.get(path).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert!(reply.content_type().starts_with("text/plain"), "{path}");
    }
    let reply = h.post("/tap/async/nope/phase", "PHASE=RUN").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = h
        .send(
            request(Method::DELETE, "/tap/async/nope")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    // Jobs of another service sharing the store are not visible here.
    let soda = h
        .store
        .create(NewJob {
            service: "soda".into(),
            owner: None,
            run_id: None,
            parameters: Vec::new(),
            uploads: None,
            execution_duration: 0,
            destruction: Utc::now() + chrono::Duration::days(1),
        })
        .unwrap();
    let reply = h.get(&format!("/tap/async/{}", soda.id)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn uws_owners_see_only_their_jobs() {
    let h = harness(Duration::ZERO);
    let as_user = |uri: &str, user: &str| {
        request(Method::GET, uri)
            .header("x-test-user", user)
            .body(Body::empty())
            .unwrap()
    };
    let reply = h
        .send(
            request(Method::POST, "/tap/async")
                .header("x-test-user", "alice")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from("QUERY=1"))
                .unwrap(),
        )
        .await;
    let id = reply.location().rsplit('/').next().unwrap().to_owned();
    let anonymous = h.create("QUERY=2").await;

    let mine = h.send(as_user(&format!("/tap/async/{id}"), "alice")).await;
    assert!(mine.body.contains("<uws:ownerId>alice</uws:ownerId>"));
    let owner = h
        .send(as_user(&format!("/tap/async/{id}/owner"), "alice"))
        .await;
    assert_eq!(owner.body, "alice");
    let theirs = h.send(as_user(&format!("/tap/async/{id}"), "bob")).await;
    assert_eq!(theirs.status, StatusCode::FORBIDDEN);
    assert_eq!(
        h.get(&format!("/tap/async/{id}")).await.status,
        StatusCode::FORBIDDEN
    );

    let alice_list = h.send(as_user("/tap/async", "alice")).await;
    assert!(alice_list.body.contains(&id) && !alice_list.body.contains(&anonymous));
    let bob_list = h.send(as_user("/tap/async", "bob")).await;
    assert_eq!(bob_list.body.matches("<uws:jobref ").count(), 0);
    let anonymous_list = h.get("/tap/async").await;
    assert!(anonymous_list.body.contains(&anonymous) && !anonymous_list.body.contains(&id));
}

#[tokio::test]
async fn uws_urls_follow_forwarding_headers() {
    let h = harness(Duration::ZERO);
    let reply = h
        .send(
            request(Method::POST, "/tap/async")
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", "archive.example.net, proxy.internal")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from("QUERY=1"))
                .unwrap(),
        )
        .await;
    assert!(
        reply
            .location()
            .starts_with("https://archive.example.net/tap/async/"),
        "{}",
        reply.location()
    );
    let reply = h
        .send(
            request(Method::GET, "/tap/async")
                .header("x-forwarded-host", "evil\"><x")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn uws_reaper_destroys_expired_and_aborts_overrunning_jobs() {
    let h = harness(Duration::from_secs(30));
    let expired = h.create("QUERY=x&PHASE=RUN").await;
    let kept = h.create("QUERY=y").await;
    let overrun = h.create("QUERY=z").await;
    h.post(
        &format!("/tap/async/{overrun}/executionduration"),
        "EXECUTIONDURATION=1",
    )
    .await;
    h.post(&format!("/tap/async/{overrun}/phase"), "PHASE=RUN")
        .await;
    h.post(
        &format!("/tap/async/{expired}/destruction"),
        "DESTRUCTION=2000-01-01",
    )
    .await;
    h.reach(&expired, Phase::Executing).await;
    h.reach(&overrun, Phase::Executing).await;

    let store = h.store.clone();
    let runner = h.runner.clone();
    let later = Utc::now() + chrono::Duration::seconds(5);
    tokio::task::spawn_blocking(move || reap(&store, &*runner, "tap", later))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.store.get(&expired).unwrap(), None);
    assert_eq!(h.phase(&kept).await, "PENDING");
    let job = h.store.get(&overrun).unwrap().unwrap();
    assert_eq!(job.phase, Phase::Aborted);
    assert!(job.error.unwrap().contains("execution duration of 1 s"));
    let mut aborted = h.runner.aborted.lock().unwrap().clone();
    aborted.sort();
    let mut expected = vec![expired, overrun];
    expected.sort();
    assert_eq!(aborted, expected);
}

#[tokio::test]
async fn uws_interrupted_jobs_resume() {
    let h = harness(Duration::ZERO);
    let id = h.create("QUERY=again").await;
    h.store.set_phase(&id, Phase::Queued).unwrap();
    h.store.start(&id).unwrap();
    assert_eq!(
        resume_interrupted_jobs(&h.store, &*h.runner, "tap").unwrap(),
        1
    );
    let job = h.wait_final(&id).await;
    assert!(job.body.contains("<uws:phase>COMPLETED</uws:phase>"));
}

#[test]
fn uws_error_documents_escape_the_message() {
    let doc = crate::formats::error_votable("a < b & \"c\"\u{1}");
    assert!(
        doc.contains(">a &lt; b &amp; \"c\"\u{FFFD}</INFO>"),
        "{doc}"
    );
    assert_eq!(xml::path_segment("abc-1.2_~"), "abc-1.2_~");
    assert_eq!(xml::path_segment("a b/é"), "a%20b%2F%C3%A9");
}

#[test]
fn uws_timestamps_parse_like_dali() {
    let parse = |s| params::parse_timestamp(s).map(xml::timestamp);
    assert_eq!(
        parse("2015-10-26T09:15:35Z").as_deref(),
        Some("2015-10-26T09:15:35.000Z")
    );
    assert_eq!(
        parse("2015-10-26T09:15:35.25").as_deref(),
        Some("2015-10-26T09:15:35.250Z")
    );
    assert_eq!(
        parse("2015-10-26T09:15").as_deref(),
        Some("2015-10-26T09:15:00.000Z")
    );
    assert_eq!(
        parse("2015-10-26").as_deref(),
        Some("2015-10-26T00:00:00.000Z")
    );
    assert_eq!(
        parse("2015-10-26T10:15:35+01:00").as_deref(),
        Some("2015-10-26T09:15:35.000Z")
    );
    for bad in ["", "2015", "2015-10-26T09", "2015-26-10", "now"] {
        assert_eq!(parse(bad), None, "{bad}");
    }
}

#[test]
fn uws_list_path_strips_the_routed_part() {
    assert_eq!(
        list_path("/tap/async/abc/phase", "/abc/phase"),
        "/tap/async"
    );
    assert_eq!(list_path("/tap/async", "/"), "/tap/async");
    assert_eq!(list_path("/tap/async/", "/"), "/tap/async");
    assert_eq!(list_path("/abc", "/abc"), "");
}
