//! callsim against the real pushers: every generated record passes push-core's own
//! validation, and a simulation through both pushers reaches a callsim receiver complete,
//! in order, signed, with nothing rejected.

use std::time::Duration;

use callsim::{
    calls::{run_calls, CallsOptions, RunLimit},
    generator::{CallGenerator, GenConfig},
    model::Payload,
    receive::{Receiver, ReceiverConfig},
};
use push_core::{
    schema::validate_event,
    testing::{eventually, subscriber, test_settings, TestApp},
    Service,
};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[test]
fn every_generated_record_passes_the_pushers_validation() {
    let config =
        GenConfig { callback_share: 0.3, accounts: vec!["acc-1".into(), "acc-2".into()], ..GenConfig::default() };
    let mut generator = CallGenerator::new(config, 7);
    let mut checked = 0;
    for i in 0..3000 {
        let call = generator.next_call(1_764_000_000_000 + i * 1000);
        for post in &call.posts {
            let (service, json) = match &post.payload {
                p @ Payload::Status(_) => (Service::Status, p.to_json()),
                p @ Payload::Cdr(_) => (Service::Cdr, p.to_json()),
            };
            if let Err(errors) = validate_event(service, 0, &json) {
                panic!("{json} was refused: {errors:?}");
            }
            checked += 1;
        }
    }
    assert!(checked > 3000 * 3, "checked {checked} records");
}

#[tokio::test]
async fn a_simulation_through_both_pushers_arrives_complete_in_order_and_signed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_config = ReceiverConfig { secret: Some(SECRET.into()), seed: Some(1), ..ReceiverConfig::default() };
    let receiver = Receiver::start(receiver_config, listener).await.unwrap();
    let url = format!("http://{}", receiver.local_addr());
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path(), &url);
    let mut demo = subscriber("demo", &url);
    demo.secret = Some(push_core::config::Secret::new(SECRET));
    settings.subscribers = vec![demo];
    let cdr = TestApp::spawn(Service::Cdr, settings.clone()).await;
    let status = TestApp::spawn(Service::Status, settings).await;

    let mut options = CallsOptions::new(Some(cdr.url.clone()), Some(status.url.clone()));
    options.limit = RunLimit::Count(60);
    options.rate = 500.0;
    options.speed = 2000.0;
    options.generator.callback_share = 0.3;
    let summary = run_calls(options).await.unwrap();
    let total = summary.total();
    assert_eq!((total.rejected, total.errors, total.duplicates), (0, 0, 0), "{summary:?}");
    assert!(total.accepted >= 60 * 3, "{summary:?}");

    let stats = eventually(Duration::from_secs(20), "every accepted event pushed", || async {
        let stats = receiver.stats();
        (stats.answered_2xx >= total.accepted).then_some(stats)
    })
    .await;
    assert_eq!(stats.answered_2xx, total.accepted);
    assert_eq!(stats.cdr, summary.cdr.accepted);
    assert_eq!(stats.status, summary.status.accepted);
    assert_eq!(stats.order_violations(), 0, "{stats:?}");
    assert_eq!((stats.duplicates, stats.bad_signatures, stats.unsigned), (0, 0, 0), "{stats:?}");
    cdr.stop().await.unwrap();
    status.stop().await.unwrap();
}
