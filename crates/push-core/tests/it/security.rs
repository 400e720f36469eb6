//! Ingest and operations API security (SPEC §3, §5, §7; issue 3 point 4): Bearer tokens,
//! the client allowlist, the per-client rate limit, the admin token, and the HTTPS listener.
//! Clients bind to other loopback addresses (127.0.0.2) to act as a second client.

use std::{net::IpAddr, time::Duration};

use push_core::{
    config::{Secret, TlsSettings},
    testing::{test_settings, TestApp, TestReceiver},
    Service, Settings,
};
use serde_json::{json, Value};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(10);

/// The SPEC §2.1 seed CDR with its own callId.
fn cdr(call_id: &str) -> Value {
    json!({"callId": call_id, "serviceType": 100, "callerNumber": "1380000001", "calleeNumber": "02188888888",
        "startTime": 1701388800000u64, "endTime": 1701389100000u64, "duration": 300, "userData": "test-data"})
}

/// A cdr-pusher with test settings changed by `configure`; keep the dir and receiver alive.
async fn spawn(configure: impl FnOnce(&mut Settings)) -> (TempDir, TestReceiver, TestApp) {
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = TestReceiver::start().await;
    let mut settings = test_settings(dir.path(), &receiver.url());
    configure(&mut settings);
    let app = TestApp::spawn(Service::Cdr, settings).await;
    (dir, receiver, app)
}

/// A client whose connections come from `ip` (a loopback address).
fn client_from(ip: &str) -> reqwest::Client {
    let ip: IpAddr = ip.parse().expect("an address");
    reqwest::Client::builder().local_address(ip).build().expect("client")
}

/// POSTs a CDR to `app` from `client`, with `Authorization: Bearer <token>` if given.
async fn post(app: &TestApp, client: &reqwest::Client, token: Option<&str>, call_id: &str) -> reqwest::Response {
    let mut request = client.post(format!("{}/v1/cdrs", app.url)).json(&cdr(call_id));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("ingest request")
}

