//! Configuration layering and validation (SPEC §7): environment overrides and key-naming
//! errors, with an injected environment (the process environment is not touched).

use std::{collections::HashMap, time::Duration};

use push_core::config::{load_from, ConfigError, Sources};

fn with_env(vars: &[(&str, &str)]) -> Result<push_core::Settings, ConfigError> {
    let env: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    load_from(Sources { file: None, env: Some(env) })
}

#[test]
fn defaults_are_the_documented_file() {
    let s = with_env(&[]).unwrap();
    assert_eq!(s.cdr.listen, "127.0.0.1:8081");
    assert_eq!(s.status.database, "sqlite://data/status.db");
    let secs: Vec<u64> = s.retry.schedule.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, [0, 5, 30, 300, 1800]);
    assert_eq!(s.delivery.timeout, Duration::from_secs(3));
    assert_eq!(s.subscribers[0].id, "demo");
    let server = (s.server.header_read_timeout, s.server.idle_timeout, s.server.max_connections);
    assert_eq!(server, (Duration::from_secs(10), Duration::from_secs(60), 0), "0: a cap from the open-files limit");
}

#[test]
fn environment_overrides_any_key() {
    let s = with_env(&[
        ("VOICE_PUSH__CDR__LISTEN", "0.0.0.0:9081"),
        ("VOICE_PUSH__RETRY__SCHEDULE", "0s,250ms,1m"),
        ("VOICE_PUSH__DELIVERY__MAX_IN_FLIGHT", "7"),
        ("VOICE_PUSH__INGEST__AUTH_TOKENS", "a,b"),
        ("VOICE_PUSH__INGEST__ALLOWED_IPS", "10.0.0.0/8,127.0.0.1"),
        ("VOICE_PUSH__ADMIN__TOKEN", "s3cret"),
    ])
    .unwrap();
    assert_eq!(s.cdr.listen, "0.0.0.0:9081");
    assert_eq!(s.retry.schedule, [Duration::ZERO, Duration::from_millis(250), Duration::from_secs(60)]);
    assert_eq!(s.delivery.max_in_flight, 7);
    assert_eq!(s.ingest.auth_tokens.len(), 2);
    assert_eq!(s.ingest.allowed_ips.len(), 2);
    assert_eq!(s.admin.token.expose(), "s3cret");
}

#[test]
fn invalid_values_name_their_key() {
    for (key, value, named) in [
        ("VOICE_PUSH__DELIVERY__TIMEOUT", "0s", "delivery.timeout"),
        ("VOICE_PUSH__DELIVERY__TIMEOUT", "soon", "delivery.timeout"),
        ("VOICE_PUSH__DELIVERY__MAX_IN_FLIGHT_PER_SUBSCRIBER", "0", "delivery.max_in_flight_per_subscriber"),
        ("VOICE_PUSH__RETRY__SCHEDULE", "5s,later", "retry.schedule"),
        ("VOICE_PUSH__STATUS__LISTEN", "localhost", "status.listen"),
        ("VOICE_PUSH__CDR__DATABASE", "mysql://x", "cdr.database"),
        ("VOICE_PUSH__INGEST__ALLOWED_IPS", "10.0.0.0/99", "ingest.allowed_ips"),
        ("VOICE_PUSH__LOG__LEVEL", "loud", "log.level"),
        ("VOICE_PUSH__SERVER__HEADER_READ_TIMEOUT", "0s", "server.header_read_timeout"),
        ("VOICE_PUSH__SERVER__IDLE_TIMEOUT", "0s", "server.idle_timeout"),
        ("VOICE_PUSH__SERVER__IDLE_TIMEOUT", "later", "server.idle_timeout"),
        ("VOICE_PUSH__SERVER__MAX_CONNECTIONS", "lots", "server.max_connections"),
    ] {
        let err = with_env(&[(key, value)]).expect_err(&format!("{key}={value} is invalid"));
        assert!(err.to_string().contains(named), "{key}={value}: `{err}` names {named}");
    }
}

#[test]
fn subscriber_rules_name_the_subscriber_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("cdr_url: ftp://x", "subscribers[0].cdr_url"),
        ("secret: nope", "subscribers[0].secret"),
        ("service_types: [300]", "subscribers[0].service_types"),
    ];
    for (line, named) in cases {
        let yaml = format!("subscribers:\n  - id: a\n    service_types: [100]\n    {line}\n");
        let yaml = yaml.replace("    service_types: [100]\n    service_types: [300]", "    service_types: [300]");
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml).unwrap();
        let err = load_from(Sources { file: Some(path), env: Some(HashMap::new()) }).unwrap_err();
        assert!(err.to_string().contains(named), "`{err}` names {named}");
    }
    let settings = with_env(&[]).unwrap();
    let debug = format!("{settings:?}");
    assert!(!debug.contains("whsec_"), "secrets are redacted in Debug");
}
