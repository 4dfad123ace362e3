//! Verified users: names vouched for by the operator's backend.
//!
//! With `--auth-secret-file`, a connection may carry a JSON Web Token
//! (RFC 7519) signed with HMAC-SHA256 (`HS256`, RFC 7518 §3.2) under the
//! operator's secret: in the query (`?token=JWT`, for clients that cannot
//! set headers) or in the cookie `wschat_token` (for the page). The token
//! says who the user is (`name`, else `sub`), until when (`exp`, required),
//! and optionally which rooms it may join (`rooms`). The chat shows such a
//! user as verified and gives it its name over any anonymous holder.
//!
//! Signature checking is `jsonwebtoken`'s (over ring, whose HMAC
//! verification compares in constant time). Only `HS256` is accepted:
//! RFC 8725 §3.1, "libraries MUST enable the caller to specify a supported
//! set of algorithms and MUST NOT use any other algorithms when performing
//! cryptographic operations", which rules out `alg: none` and any
//! algorithm switch. Expiry is checked here against the loop's clock
//! rather than inside the library, with no leeway, so that it is one rule
//! at the handshake, at `/token` and at the timer that closes the
//! connection when the token runs out.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// The cookie that carries the page's token.
pub const COOKIE: &str = "wschat_token";

/// The shortest secret accepted: RFC 7518 §3.2, "A key of the same size
/// as the hash output (for instance, 256 bits for "HS256") or larger MUST
/// be used with this algorithm."
pub const MIN_SECRET_LEN: usize = 32;

/// The longest token looked at (a request head is bounded anyway; this
/// bounds the work of one `/token` command).
pub const MAX_TOKEN_LEN: usize = 4096;

/// The close code sent when a token runs out and no fresh one came: in
/// the range RFC 6455 §7.4.2 leaves to applications (4000-4999).
pub const EXPIRED_CLOSE_CODE: u16 = 4001;

/// Checks tokens against the operator's secret.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier { .. }") // never the key
    }
}

/// What a valid token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user's verified name (as the token has it; the chat applies its
    /// nickname rules to it).
    pub name: String,
    /// When the token runs out, in milliseconds since the Unix epoch.
    pub expires_ms: u64,
    /// The rooms it may join (lower case), or `None` for any.
    pub rooms: Option<Vec<String>>,
}

impl Identity {
    /// Whether the token lets its holder into `room`.
    pub fn may_join(&self, room: &str) -> bool {
        self.rooms
            .as_ref()
            .is_none_or(|rooms| rooms.iter().any(|r| r == room))
    }
}

/// Why a token is refused (logged, and the reason of the `401`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// Not three base64url parts of JSON, or too long.
    Malformed,
    /// Signed with another algorithm than HS256 (`none` included).
    WrongAlgorithm,
    /// The signature does not match the secret.
    BadSignature,
    /// Its `exp` has passed.
    Expired,
    /// No `exp`, or claims of the wrong type.
    BadClaims,
    /// Neither `name` nor `sub`.
    NoName,
}

impl AuthError {
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Malformed => "token is not a well-formed JWT",
            AuthError::WrongAlgorithm => "token is not signed with HS256",
            AuthError::BadSignature => "token signature does not match",
            AuthError::Expired => "token has expired",
            AuthError::BadClaims => "token claims are invalid (exp is required)",
            AuthError::NoName => "token names nobody (no name or sub claim)",
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    name: Option<String>,
    sub: Option<String>,
    exp: u64,
    rooms: Option<Vec<String>>,
}

impl Verifier {
    /// A verifier for `secret`, which must be at least [`MIN_SECRET_LEN`]
    /// bytes.
    pub fn new(secret: &[u8]) -> Result<Verifier, String> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(format!(
                "the secret is {} bytes; HS256 needs at least {MIN_SECRET_LEN}",
                secret.len()
            ));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false; // checked in `verify`, on our clock
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        Ok(Verifier {
            key: DecodingKey::from_secret(secret),
            validation,
        })
    }

    /// Checks `token` at `now_ms` (milliseconds since the Unix epoch).
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Identity, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        if algorithm_of(token)? != "HS256" {
            return Err(AuthError::WrongAlgorithm);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| classify(e.kind()))?;
        let claims = data.claims;
        let expires_ms = claims.exp.saturating_mul(1000);
        if expires_ms <= now_ms {
            return Err(AuthError::Expired);
        }
        let name = claims
            .name
            .or(claims.sub)
            .filter(|n| !n.is_empty())
            .ok_or(AuthError::NoName)?;
        let rooms = claims
            .rooms
            .map(|rooms| rooms.iter().map(|r| r.to_ascii_lowercase()).collect());
        Ok(Identity {
            name,
            expires_ms,
            rooms,
        })
    }
}

/// The `alg` of a token's header, read before anything else so that a
/// header naming an algorithm the library does not know (`none`) is
/// told apart from a malformed token.
fn algorithm_of(token: &str) -> Result<String, AuthError> {
    #[derive(Deserialize)]
    struct Header {
        alg: String,
    }
    let header = token.split('.').next().ok_or(AuthError::Malformed)?;
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed)?;
    let header: Header = serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
    Ok(header.alg)
}

