//! Test helpers (feature `test-util`): a real receiver server, a real app on port 0 with a
//! temporary SQLite file, and a poll-until-deadline helper. Used by this crate's tests and
//! by the binaries' tests.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
    Router,
};
use serde_json::Value;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

mod postgres_server;
mod program;
mod redis_server;

pub use self::postgres_server::{PostgresServer, TEST_POSTGRES_VAR};
pub use self::program::{write_config, Program};
pub use self::redis_server::RedisServer;
use crate::{
    clock::{Clock, SystemClock},
    config::{Service, Settings, Subscriber},
    Application,
};

/// Polls `check` every 10 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A clock that stands still until a test moves it, so stored times and the ages computed
/// from them are exact. The delivery loop's sleeps still run on real time: moving this clock
/// past a delivery's due time does not wake the loop.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `now_ms`.
    pub fn at(now_ms: i64) -> Arc<Self> {
        Arc::new(ManualClock(AtomicI64::new(now_ms)))
    }

    /// Moves the clock to `now_ms`.
    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request path.
    pub path: String,
    /// Request headers.
    pub headers: HeaderMap,
    /// Raw body.
    pub body: Bytes,
    /// When it arrived.
    pub at: Instant,
    /// The status it was answered with.
    pub answered: u16,
    /// The sender's address: one per TCP connection.
    pub peer: SocketAddr,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("pushes are JSON")
    }
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Decides the answer to each request: `(status, delay)`.
pub type Behavior = Arc<dyn Fn(&Received) -> (u16, Duration) + Send + Sync>;

#[derive(Clone)]
struct ReceiverState {
    log: Arc<Mutex<Vec<Received>>>,
    behavior: Arc<Mutex<Behavior>>,
    retry_after: Arc<Mutex<Option<u64>>>,
    arrivals: Arc<std::sync::atomic::AtomicUsize>,
}

/// A subscriber's HTTP server on 127.0.0.1, port 0, recording every push.
pub struct TestReceiver {
    /// Bound address.
    pub addr: SocketAddr,
    state: ReceiverState,
    task: JoinHandle<()>,
}

impl TestReceiver {
    /// Starts a receiver that answers 200 to everything.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        Self::start_on(listener).await
    }

    /// Starts a receiver on a given listener (to restart on the same port).
    pub async fn start_on(listener: TcpListener) -> Self {
        let addr = listener.local_addr().expect("receiver address");
        let state = ReceiverState {
            log: Arc::default(),
            behavior: Arc::new(Mutex::new(Arc::new(|_: &Received| (200, Duration::ZERO)))),
            retry_after: Arc::default(),
            arrivals: Arc::default(),
        };
        let app = Router::new().fallback(receive).with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
        });
        TestReceiver { addr, state, task }
    }

    /// Base URL, e.g. `http://127.0.0.1:4711`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes how requests are answered from now on.
    pub fn set_behavior(&self, f: impl Fn(&Received) -> (u16, Duration) + Send + Sync + 'static) {
        *self.state.behavior.lock().unwrap() = Arc::new(f);
    }

    /// Answers every request with `status`.
    pub fn answer(&self, status: u16) {
        self.set_behavior(move |_| (status, Duration::ZERO));
    }

    /// Sends `Retry-After: <secs>` with every non-2xx answer from now on.
    pub fn set_retry_after(&self, secs: Option<u64>) {
        *self.state.retry_after.lock().unwrap() = secs;
    }

    /// Requests that arrived so far, answered or not (a slow answer is still in progress).
    pub fn arrivals(&self) -> usize {
        self.state.arrivals.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.log.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests were answered 2xx; returns all requests.
    pub async fn wait_for_successes(&self, n: usize, timeout: Duration) -> Vec<Received> {
        eventually(timeout, &format!("{n} successful pushes"), || async {
            let all = self.received();
            (all.iter().filter(|r| (200..300).contains(&r.answered)).count() >= n).then_some(all)
        })
        .await
    }

    /// Stops the server (connections refused from now on).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for TestReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(state): State<ReceiverState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut received = Received { path: uri.path().to_string(), headers, body, at: Instant::now(), answered: 0, peer };
    state.arrivals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let behavior = state.behavior.lock().unwrap().clone();
    let (status, delay) = behavior(&received);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    received.answered = status;
    state.log.lock().unwrap().push(received);
    let mut response = StatusCode::from_u16(status).unwrap_or(StatusCode::OK).into_response();
    let retry_after = *state.retry_after.lock().unwrap();
    if let (Some(secs), false) = (retry_after, (200..300).contains(&status)) {
        response.headers_mut().insert("retry-after", secs.into());
    }
    response
}

