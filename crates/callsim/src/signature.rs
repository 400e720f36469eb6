//! Standard Webhooks signatures, implemented independently of the pushers so that the
//! receiver is a real check of what they send.
//!
//! The secret is `whsec_` followed by the base64 key. The signed content is
//! `{webhook-id}.{webhook-timestamp}.{body}`; the signature is HMAC-SHA256 of it, and the
//! `webhook-signature` header is a space-separated list of `v1,<base64>` entries, any one
//! of which may match.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Default tolerance between `webhook-timestamp` and the receiver's clock (Standard
/// Webhooks recommends five minutes, against replays).
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Why a push's signature was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// No `webhook-signature` header (or id/timestamp missing) although a secret is set.
    Missing(&'static str),
    /// `webhook-timestamp` is not an integer.
    BadTimestamp,
    /// `webhook-timestamp` is too far from now.
    Stale {
        /// Seconds between the header and the receiver's clock.
        skew_secs: i64,
    },
    /// No `v1,` entry matched the expected HMAC.
    Mismatch,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignatureError::Missing(what) => write!(f, "missing {what}"),
            SignatureError::BadTimestamp => write!(f, "webhook-timestamp is not unix seconds"),
            SignatureError::Stale { skew_secs } => {
                write!(f, "webhook-timestamp is {skew_secs} s away from now")
            }
            SignatureError::Mismatch => write!(f, "no v1 signature matches"),
        }
    }
}

impl std::error::Error for SignatureError {}

/// A subscriber's signing key, parsed from `whsec_<base64>`.
#[derive(Clone)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64 key>` (the prefix is optional, as in the reference libraries).
    pub fn parse(secret: &str) -> Result<Self, String> {
        let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
        let key = STANDARD.decode(encoded.trim()).map_err(|e| format!("secret is not whsec_<base64>: {e}"))?;
        if key.is_empty() {
            return Err("secret key is empty".to_string());
        }
        Ok(Self { key })
    }

    /// The raw HMAC of `{id}.{timestamp}.{body}`, base64-encoded.
    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` header value (`v1,<base64>`) a sender would attach.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(id, &timestamp.to_string(), body).finalize();
        format!("v1,{}", STANDARD.encode(tag.into_bytes()))
    }

    /// Checks only the HMAC: does any `v1,` entry of `header` match? Comparison is
    /// constant-time.
    pub fn verify_signature(&self, id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
        header
            .split_whitespace()
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|b64| STANDARD.decode(b64).ok())
            .any(|tag| self.mac(id, timestamp, body).verify_slice(&tag).is_ok())
    }

    /// Full Standard Webhooks verification: headers present, timestamp within
    /// `tolerance_secs` of `now_secs`, and a matching signature.
    pub fn verify(
        &self,
        headers: &WebhookHeaders<'_>,
        body: &[u8],
        now_secs: i64,
        tolerance_secs: i64,
    ) -> Result<(), SignatureError> {
        let id = headers.id.ok_or(SignatureError::Missing("webhook-id"))?;
        let ts = headers.timestamp.ok_or(SignatureError::Missing("webhook-timestamp"))?;
        let sig = headers.signature.ok_or(SignatureError::Missing("webhook-signature"))?;
        let ts_secs: i64 = ts.trim().parse().map_err(|_| SignatureError::BadTimestamp)?;
        let skew_secs = ts_secs - now_secs;
        if skew_secs.abs() > tolerance_secs {
            return Err(SignatureError::Stale { skew_secs });
        }
        if self.verify_signature(id, ts, body, sig) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// The three Standard Webhooks headers of one push, as received.
#[derive(Clone, Copy, Debug, Default)]
pub struct WebhookHeaders<'a> {
    /// `webhook-id`.
    pub id: Option<&'a str>,
    /// `webhook-timestamp`.
    pub timestamp: Option<&'a str>,
    /// `webhook-signature`.
    pub signature: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published Standard Webhooks test vector.
    #[test]
    fn standard_webhooks_reference_vector() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rejects_bad_secrets() {
        assert!(WebhookSecret::parse("whsec_not base64!").is_err());
        assert!(WebhookSecret::parse("whsec_").is_err());
    }
}