fn classify(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::WrongAlgorithm,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::Json(_) => AuthError::BadClaims,
        _ => AuthError::Malformed,
    }
}

/// The value of the `wschat_token` cookie in a `Cookie` header's value
/// (`name=value` pairs separated by `; `, RFC 6265 §4.2.1), if any.
pub fn token_in_cookie(cookie: &str) -> Option<&str> {
    cookie.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE).then(|| value.trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW_MS: u64 = 1_800_000_000_000;

    /// A token signed by hand (HMAC-SHA256 from ring, not the library
    /// under test), so the tests check the library's reading of RFC 7519.
    fn sign(header: &str, claims: &str, secret: &[u8]) -> String {
        let input = format!("{}.{}", B64.encode(header), B64.encode(claims));
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let tag = ring::hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", B64.encode(tag.as_ref()))
    }

    fn hs256(claims: &str) -> String {
        sign(r#"{"alg":"HS256","typ":"JWT"}"#, claims, SECRET)
    }

    fn verifier() -> Verifier {
        Verifier::new(SECRET).unwrap()
    }

    #[test]
    fn a_valid_token_names_its_user_until_exp() {
        let token = hs256(r#"{"sub":"alice","exp":1800000060}"#);
        let id = verifier().verify(&token, NOW_MS).unwrap();
        assert_eq!(id.name, "alice");
        assert_eq!(id.expires_ms, 1_800_000_060_000);
        assert!(id.may_join("anything"));
        // `name` wins over `sub`; `rooms` restricts, case-insensitively.
        let token = hs256(r#"{"sub":"u-17","name":"Bob","exp":1800000060,"rooms":["Rust"]}"#);
        let id = verifier().verify(&token, NOW_MS).unwrap();
        assert_eq!(id.name, "Bob");
        assert!(id.may_join("rust"));
        assert!(!id.may_join("lobby"));
    }

    #[test]
    fn expiry_is_exact_on_our_clock() {
        let token = hs256(r#"{"sub":"alice","exp":1800000000}"#);
        assert_eq!(verifier().verify(&token, NOW_MS), Err(AuthError::Expired));
        assert!(verifier().verify(&token, NOW_MS - 1).is_ok());
    }

    #[test]
    fn every_bad_token_is_refused_with_its_reason() {
        let v = verifier();
        let good = hs256(r#"{"sub":"alice","exp":1800000060}"#);
        // Wrong key.
        let other = sign(
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"alice","exp":1800000060}"#,
            b"another secret, also 32 bytes or more",
        );
        assert_eq!(v.verify(&other, NOW_MS), Err(AuthError::BadSignature));
        // Tampered claims under the old signature.
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged = B64.encode(r#"{"sub":"admin","exp":1800000060}"#);
        parts[1] = &forged;
        assert_eq!(
            v.verify(&parts.join("."), NOW_MS),
            Err(AuthError::BadSignature)
        );
        // alg none, with and without a signature part.
        let none = format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"none"}"#),
            B64.encode(r#"{"sub":"alice","exp":1800000060}"#)
        );
        assert_eq!(v.verify(&none, NOW_MS), Err(AuthError::WrongAlgorithm));
        // Another HMAC, correctly signed under it, is still refused.
        let hs512 = {
            let input = format!(
                "{}.{}",
                B64.encode(r#"{"alg":"HS512"}"#),
                B64.encode(r#"{"sub":"alice","exp":1800000060}"#)
            );
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA512, SECRET);
            let tag = ring::hmac::sign(&key, input.as_bytes());
            format!("{input}.{}", B64.encode(tag.as_ref()))
        };
        assert_eq!(v.verify(&hs512, NOW_MS), Err(AuthError::WrongAlgorithm));
        // No exp; exp of the wrong type; no name.
        assert_eq!(
            v.verify(&hs256(r#"{"sub":"alice"}"#), NOW_MS),
            Err(AuthError::BadClaims)
        );
        assert_eq!(
            v.verify(&hs256(r#"{"sub":"alice","exp":"soon"}"#), NOW_MS),
            Err(AuthError::BadClaims)
        );
        assert_eq!(
            v.verify(&hs256(r#"{"exp":1800000060}"#), NOW_MS),
            Err(AuthError::NoName)
        );
        // Garbage of every shape.
        for bad in ["", "a", "a.b", "a.b.c", "....", "é.é.é", &"x".repeat(5000)] {
            assert_eq!(
                v.verify(bad, NOW_MS).map(|_| ()),
                Err(AuthError::Malformed),
                "{bad:.20}"
            );
        }
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(Verifier::new(b"short").is_err());
        assert!(Verifier::new(&[7; MIN_SECRET_LEN]).is_ok());
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        assert_eq!(token_in_cookie("wschat_token=abc"), Some("abc"));
        assert_eq!(
            token_in_cookie("a=1; wschat_token=\"x.y.z\"; b=2"),
            Some("x.y.z")
        );
        assert_eq!(token_in_cookie("other_wschat_token=1; b=2"), None);
        assert_eq!(token_in_cookie(""), None);
    }
}
