//! One process per database file (issue 12, point 5): a second program on a database that one
//! already has open is refused at build time, naming the file and the holder's pid; once the
//! first one stopped, the file is free again.

use std::sync::Arc;

use push_core::{
    clock::SystemClock,
    outbox::DatabaseInUse,
    testing::{test_settings, TestApp},
    Application, Service, Settings,
};

async fn build(settings: Settings) -> anyhow::Result<Application> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Application::build_with(settings, Service::Cdr, listener, Arc::new(SystemClock)).await
}

#[tokio::test]
async fn a_second_program_on_the_same_database_is_refused_naming_the_file_and_pid() {
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(dir.path(), "http://127.0.0.1:9");
    let first = TestApp::spawn(Service::Cdr, settings.clone()).await;

    let refused = build(settings.clone()).await.err().expect("the second build is refused");
    let in_use = refused.downcast_ref::<DatabaseInUse>().expect("a DatabaseInUse error");
    assert_eq!(in_use.path, dir.path().join("cdr.db"));
    assert_eq!(in_use.pid, Some(std::process::id()), "the holder wrote its pid");
    let message = format!("{refused:#}");
    let named =
        format!("{} is in use by another process (pid {})", dir.path().join("cdr.db").display(), std::process::id());
    assert!(message.contains(&named), "{message}");

    let (status, _) = first.get_json("/readyz").await;
    assert_eq!(status, 200, "the refused build left the running program alone");
    first.stop().await.unwrap();
    let again = build(settings).await.expect("free once the first program stopped");
    drop(again);
}

#[tokio::test]
async fn programs_on_different_databases_run_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(dir.path(), "http://127.0.0.1:9");
    let cdr = TestApp::spawn(Service::Cdr, settings.clone()).await;
    let status = TestApp::spawn(Service::Status, settings).await;
    cdr.stop().await.unwrap();
    status.stop().await.unwrap();
}