/// Settings for a test: port 0, a database in `dir`, stdout-only logs, a fast retry schedule,
/// and one subscriber `demo` posting to `receiver_url` (`/cdr` and `/status`).
pub fn test_settings(dir: &std::path::Path, receiver_url: &str) -> Settings {
    let mut settings = Settings::defaults();
    settings.log.dir = String::new();
    for (service, name) in [(Service::Cdr, "cdr.db"), (Service::Status, "status.db")] {
        let section = settings.service_mut(service);
        section.listen = "127.0.0.1:0".into();
        section.database = format!("sqlite://{}", dir.join(name).display());
    }
    settings.retry.schedule = vec![Duration::from_millis(50); 3];
    settings.delivery.timeout = Duration::from_secs(2);
    settings.delivery.shutdown_grace = Duration::from_secs(2);
    settings.subscribers = vec![subscriber("demo", receiver_url)];
    settings
}

/// A subscriber of both service types posting to `<url>/cdr` and `<url>/status`.
pub fn subscriber(id: &str, url: &str) -> Subscriber {
    Subscriber {
        id: id.into(),
        cdr_url: Some(format!("{url}/cdr")),
        status_url: Some(format!("{url}/status")),
        service_types: vec![100, 200],
        accounts: vec![],
        secret: None,
        max_in_flight: None,
        rate_limit_per_second: 0,
        statuses: vec![],
    }
}

/// A running program on 127.0.0.1 with its temporary database.
pub struct TestApp {
    /// Base URL of its API.
    pub url: String,
    /// A client for calling it.
    pub client: reqwest::Client,
    /// Which program.
    pub service: Service,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// Builds and starts `service` with `settings` (see [`test_settings`]).
    pub async fn spawn(service: Service, settings: Settings) -> TestApp {
        Self::spawn_with_clock(service, settings, Arc::new(SystemClock)).await
    }

    /// The same on `clock` (e.g. a [`ManualClock`]), for tests that need exact times.
    pub async fn spawn_with_clock(service: Service, settings: Settings, clock: Arc<dyn Clock>) -> TestApp {
        Self::spawn_reloadable(service, settings, clock, None).await
    }

    /// The same, reloading (`POST /v1/reload`) with `load` when given.
    pub async fn spawn_reloadable(
        service: Service,
        settings: Settings,
        clock: Arc<dyn Clock>,
        load: Option<crate::reload::Loader>,
    ) -> TestApp {
        settings.validate().expect("test settings are valid");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind app");
        let mut app = Application::build_with(settings, service, listener, clock).await.expect("build app");
        if let Some(load) = load {
            app = app.reload_with(load);
        }
        let url = format!("http://{}", app.local_addr());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        TestApp { url, client: reqwest::Client::new(), service, shutdown, task: Some(task) }
    }

    /// POSTs JSON to the program's ingest path.
    pub async fn ingest(&self, body: &Value) -> reqwest::Response {
        let path = crate::api::ingest_path(self.service);
        self.client.post(format!("{}{path}", self.url)).json(body).send().await.expect("ingest request")
    }

    /// GETs a path of the API as JSON, with its status.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(format!("{}{path}", self.url)).send().await.expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POSTs JSON to a path of the API; answers its status and JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.client.post(format!("{}{path}", self.url)).json(body).send().await.expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// One subscriber's entry of `GET /v1/subscribers`.
    pub async fn subscriber_health(&self, id: &str) -> Value {
        let (status, body) = self.get_json("/v1/subscribers").await;
        assert_eq!(status, 200, "{body}");
        body["items"].as_array().and_then(|items| items.iter().find(|s| s["id"] == id).cloned()).unwrap_or(Value::Null)
    }

    /// Polls `GET /v1/deliveries?<query>` until it lists exactly `n` deliveries; returns them.
    pub async fn deliveries_eventually(&self, query: &str, n: usize) -> Vec<Value> {
        eventually(Duration::from_secs(10), &format!("{n} deliveries for {query}"), || async {
            let (_, page) = self.get_json(&format!("/v1/deliveries?{query}&limit=500")).await;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            (items.len() == n).then_some(items)
        })
        .await
    }

    /// Graceful stop, as on SIGTERM; returns the program's result.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.take().expect("running").await.expect("app task panicked")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The SPEC §2.1 seed CDR with another callId.
pub fn seed_cdr(call_id: &str) -> Value {
    serde_json::json!({
        "callId": call_id, "serviceType": 100, "callerNumber": "1380000001",
        "calleeNumber": "02188888888", "startTime": 1701388800000_i64, "endTime": 1701389100000_i64,
        "duration": 300, "userData": "test-data"
    })
}

/// A SPEC §2.2 status event of `call_id`.
pub fn status_event(call_id: &str, status: &str, timestamp: i64) -> Value {
    serde_json::json!({"callId": call_id, "serviceType": 100, "status": status, "timestamp": timestamp})
}
