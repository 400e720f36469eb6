//! Who may call the API (SPEC §3, §5, §7): the ingest guard for the PBX-facing side and the
//! admin guard for the operations API. Both are axum middleware whose state is built once per
//! app from the validated settings.
//!
//! Ingest, in this order (each step only when configured):
//! 1. `ingest.allowed_ips`: the TCP peer address (never `X-Forwarded-For`) must be in one of
//!    the networks, else 403. IPv4-mapped IPv6 peers (`::ffff:a.b.c.d`, seen on a `[::]`
//!    listener) are matched as their IPv4 address.
//! 2. `ingest.rate_limit_per_second` (> 0): a GCRA limit per client IP address with a burst of
//!    the same size, else 429 with `Retry-After` in whole seconds (at least 1). It runs before
//!    the token check so that token guessing is rate limited too.
//! 3. `ingest.auth_tokens` (non-empty): `Authorization: Bearer <token>` must carry one of them,
//!    else 401 with `WWW-Authenticate: Bearer`. An empty string in the list never matches, so
//!    `auth_tokens: [""]` locks ingest rather than opening it. Switches that can only send
//!    HTTP Basic credentials (FreeSWITCH mod_json_cdr's `cred`, sent preemptively with
//!    `auth-scheme` basic) may present a token as the Basic password instead (any user name).
//!
//! Admin: a non-empty `admin.token` must be presented the same way on `/v1/deliveries*` and
//! `/v1/stats`; `/healthz`, `/readyz` and `/metrics` stay open.
//!
//! A refused request never reaches the handler, so nothing is stored. Tokens are kept only as
//! SHA-256 digests and compared in constant time against every configured token; presented
//! and configured tokens are never logged nor echoed.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{header, HeaderMap, HeaderValue},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{clock::Clock as _, DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use sha2::{Digest as _, Sha256};
use subtle::{Choice, ConstantTimeEq as _};

use super::error::ApiError;
use crate::config::{Secret, Settings};

/// Every this many rate-limit checks, clients whose state is back to fresh are forgotten, so
/// the limiter's memory is bounded by the clients seen recently.
const FORGET_EVERY: u64 = 1024;

/// The Bearer tokens one guard accepts, kept as SHA-256 digests so that comparing is constant
/// time regardless of length and the guard holds no plaintext secret.
#[derive(Clone, Default)]
pub struct BearerTokens {
    digests: Vec<[u8; 32]>,
    required: bool,
}

impl fmt::Debug for BearerTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerTokens").field("required", &self.required).field("count", &self.digests.len()).finish()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl BearerTokens {
    /// Tokens to accept; a token is required as soon as one is given. Empty tokens count as
    /// given but never match, so a misconfigured empty token fails closed.
    pub fn new<'a>(tokens: impl IntoIterator<Item = &'a Secret>) -> Self {
        let mut required = false;
        let mut digests = Vec::new();
        for token in tokens {
            required = true;
            if !token.expose().is_empty() {
                digests.push(digest(token.expose().as_bytes()));
            }
        }
        BearerTokens { digests, required }
    }

    /// Whether `presented` equals one of the tokens. Every configured token is compared, with
    /// no early exit, in constant time over fixed-size digests.
    pub fn matches(&self, presented: &str) -> bool {
        if presented.is_empty() {
            return false;
        }
        let presented = digest(presented.as_bytes());
        let mut found = Choice::from(0);
        for expected in &self.digests {
            found |= expected.ct_eq(&presented);
        }
        found.into()
    }

    /// Checks the `Authorization` header of a request: `Ok` if no token is required or a
    /// configured one is presented, else [`ApiError::Unauthorized`].
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if !self.required {
            return Ok(());
        }
        match bearer(headers) {
            Some(token) if self.matches(token) => Ok(()),
            _ => Err(ApiError::Unauthorized),
        }
    }

    /// [`check`](Self::check), also taking a token as the password of `Authorization: Basic`
    /// (for switches that send only Basic credentials).
    pub fn check_bearer_or_basic(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match basic_password(headers) {
            Some(password) if self.required && self.matches(&password) => Ok(()),
            _ => self.check(headers),
        }
    }
}