/// Asserts a SPEC §3 error response of `status` and `kind`; returns its headers.
async fn assert_error(response: reqwest::Response, status: u16, kind: &str) -> reqwest::header::HeaderMap {
    assert_eq!(response.status().as_u16(), status, "status of {}", response.url());
    let headers = response.headers().clone();
    let body: Value = response.json().await.expect("error body is JSON");
    assert_eq!(body["error"], kind, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(body["details"].is_array(), "{body}");
    headers
}

/// Deliveries stored for subscriber `demo`, in any state, from `GET /v1/stats`.
async fn stored(app: &TestApp, admin_token: Option<&str>) -> u64 {
    let mut request = app.client.get(format!("{}/v1/stats", app.url));
    if let Some(token) = admin_token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("stats");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("stats JSON");
    let demo = body["subscribers"]["demo"].as_object().cloned().unwrap_or_default();
    ["pending", "delivered", "dead"].iter().filter_map(|state| demo.get(*state)?.as_u64()).sum()
}

#[tokio::test]
async fn ingest_needs_one_of_the_configured_tokens() {
    let (_dir, receiver, app) =
        spawn(|s| s.ingest.auth_tokens = vec![Secret::new("pbx-token-one"), Secret::new("pbx-token-two")]).await;
    let client = &app.client;

    let headers = assert_error(post(&app, client, None, "no-token").await, 401, "unauthorized").await;
    assert_eq!(headers.get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
    assert_error(post(&app, client, Some("pbx-token-three"), "wrong").await, 401, "unauthorized").await;
    assert_error(post(&app, client, Some("pbx-token-on"), "prefix").await, 401, "unauthorized").await;
    let basic = client.post(format!("{}/v1/cdrs", app.url)).basic_auth("pbx-token-one", None::<&str>);
    assert_error(basic.json(&cdr("basic")).send().await.unwrap(), 401, "unauthorized").await;
    assert_eq!(stored(&app, None).await, 0, "refused requests store nothing");

    assert_eq!(post(&app, client, Some("pbx-token-one"), "first").await.status(), 202);
    let lower = client.post(format!("{}/v1/cdrs", app.url)).header("authorization", "bearer pbx-token-two");
    assert_eq!(lower.json(&cdr("second")).send().await.unwrap().status(), 202);
    assert_eq!(stored(&app, None).await, 2);
    let pushed = receiver.wait_for_successes(2, WAIT).await;
    let mut ids: Vec<Value> = pushed.iter().map(|r| r.json()["callId"].clone()).collect();
    ids.sort_by_key(|v| v.to_string());
    assert_eq!(ids, [json!("first"), json!("second")]);
}

#[tokio::test]
async fn clients_outside_allowed_ips_get_403_whatever_x_forwarded_for_says() {
    let (_dir, receiver, app) =
        spawn(|s| s.ingest.allowed_ips = vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.2/32".parse().unwrap()]).await;

    assert_error(post(&app, &app.client, None, "from-127.0.0.1").await, 403, "forbidden").await;
    for forwarded in ["10.1.2.3", "127.0.0.2"] {
        let spoofed = app.client.post(format!("{}/v1/cdrs", app.url)).header("x-forwarded-for", forwarded);
        assert_error(spoofed.json(&cdr("spoofed")).send().await.unwrap(), 403, "forbidden").await;
    }
    assert_eq!(stored(&app, None).await, 0, "refused requests store nothing");

    assert_eq!(post(&app, &client_from("127.0.0.2"), None, "from-127.0.0.2").await.status(), 202);
    assert_eq!(stored(&app, None).await, 1);
    assert_eq!(receiver.wait_for_successes(1, WAIT).await[0].json()["callId"], "from-127.0.0.2");
}

#[tokio::test]
async fn an_allowed_network_lets_the_client_in() {
    let (_dir, _receiver, app) = spawn(|s| s.ingest.allowed_ips = vec!["127.0.0.0/8".parse().unwrap()]).await;
    assert_eq!(post(&app, &app.client, None, "loopback").await.status(), 202);
}

#[tokio::test]
async fn the_allowlist_is_checked_before_the_token() {
    let (_dir, _receiver, app) = spawn(|s| {
        s.ingest.allowed_ips = vec!["10.0.0.0/8".parse().unwrap()];
        s.ingest.auth_tokens = vec![Secret::new("pbx-token")];
    })
    .await;
    assert_error(post(&app, &app.client, Some("pbx-token"), "right-token").await, 403, "forbidden").await;
    assert_error(post(&app, &app.client, None, "no-token").await, 403, "forbidden").await;
}

#[tokio::test]
async fn over_the_rate_limit_a_client_gets_429_with_retry_after_and_nothing_is_stored() {
    let (_dir, _receiver, app) = spawn(|s| s.ingest.rate_limit_per_second = 2).await;
    let mut statuses = Vec::new();
    for i in 0..10 {
        let response = post(&app, &app.client, None, &format!("burst-{i}")).await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            let headers = assert_error(response, 429, "rate_limited").await;
            let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().expect("whole seconds");
            assert!(retry_after >= 1, "Retry-After {retry_after}");
        }
    }
    assert_eq!(statuses[..2], [202, 202], "the burst is the rate: {statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.iter().all(|s| [202, 429].contains(s)), "{statuses:?}");
    let accepted = statuses.iter().filter(|s| **s == 202).count() as u64;
    assert_eq!(stored(&app, None).await, accepted, "only accepted requests are stored: {statuses:?}");

    // The limit is per client address: another client is not affected.
    assert_eq!(post(&app, &client_from("127.0.0.2"), None, "other-client").await.status(), 202);
    // And the limited client gets in again once its quota refills.
    let mut n = 0;
    push_core::testing::eventually(WAIT, "the limited client to be let in again", || {
        n += 1;
        let call_id = format!("later-{n}");
        let app = &app;
        async move { (post(app, &app.client, None, &call_id).await.status() == 202).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn the_rate_limit_is_off_by_default() {
    assert_eq!(Settings::defaults().ingest.rate_limit_per_second, 0);
    let (_dir, _receiver, app) = spawn(|_| {}).await;
    for i in 0..20 {
        assert_eq!(post(&app, &app.client, None, &format!("unlimited-{i}")).await.status(), 202);
    }
}

/// Status of a request to `path` on `app`, with `token` as Bearer if given.
async fn status_of(app: &TestApp, method: reqwest::Method, path: &str, token: Option<&str>) -> u16 {
    let mut request = app.client.request(method, format!("{}{path}", app.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if path.ends_with("/redeliver") {
        request = request.json(&json!({"state": "dead", "subscriber": "demo"}));
    }
    request.send().await.expect("request").status().as_u16()
}

#[tokio::test]
async fn the_admin_token_guards_deliveries_and_stats_but_not_health_or_metrics() {
    let (_dir, _receiver, app) = spawn(|s| {
        s.admin.token = Secret::new("admin-token");
        s.ingest.auth_tokens = vec![Secret::new("pbx-token")];
    })
    .await;
    let (get, post_) = (reqwest::Method::GET, reqwest::Method::POST);
    let guarded = [
        (get.clone(), "/v1/stats"),
        (get.clone(), "/v1/deliveries"),
        (get.clone(), "/v1/deliveries/00000000-0000-0000-0000-000000000000"),
        (post_.clone(), "/v1/deliveries/00000000-0000-0000-0000-000000000000/redeliver"),
        (post_.clone(), "/v1/deliveries/redeliver"),
    ];
    for (method, path) in &guarded {
        for token in [None, Some("wrong"), Some("pbx-token")] {
            let response = app.client.request(method.clone(), format!("{}{path}", app.url));
            let response = match token {
                Some(t) => response.bearer_auth(t),
                None => response,
            };
            assert_error(response.send().await.unwrap(), 401, "unauthorized").await;
        }
        let status = status_of(&app, method.clone(), path, Some("admin-token")).await;
        assert_ne!(status, 401, "{method} {path} with the admin token");
    }
    assert_eq!(status_of(&app, get.clone(), "/v1/stats", Some("admin-token")).await, 200);
    assert_eq!(status_of(&app, get.clone(), "/v1/deliveries", Some("admin-token")).await, 200);
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(status_of(&app, get.clone(), path, None).await, 200, "{path} stays open");
    }
    assert_eq!(status_of(&app, get.clone(), "/no-such-route", None).await, 404);

    // The two sides have separate tokens.
    assert_error(post(&app, &app.client, Some("admin-token"), "admin-on-ingest").await, 401, "unauthorized").await;
    assert_eq!(post(&app, &app.client, Some("pbx-token"), "pbx").await.status(), 202);
    assert_eq!(stored(&app, Some("admin-token")).await, 1);
}

#[tokio::test]
async fn without_an_admin_token_the_operations_api_is_open() {
    let (_dir, _receiver, app) = spawn(|_| {}).await;
    assert_eq!(status_of(&app, reqwest::Method::GET, "/v1/stats", None).await, 200);
    assert_eq!(status_of(&app, reqwest::Method::GET, "/v1/deliveries", None).await, 200);
}

/// A self-signed certificate for 127.0.0.1 written as PEM files in `dir`; returns the
/// settings naming them and the certificate PEM.
fn self_signed(dir: &std::path::Path) -> (TlsSettings, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).expect("cert");
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write key");
    (TlsSettings { cert, key }, certified.cert.pem())
}

#[tokio::test]
async fn the_listener_serves_https_with_the_configured_certificate() {
    let certs = tempfile::tempdir().expect("temp dir");
    let (tls, cert_pem) = self_signed(certs.path());
    let (_dir, receiver, app) = spawn(|s| {
        s.cdr.tls = Some(tls);
        // The guards see the peer address and headers over TLS as well.
        s.ingest.allowed_ips = vec!["127.0.0.0/8".parse().unwrap()];
        s.ingest.auth_tokens = vec![Secret::new("pbx-token")];
    })
    .await;
    let https = app.url.replacen("http://", "https://", 1);
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("PEM"))
        .tls_built_in_root_certs(false)
        .build()
        .expect("client");

    let response =
        trusting.post(format!("{https}/v1/cdrs")).bearer_auth("pbx-token").json(&cdr("202312010001")).send().await;
    let response = response.expect("HTTPS request");
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["accepted"][0]["callId"], "202312010001");
    let pushed = receiver.wait_for_successes(1, WAIT).await;
    assert_eq!(pushed[0].json()["callId"], "202312010001");
    let unauthorized = trusting.post(format!("{https}/v1/cdrs")).json(&cdr("x")).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);

    // Only TLS is served, and only with that certificate.
    assert!(app.client.get(format!("{}/healthz", app.url)).send().await.is_err(), "plain HTTP must fail");
    let untrusting = reqwest::Client::builder().tls_built_in_root_certs(false).build().unwrap();
    assert!(untrusting.get(format!("{https}/healthz")).send().await.is_err(), "an unknown CA must fail");
    assert_eq!(trusting.get(format!("{https}/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn an_https_subscriber_is_verified_against_the_webpki_roots() {
    // The "subscriber" is a second pusher serving HTTPS with a self-signed certificate: the
    // webhook client must make a TLS handshake and refuse the unknown issuer.
    let certs = tempfile::tempdir().expect("temp dir");
    let (tls, _) = self_signed(certs.path());
    let (_dir_b, _receiver_b, tls_server) = spawn(|s| s.cdr.tls = Some(tls)).await;
    let https = tls_server.url.replacen("http://", "https://", 1);
    let (_dir, _receiver, app) = spawn(|s| s.subscribers[0].cdr_url = Some(format!("{https}/hook"))).await;

    assert_eq!(app.ingest(&cdr("202312010009")).await.status(), 202);
    let failed = push_core::testing::eventually(WAIT, "a failed attempt", || async {
        let (_, page) = app.get_json("/v1/deliveries?limit=10").await;
        page["items"][0]["lastError"].as_str().map(str::to_string)
    })
    .await;
    assert!(failed.starts_with("connect error:") && failed.contains("certificate"), "{failed}");
}
