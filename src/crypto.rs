//! Randomness, hashing of opaque secrets (sessions, tokens) and password hashing (argon2id).

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Bytes of the operating system's CSPRNG fetched at once per thread: a sign-in needs five
/// secrets (state, browser binding, session id, CSRF token, the refresh token's nonce), and one
/// system call serves them all and the next ones.
const RANDOM_BATCH: usize = 256;

/// Unused bytes of the last batch: `bytes[used..]`. Each byte is handed out once and wiped.
struct RandomBatch {
    bytes: [u8; RANDOM_BATCH],
    used: usize,
}

thread_local! {
    static RANDOM: std::cell::RefCell<RandomBatch> = const {
        std::cell::RefCell::new(RandomBatch { bytes: [0; RANDOM_BATCH], used: RANDOM_BATCH })
    };
}

/// Fills `out` from the operating system's CSPRNG: from this thread's batch, fetched afresh
/// when it runs out; a request larger than a batch is fetched directly.
fn fill_random(out: &mut [u8]) {
    // The OS generator failing is not recoverable: no secret may be made without it.
    let fetch = |buf: &mut [u8]| {
        getrandom::fill(buf).expect("operating system random generator failed");
    };
    if out.len() > RANDOM_BATCH {
        return fetch(out);
    }
    RANDOM.with(|batch| {
        let mut batch = batch.borrow_mut();
        if RANDOM_BATCH - batch.used < out.len() {
            fetch(&mut batch.bytes);
            batch.used = 0;
        }
        let (from, to) = (batch.used, batch.used + out.len());
        out.copy_from_slice(&batch.bytes[from..to]);
        batch.bytes[from..to].fill(0);
        batch.used = to;
    });
}

/// `n` bytes from the operating system's CSPRNG.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    fill_random(&mut buf);
    buf
}

/// `n` random bytes as lowercase hex (2n characters).
pub fn random_hex(n: usize) -> String {
    hex::encode(random_bytes(n))
}

/// A random password of 24 characters from an unambiguous alphabet.
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    random_bytes(24)
        .into_iter()
        .map(|b| ALPHABET[(b as usize) % ALPHABET.len()] as char)
        .collect()
}

/// SHA-256 of a high-entropy secret, as hex: how session ids and tokens are stored.
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(sha256(secret))
}

/// SHA-256 of a high-entropy secret (the stored form of [`sha256_hex`], as bytes).
pub fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Constant-time equality of two 32-byte digests.
pub fn ct_eq_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    bool::from(a.ct_eq(b))
}

/// Constant-time equality of two strings.
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Hashes a password with argon2id and a random salt, as a PHC string.
pub fn hash_password(password: &str) -> String {
    Argon2::default()
        .hash_password(password.as_bytes())
        .expect("argon2 hashing with default parameters cannot fail")
        .to_string()
}

/// Checks a password against a stored PHC string; a malformed hash never matches.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A fixed hash verified against when the login is unknown, so both cases cost the same.
pub fn dummy_verify(password: &str) {
    use std::sync::OnceLock;
    static DUMMY: OnceLock<String> = OnceLock::new();
    let phc = DUMMY.get_or_init(|| hash_password("labgate-dummy-password"));
    let _ = verify_password(password, phc);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hash_round_trip() {
        let h = hash_password("correct horse battery");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("wrong horse battery", &h));
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn random_values_differ_and_have_length() {
        let a = random_hex(20);
        assert_eq!(a.len(), 40);
        assert_ne!(a, random_hex(20));
        assert_eq!(random_password().len(), 24);
    }

    #[test]
    fn batched_random_bytes_are_never_handed_out_twice() {
        // Sizes that straddle the batch's end, one larger than a batch, and many values: no
        // 16-byte window may repeat (a repeat of 128 random bits would mean reused bytes).
        let mut seen = std::collections::HashSet::new();
        for n in [16, 100, 16, 250, 16, RANDOM_BATCH + 1, 16, 33, 16, 17, 16] {
            let bytes = random_bytes(n);
            assert_eq!(bytes.len(), n);
            for window in bytes.chunks_exact(16) {
                assert!(seen.insert(window.to_vec()), "bytes handed out twice");
            }
        }
        for _ in 0..2_000 {
            assert!(seen.insert(random_bytes(16)), "bytes handed out twice");
        }
        // What was handed out is wiped from the batch.
        RANDOM.with(|batch| {
            let batch = batch.borrow();
            assert!(batch.bytes[..batch.used].iter().all(|b| *b == 0));
        });
    }

    #[test]
    fn sha256_is_stable() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(ct_eq("abc", "abc"));
        assert!(!ct_eq("abc", "abd"));
        assert!(!ct_eq("abc", "ab"));
    }
}
