//! Standard Webhooks verification against vectors computed independently (Python's
//! `hmac`/`hashlib`), plus the failure cases a receiver must catch.

use callsim::signature::{SignatureError, WebhookHeaders, WebhookSecret};

/// `whsec_` + base64 of b"voice-push test key 0123456789!!".
const SECRET: &str = "whsec_dm9pY2UtcHVzaCB0ZXN0IGtleSAwMTIzNDU2Nzg5ISE=";
const ID: &str = "msg_2Kf1W9xQ";
const TS: i64 = 1701388801;
const BODY: &str =
    r#"{"callId":"202312010001","serviceType":100,"status":"ANSWERED","timestamp":1701388800000,"sequence":2}"#;
/// base64(HMAC-SHA256(key, "msg_2Kf1W9xQ.1701388801.{BODY}")), computed with python3.
const EXPECTED: &str = "kA5xAv87ZT3eIraPwO9LPofTgQ1FkVaS+ilAYVv9R2I=";

fn headers<'a>(sig: &'a str, ts: &'a str) -> WebhookHeaders<'a> {
    WebhookHeaders { id: Some(ID), timestamp: Some(ts), signature: Some(sig) }
}

#[test]
fn signs_like_the_reference() {
    let secret = WebhookSecret::parse(SECRET).unwrap();
    assert_eq!(secret.sign(ID, TS, BODY.as_bytes()), format!("v1,{EXPECTED}"));
}

#[test]
fn verifies_valid_signatures_among_several() {
    let secret = WebhookSecret::parse(SECRET).unwrap();
    let sig = format!("v1,{EXPECTED}");
    assert_eq!(secret.verify(&headers(&sig, "1701388801"), BODY.as_bytes(), TS + 10, 300), Ok(()));
    // Key rotation: several entries, any may match; unknown versions are ignored.
    let many = format!("v1,AAAA v2,zzz v1,{EXPECTED}");
    assert_eq!(secret.verify(&headers(&many, "1701388801"), BODY.as_bytes(), TS, 300), Ok(()));
}

#[test]
fn rejects_tampering_wrong_keys_and_stale_or_missing_headers() {
    let secret = WebhookSecret::parse(SECRET).unwrap();
    let sig = format!("v1,{EXPECTED}");
    let tampered = BODY.replace("ANSWERED", "HANGUP");
    let h = headers(&sig, "1701388801");
    assert_eq!(secret.verify(&h, tampered.as_bytes(), TS, 300), Err(SignatureError::Mismatch));
    let other = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert_eq!(other.verify(&h, BODY.as_bytes(), TS, 300), Err(SignatureError::Mismatch));
    assert_eq!(secret.verify(&h, BODY.as_bytes(), TS + 301, 300), Err(SignatureError::Stale { skew_secs: -301 }));
    // The timestamp is part of the signed content.
    let moved = headers(&sig, "1701388802");
    assert_eq!(secret.verify(&moved, BODY.as_bytes(), TS, 300), Err(SignatureError::Mismatch));
    let bad_ts = headers(&sig, "soon");
    assert_eq!(secret.verify(&bad_ts, BODY.as_bytes(), TS, 300), Err(SignatureError::BadTimestamp));
    let unsigned = WebhookHeaders { signature: None, ..h };
    assert!(matches!(secret.verify(&unsigned, BODY.as_bytes(), TS, 300), Err(SignatureError::Missing(_))));
}
