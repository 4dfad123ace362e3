//! JSON Web Tokens for the tests, signed with ring's HMAC (not with the
//! server's JWT library, so the tests check its reading of RFC 7519).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;

/// Seconds since the Unix epoch.
pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token with header `{"alg":ALG,"typ":"JWT"}` and `claims`, signed
/// with `key` by HMAC-SHA512 for `HS512` and HMAC-SHA256 otherwise.
pub fn sign(alg: &str, claims: &str, key: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#)),
        B64.encode(claims)
    );
    let algorithm = match alg {
        "HS512" => ring::hmac::HMAC_SHA512,
        _ => ring::hmac::HMAC_SHA256,
    };
    let tag = ring::hmac::sign(&ring::hmac::Key::new(algorithm, key), input.as_bytes());
    format!("{input}.{}", B64.encode(tag.as_ref()))
}

/// An HS256 token for `name` (its `sub`), valid `secs` more seconds.
pub fn for_user(name: &str, secs: u64, key: &[u8]) -> String {
    let claims = format!(r#"{{"sub":"{name}","exp":{}}}"#, now_s() + secs);
    sign("HS256", &claims, key)
}
