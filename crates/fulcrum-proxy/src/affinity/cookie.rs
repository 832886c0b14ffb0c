//! Sealed affinity cookies: the session id, the backend and an expiry,
//! encrypted and authenticated with ChaCha20-Poly1305 (RFC 8439, from
//! `ring`) under a key derived from the operator's secret, with the pool's
//! name as associated data. The client learns nothing of the backend and
//! can choose none: a cookie that does not open under one of the pool's
//! secrets — tampered, truncated, sealed for another pool or with a retired
//! key — or that has expired is no session at all.
//!
//! Layout: base64url(nonce[12] ‖ ciphertext[24] ‖ tag[16]), the plaintext
//! being session id, backend address key and expiry (Unix milliseconds),
//! each a big-endian u64. Any instance with the same secrets opens any
//! other's cookies, with no shared store.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

const PLAINTEXT_LEN: usize = 24;
const SEALED_LEN: usize = NONCE_LEN + PLAINTEXT_LEN + 16;
/// Length of a cookie value: base64url of [`SEALED_LEN`] bytes, no padding.
pub const COOKIE_LEN: usize = (SEALED_LEN * 4).div_ceil(3);
/// Domain separation of the key derivation.
const KEY_CONTEXT: &[u8] = b"fulcrum affinity cookie v1\0";

/// What a cookie carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieSession {
    /// Random session id, the key of the session in the local table.
    pub id: u64,
    /// The backend's address key.
    pub backend: u64,
    /// When the cookie stops being honoured, Unix milliseconds.
    pub expires_ms: u64,
}

/// Seals and opens one pool's cookies.
pub struct CookieSealer {
    /// The first seals; all open (key rotation).
    keys: Vec<LessSafeKey>,
    random: SystemRandom,
}

impl std::fmt::Debug for CookieSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieSealer").field("keys", &self.keys.len()).finish_non_exhaustive()
    }
}

impl CookieSealer {
    /// A sealer for `secrets` (at least one).
    pub fn new(secrets: &[String]) -> Self {
        let keys = secrets
            .iter()
            .map(|secret| {
                let mut material = KEY_CONTEXT.to_vec();
                material.extend_from_slice(secret.as_bytes());
                let digest = ring::digest::digest(&ring::digest::SHA256, &material);
                let key = UnboundKey::new(&CHACHA20_POLY1305, digest.as_ref())
                    .expect("a SHA-256 digest is a ChaCha20-Poly1305 key");
                LessSafeKey::new(key)
            })
            .collect();
        Self { keys, random: SystemRandom::new() }
    }

    /// A fresh random session id.
    pub fn new_id(&self) -> u64 {
        let mut bytes = [0u8; 8];
        self.random.fill(&mut bytes).expect("the system's random source works");
        u64::from_be_bytes(bytes)
    }

    /// The cookie value carrying `session` for `pool`.
    pub fn seal(&self, session: &CookieSession, pool: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).expect("the system's random source works");
        let mut sealed = Vec::with_capacity(SEALED_LEN);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&session.id.to_be_bytes());
        sealed.extend_from_slice(&session.backend.to_be_bytes());
        sealed.extend_from_slice(&session.expires_ms.to_be_bytes());
        let mut body = sealed.split_off(NONCE_LEN);
        let tag = self.keys[0]
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(pool), &mut body)
            .expect("24 bytes are within ChaCha20-Poly1305's limits");
        sealed.extend_from_slice(&body);
        sealed.extend_from_slice(tag.as_ref());
        URL_SAFE_NO_PAD.encode(sealed)
    }

    /// The session in cookie `value` for `pool` at `now_ms`, if it opens
    /// under one of the secrets and has not expired.
    pub fn open(&self, value: &[u8], pool: &str, now_ms: u64) -> Option<CookieSession> {
        if value.len() != COOKIE_LEN {
            return None;
        }
        // On the stack: this runs for every request of a cookie session.
        let mut sealed = [0u8; SEALED_LEN + 2];
        let decoded = URL_SAFE_NO_PAD.decode_slice(value, &mut sealed).ok()?;
        if decoded != SEALED_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed[..SEALED_LEN].split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let session = self.keys.iter().find_map(|key| {
            let mut buffer = [0u8; PLAINTEXT_LEN + 16];
            buffer.copy_from_slice(ciphertext);
            let plain =
                key.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(pool), &mut buffer).ok()?;
            let word = |i: usize| u64::from_be_bytes(plain[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            Some(CookieSession { id: word(0), backend: word(1), expires_ms: word(2) })
        })?;
        (session.expires_ms > now_ms).then_some(session)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sealer(secrets: &[&str]) -> CookieSealer {
        CookieSealer::new(&secrets.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    const SESSION: CookieSession = CookieSession { id: 42, backend: 0xDEAD_BEEF, expires_ms: 10_000 };

    #[test]
    fn a_sealed_cookie_opens_and_hides_the_backend() {
        let a = sealer(&["first-secret-0123456789"]);
        let cookie = a.seal(&SESSION, "app");
        assert_eq!(cookie.len(), COOKIE_LEN);
        assert_eq!(a.open(cookie.as_bytes(), "app", 9_999), Some(SESSION));
        assert_ne!(cookie, a.seal(&SESSION, "app"), "a fresh nonce each time");
        let another_instance = sealer(&["first-secret-0123456789"]);
        assert_eq!(another_instance.open(cookie.as_bytes(), "app", 0), Some(SESSION));
    }

    #[test]
    fn expired_foreign_and_tampered_cookies_do_not_open() {
        let a = sealer(&["first-secret-0123456789"]);
        let cookie = a.seal(&SESSION, "app");
        assert_eq!(a.open(cookie.as_bytes(), "app", 10_000), None, "expired");
        assert_eq!(a.open(cookie.as_bytes(), "other-pool", 0), None, "another pool's cookie");
        assert_eq!(sealer(&["some-other-secret-xyz"]).open(cookie.as_bytes(), "app", 0), None);
        let mut flipped = cookie.into_bytes();
        flipped[30] = if flipped[30] == b'A' { b'B' } else { b'A' };
        assert_eq!(a.open(&flipped, "app", 0), None, "one byte flipped");
    }

    #[test]
    fn rotated_keys_still_open_old_cookies_and_seal_with_the_new_one() {
        let old = sealer(&["old-secret-0123456789"]);
        let rotated = sealer(&["new-secret-0123456789", "old-secret-0123456789"]);
        let cookie = old.seal(&SESSION, "app");
        assert_eq!(rotated.open(cookie.as_bytes(), "app", 0), Some(SESSION));
        let resealed = rotated.seal(&SESSION, "app");
        assert_eq!(old.open(resealed.as_bytes(), "app", 0), None, "sealed with the new key");
    }

    proptest! {
        #[test]
        fn random_bytes_never_open(value in proptest::collection::vec(any::<u8>(), 0..200)) {
            let a = sealer(&["first-secret-0123456789"]);
            prop_assert_eq!(a.open(&value, "app", 0), None);
        }

        #[test]
        fn well_formed_garbage_never_opens(bytes in proptest::collection::vec(any::<u8>(), SEALED_LEN)) {
            let a = sealer(&["first-secret-0123456789"]);
            let value = URL_SAFE_NO_PAD.encode(bytes);
            prop_assert_eq!(a.open(value.as_bytes(), "app", 0), None);
        }
    }
}