/// The password of an `Authorization: Basic base64(user:password)` header.
fn basic_password(headers: &HeaderMap) -> Option<String> {
    use base64::Engine as _;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let (_user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some(password.to_string())
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A 401 with the SPEC error body and the `WWW-Authenticate` challenge of RFC 6750.
fn unauthorized() -> Response {
    let mut response = ApiError::Unauthorized.into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The TCP peer address, as the server recorded it; IPv4-mapped IPv6 becomes IPv4.
fn peer_ip(request: &Request) -> Option<IpAddr> {
    let ConnectInfo(addr) = request.extensions().get::<ConnectInfo<SocketAddr>>()?;
    Some(addr.ip().to_canonical())
}

/// State of the ingest middleware: allowlist, per-client limiter and tokens, built once per
/// app so the limiter's counts persist across requests.
pub struct IngestGuard {
    allowed: Vec<IpNet>,
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    checks: AtomicU64,
    tokens: BearerTokens,
}

impl fmt::Debug for IngestGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestGuard")
            .field("allowed", &self.allowed)
            .field("rate_limited", &self.limiter.is_some())
            .field("tokens", &self.tokens)
            .finish()
    }
}

impl IngestGuard {
    /// Builds the guard from the `ingest:` section.
    pub fn from_settings(settings: &Settings) -> Arc<Self> {
        let ingest = &settings.ingest;
        let limiter =
            NonZeroU32::new(ingest.rate_limit_per_second).map(|rate| RateLimiter::keyed(Quota::per_second(rate)));
        Arc::new(IngestGuard {
            allowed: ingest.allowed_ips.clone(),
            limiter,
            checks: AtomicU64::new(0),
            tokens: BearerTokens::new(&ingest.auth_tokens),
        })
    }

    /// Allowlist, then rate limit, then token (see the module docs).
    fn check(&self, ip: Option<IpAddr>, headers: &HeaderMap) -> Result<(), ApiError> {
        if !self.allowed.is_empty() {
            match ip {
                Some(ip) if self.allowed.iter().any(|net| net.contains(&ip)) => {}
                Some(ip) => return Err(ApiError::Forbidden(ip.to_string())),
                None => return Err(ApiError::Forbidden("(unknown)".into())),
            }
        }
        if let Some(limiter) = &self.limiter {
            let ip = ip.ok_or_else(|| ApiError::Forbidden("(unknown)".into()))?;
            let verdict = limiter.check_key(&ip);
            if self.checks.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
            if let Err(not_until) = verdict {
                return Err(ApiError::RateLimited(not_until.wait_time_from(limiter.clock().now())));
            }
        }
        self.tokens.check_bearer_or_basic(headers)
    }
}

/// Ingest middleware: refuses with 403, 429 or 401 (SPEC §3 error JSON) before the handler
/// runs, so a refused request stores nothing.
pub async fn ingest_guard(State(guard): State<Arc<IngestGuard>>, request: Request, next: Next) -> Response {
    let ip = peer_ip(&request);
    let client = ip.map(|ip| ip.to_string()).unwrap_or_else(|| "(unknown)".into());
    match guard.check(ip, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(ApiError::Unauthorized) => {
            tracing::warn!(%client, "ingest refused: missing or wrong token, as Bearer or Basic password (ingest.auth_tokens)");
            unauthorized()
        }
        Err(e @ ApiError::RateLimited(_)) => {
            tracing::debug!(%client, "ingest refused: over ingest.rate_limit_per_second");
            e.into_response()
        }
        Err(e) => {
            tracing::warn!(%client, "ingest refused: client address not in ingest.allowed_ips");
            e.into_response()
        }
    }
}

/// State of the admin middleware: the `admin.token`, if set.
#[derive(Debug)]
pub struct AdminGuard {
    tokens: BearerTokens,
}

impl AdminGuard {
    /// Builds the guard from the `admin:` section; an empty token leaves the API open.
    pub fn from_settings(settings: &Settings) -> Arc<Self> {
        let token = Some(&settings.admin.token).filter(|t| !t.expose().is_empty());
        Arc::new(AdminGuard { tokens: BearerTokens::new(token) })
    }
}

/// Admin middleware: 401 (SPEC §3 error JSON) unless the admin token is presented.
pub async fn admin_guard(State(guard): State<Arc<AdminGuard>>, request: Request, next: Next) -> Response {
    match guard.tokens.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(_) => {
            let client = peer_ip(&request).map(|ip| ip.to_string()).unwrap_or_else(|| "(unknown)".into());
            tracing::warn!(%client, path = request.uri().path(), "operations API refused: missing or wrong admin token");
            unauthorized()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(authorization).unwrap());
        h
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_other_schemes_are_ignored() {
        assert_eq!(bearer(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&headers("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&headers("Basic abc")), None);
        assert_eq!(bearer(&headers("Bearer")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn every_configured_token_matches_and_nothing_else_does() {
        let secrets = [Secret::new("one"), Secret::new("two")];
        let tokens = BearerTokens::new(&secrets);
        assert!(tokens.matches("one") && tokens.matches("two"));
        assert!(!tokens.matches("three") && !tokens.matches("on") && !tokens.matches(""));
        assert!(tokens.check(&headers("Bearer two")).is_ok());
        assert!(tokens.check(&headers("Bearer one1")).is_err());
        assert!(tokens.check(&HeaderMap::new()).is_err());
    }

    #[test]
    fn a_token_is_also_taken_as_the_basic_password() {
        let secrets = [Secret::new("s3cret")];
        let tokens = BearerTokens::new(&secrets);
        // base64("freeswitch:s3cret"), base64("freeswitch:wrong"), base64("s3cret")
        assert!(tokens.check_bearer_or_basic(&headers("Basic ZnJlZXN3aXRjaDpzM2NyZXQ=")).is_ok());
        assert!(tokens.check_bearer_or_basic(&headers("Basic ZnJlZXN3aXRjaDp3cm9uZw==")).is_err());
        assert!(tokens.check_bearer_or_basic(&headers("Basic czNjcmV0")).is_err());
        assert!(tokens.check_bearer_or_basic(&headers("Bearer s3cret")).is_ok());
        assert!(tokens.check(&headers("Basic ZnJlZXN3aXRjaDpzM2NyZXQ=")).is_err(), "admin: Bearer only");
    }

    #[test]
    fn no_tokens_means_open_and_an_empty_token_fails_closed() {
        assert!(BearerTokens::new(&[]).check(&HeaderMap::new()).is_ok());
        let empty = [Secret::new("")];
        let tokens = BearerTokens::new(&empty);
        assert!(tokens.check(&HeaderMap::new()).is_err());
        assert!(tokens.check(&headers("Bearer ")).is_err());
    }

    #[test]
    fn debug_output_shows_no_digest() {
        let secrets = [Secret::new("s3cret")];
        let shown = format!("{:?}", BearerTokens::new(&secrets));
        assert_eq!(shown, "BearerTokens { required: true, count: 1 }");
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks() {
        let guard = IngestGuard {
            allowed: vec!["127.0.0.0/8".parse().unwrap()],
            limiter: None,
            checks: AtomicU64::new(0),
            tokens: BearerTokens::default(),
        };
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5060".parse().unwrap();
        assert!(guard.check(Some(mapped.ip().to_canonical()), &HeaderMap::new()).is_ok());
        assert!(guard.check(Some("10.0.0.1".parse().unwrap()), &HeaderMap::new()).is_err());
        assert!(guard.check(None, &HeaderMap::new()).is_err());
    }
}
