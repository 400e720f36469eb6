//! The rules of a configuration that its types alone do not express, each failure naming
//! its key.

use std::{collections::HashSet, net::SocketAddr};

use super::{signing_key, ConfigError, ServiceSettings, Settings, Subscriber};

/// The statuses of SPEC §2.2, which a subscriber's `statuses` filter may name.
const STATUSES: [&str; 4] = ["DIALING", "RINGING", "ANSWERED", "HANGUP"];

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

impl Settings {
    /// Checks every rule the types alone do not express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.delivery.timeout.is_zero() {
            return Err(invalid("delivery.timeout", "must be greater than 0s"));
        }
        if self.delivery.lease <= self.delivery.timeout {
            return Err(invalid("delivery.lease", "must be greater than delivery.timeout"));
        }
        if self.delivery.max_in_flight == 0 {
            return Err(invalid("delivery.max_in_flight", "must be at least 1"));
        }
        if self.delivery.max_in_flight_per_subscriber == 0 {
            return Err(invalid("delivery.max_in_flight_per_subscriber", "must be at least 1"));
        }
        if self.ingest.max_body_bytes < 1024 {
            return Err(invalid("ingest.max_body_bytes", "must be at least 1024"));
        }
        let server = &self.server;
        if server.header_read_timeout.is_zero() || server.idle_timeout.is_zero() {
            let key = if server.idle_timeout.is_zero() { "server.idle_timeout" } else { "server.header_read_timeout" };
            return Err(invalid(key, "must be greater than 0s"));
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log.level.as_str()) {
            return Err(invalid("log.level", "must be one of error, warn, info, debug, trace"));
        }
        for (name, section) in [("cdr", &self.cdr), ("status", &self.status)] {
            validate_service(name, section)?;
        }
        if self.breaker.failures > 0 && (self.breaker.probe.is_zero() || self.breaker.probe_max < self.breaker.probe) {
            let key = if self.breaker.probe.is_zero() { "breaker.probe" } else { "breaker.probe_max" };
            return Err(invalid(
                key,
                "breaker.probe must be greater than 0s and breaker.probe_max at least breaker.probe",
            ));
        }
        validate_subscribers(&self.subscribers)
    }
}

fn validate_service(name: &str, section: &ServiceSettings) -> Result<(), ConfigError> {
    if section.listen.parse::<SocketAddr>().is_err() {
        return Err(invalid(format!("{name}.listen"), "must be an address such as 127.0.0.1:8081"));
    }
    if super::is_postgres(&section.database) {
        return Ok(());
    }
    match section.database.strip_prefix("sqlite://") {
        Some(path) if !path.is_empty() => Ok(()),
        _ => Err(invalid(format!("{name}.database"), "must be sqlite://<path> or postgres://user:pass@host:port/db")),
    }
}

fn validate_subscribers(subscribers: &[Subscriber]) -> Result<(), ConfigError> {
    let mut ids = HashSet::new();
    for (i, sub) in subscribers.iter().enumerate() {
        let key = |field: &str| format!("subscribers[{i}].{field}");
        if sub.id.is_empty() || sub.id.len() > 64 {
            return Err(invalid(key("id"), "must be 1 to 64 characters"));
        }
        if !ids.insert(sub.id.as_str()) {
            return Err(invalid(key("id"), format!("`{}` is used twice", sub.id)));
        }
        for (field, url) in [("cdr_url", &sub.cdr_url), ("status_url", &sub.status_url)] {
            if let Some(url) = url {
                match url::Url::parse(url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                    _ => return Err(invalid(key(field), "must be an http:// or https:// URL")),
                }
            }
        }
        if sub.service_types.is_empty() || sub.service_types.iter().any(|t| ![100, 200].contains(t)) {
            return Err(invalid(key("service_types"), "must list 100 and/or 200"));
        }
        for (k, status) in sub.statuses.iter().enumerate() {
            if !STATUSES.contains(&status.as_str()) {
                return Err(invalid(key("statuses"), format!("`{status}` is not one of {}", STATUSES.join(", "))));
            }
            if sub.statuses[..k].contains(status) {
                return Err(invalid(key("statuses"), format!("`{status}` is listed twice")));
            }
        }
        if sub.max_in_flight == Some(0) {
            return Err(invalid(key("max_in_flight"), "must be at least 1 (leave it out for the default)"));
        }
        if let Some(secret) = &sub.secret {
            if signing_key(secret).is_none() {
                return Err(invalid(key("secret"), "must be whsec_ followed by a base64 key"));
            }
        }
    }
    Ok(())
}
