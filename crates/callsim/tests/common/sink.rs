//! A tiny stand-in for the pushers' ingest API, bound to 127.0.0.1:0: records every post
//! (path, headers of interest, body, arrival time) and answers as told.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Json;
use serde_json::{json, Value};

/// How the sink answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 202 with duplicate:false.
    Accept,
    /// 202 with duplicate:true.
    Duplicate,
    /// 422 validation error.
    Reject,
    /// 503.
    Fail,
}

/// One received post.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
    pub at: Instant,
}

#[derive(Clone)]
struct SinkState {
    received: Arc<Mutex<Vec<Received>>>,
    status_answer: Answer,
    cdr_answer: Answer,
}

/// A running sink.
pub struct Sink {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Sink {
    /// Starts a sink answering status posts and CDR posts as given.
    pub async fn start(status_answer: Answer, cdr_answer: Answer) -> Sink {
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = SinkState { received: Arc::clone(&received), status_answer, cdr_answer };
        let app = axum::Router::new().fallback(record).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Sink { addr, received }
    }

    /// Base URL (`http://127.0.0.1:port`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn record(
    State(state): State<SinkState>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let path = uri.path().to_string();
    let answer = if path == "/v1/cdrs" { state.cdr_answer } else { state.status_answer };
    let call_id = body.get("callId").cloned().unwrap_or(Value::Null);
    state.received.lock().unwrap().push(Received {
        path,
        authorization: headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string),
        body,
        at: Instant::now(),
    });
    let accepted = |duplicate: bool| json!({"accepted": [{"callId": call_id, "eventId": "00000000-0000-7000-8000-000000000000", "duplicate": duplicate}]});
    match answer {
        Answer::Accept => (StatusCode::ACCEPTED, Json(accepted(false))),
        Answer::Duplicate => (StatusCode::ACCEPTED, Json(accepted(true))),
        Answer::Reject => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": "validation", "message": "rejected by the test sink", "details": []})),
        ),
        Answer::Fail => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "unavailable", "message": "test sink", "details": []})),
        ),
    }
}
