//! Encryption at rest of the secrets labgate must read back: the GitLab application secret
//! (and every other setting listed in `settings::ENCRYPTED`) and the refresh token of each
//! GitLab sign-in. Password hashes, session ids and API tokens need none of this: they are
//! stored as one-way hashes.
//!
//! The key lives in `<data-dir>/labgate.key`, never in the database, so that a copy of
//! `labgate.db` alone (a backup, a file sent for support) reveals no secret. The file is made
//! at the first start (mode 0600) and read at every start; labgate refuses to start when it is
//! unreadable, readable by others, or malformed, and says how to fix it.
//!
//! The file holds one or more lines `key <id> <64 hex digits>` (and `#` comments). A value is
//! sealed with the last key and records that key's id, so that a future rotation can append a
//! key and still open what older keys sealed. A sealed value is the text
//! `lgs1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`: XChaCha20-Poly1305 (the RustCrypto
//! crate), a random 192-bit nonce for every seal, and as associated data the key id and a
//! context naming what the value is (a setting's key, or the refresh token of one user), so
//! that a sealed value copied into another place does not open there.
//!
//! The keyring in use is process-wide ([`install`], once at start); [`seal`] and [`open`] use
//! it. Nothing here logs, and no error carries a plaintext.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "labgate.key";

/// What starts every sealed value: labgate's sealed format, version 1 (XChaCha20-Poly1305).
const SEALED_PREFIX: &str = "lgs1:";
/// Bytes of a key.
const KEY_BYTES: usize = 32;
/// Bytes of a nonce.
const NONCE_BYTES: usize = 24;
/// Bytes of a key id, before hex.
const ID_BYTES: usize = 4;

/// The keyring installed at start, for [`seal`] and [`open`].
static INSTALLED: OnceLock<Keyring> = OnceLock::new();

/// One key of the key file.
struct Key {
    /// 8 lowercase hex digits, recorded in every value this key seals.
    id: String,
    cipher: XChaCha20Poly1305,
}

/// The keys of the key file, the last one sealing.
pub struct Keyring {
    keys: Vec<Key>,
}

/// Never prints a key, only the ids.
impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Keyring").field("ids", &ids).finish()
    }
}

/// Why a stored value did not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// Sealed with a key this keyring does not hold: the key file was replaced or lost (a
    /// database restored without its key file).
    UnknownKey(String),
    /// Not what [`seal`] writes, or altered since, or sealed for another context.
    Damaged,
    /// No keyring was installed (a bug: labgate installs it before it serves).
    NoKey,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::UnknownKey(id) => write!(
                f,
                "sealed with key {id}, which {KEY_FILE} does not hold (the key file was \
                 replaced, or the database was restored without its key file)"
            ),
            OpenError::Damaged => write!(f, "the sealed value is damaged or was moved"),
            OpenError::NoKey => write!(f, "no key loaded"),
        }
    }
}

impl std::error::Error for OpenError {}

impl Keyring {
    /// Reads a key file's text: `key <id> <64 hex>` lines, blank lines and `#` comments. The
    /// error names the line and what is wrong with it (never the key).
    pub fn parse(text: &str) -> Result<Keyring, String> {
        let mut keys: Vec<Key> = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what: &str| format!("line {}: {what}", number + 1);
            let mut words = line.split_whitespace();
            let (Some("key"), Some(id), Some(secret), None) =
                (words.next(), words.next(), words.next(), words.next())
            else {
                return Err(bad("expected `key <id> <64 hex digits>`"));
            };
            let id_ok = id.len() == 2 * ID_BYTES
                && id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !id_ok {
                return Err(bad("the key id must be 8 lowercase hex digits"));
            }
            let secret = match hex::decode(secret) {
                Ok(bytes) if bytes.len() == KEY_BYTES => bytes,
                _ => return Err(bad("the key must be 64 hex digits (32 bytes)")),
            };
            if keys.iter().any(|k| k.id == id) {
                return Err(bad("this key id is given twice"));
            }
            keys.push(Key::new(id.to_string(), &secret));
        }
        if keys.is_empty() {
            return Err("no key in it".into());
        }
        Ok(Keyring { keys })
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        self.keys.last().map_or("", |k| k.id.as_str())
    }

    /// Seals `plain` for `context` with the current key and a fresh random nonce.
    pub fn seal(&self, context: &str, plain: &str) -> String {
        // A keyring always holds a key: `parse` makes none without.
        let key = &self.keys[self.keys.len() - 1];
        let nonce_bytes = crate::crypto::random_bytes(NONCE_BYTES);
        let nonce = XNonce::try_from(&nonce_bytes[..]).expect("24 bytes make a nonce");
        let aad = associated_data(&key.id, context);
        let message = Payload {
            msg: plain.as_bytes(),
            aad: aad.as_bytes(),
        };
        let sealed = key.cipher.encrypt(&nonce, message);
        let sealed = sealed.expect("XChaCha20-Poly1305 seals any message labgate stores");
        let mut bytes = nonce_bytes;
        bytes.extend_from_slice(&sealed);
        format!(
            "{SEALED_PREFIX}{}:{}",
            key.id,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )
    }

    /// Opens what [`Keyring::seal`] made for the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<String, OpenError> {
        let (id, body) = split_sealed(sealed).ok_or(OpenError::Damaged)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| OpenError::UnknownKey(id.to_string()))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| OpenError::Damaged)?;
        if bytes.len() < NONCE_BYTES {
            return Err(OpenError::Damaged);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let nonce = XNonce::try_from(nonce).map_err(|_| OpenError::Damaged)?;
        let aad = associated_data(&key.id, context);
        let sealed = Payload {
            msg: ciphertext,
            aad: aad.as_bytes(),
        };
        let plain = key.cipher.decrypt(&nonce, sealed);
        let plain = plain.map_err(|_| OpenError::Damaged)?;
        String::from_utf8(plain).map_err(|_| OpenError::Damaged)
    }
}

impl Key {
    fn new(id: String, secret: &[u8]) -> Key {
        Key {
            id,
            cipher: XChaCha20Poly1305::new_from_slice(secret).expect("a 32-byte key"),
        }
    }
}

/// The associated data of a sealed value: the key id and what the value is.
fn associated_data(id: &str, context: &str) -> String {
    format!("{SEALED_PREFIX}{id}:{context}")
}

/// The key id and the base64 body of a sealed value.
fn split_sealed(value: &str) -> Option<(&str, &str)> {
    value.strip_prefix(SEALED_PREFIX)?.split_once(':')
}

/// Whether a stored value is sealed (rather than a clear value an older labgate wrote).
pub fn is_sealed(value: &str) -> bool {
    split_sealed(value).is_some()
}

/// The id of the key a sealed value was sealed with.
#[cfg(test)]
pub fn key_id_of(value: &str) -> Option<&str> {
    split_sealed(value).map(|(id, _)| id)
}

/// The key file of a data directory.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

/// What to do when the key file cannot be used, for every message below.
const KEY_FIX: &str = "restore the labgate.key that was backed up with labgate.db; if it is \
    lost, move it away and start again: labgate makes a new key, and the GitLab secret must be \
    entered again (people sign in with GitLab again)";

/// Reads the key file of `data_dir`, or makes one (mode 0600) when there is none. Returns the
/// keyring and whether it was made now. The error names the file, what is wrong and the fix:
/// unreadable, readable by group or others, malformed.
pub fn load_or_create(data_dir: &Path) -> Result<(Keyring, bool), String> {
    let path = key_path(data_dir);
    let shown = path.display();
    match std::fs::symlink_metadata(&path) {
        Ok(meta) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode() & 0o777;
                if meta.is_file() && mode & 0o077 != 0 {
                    return Err(format!(
                        "key file {shown}: readable by others (mode {mode:04o}); it holds the \
                         key of the secrets in labgate.db: run `chmod 600 {shown}`"
                    ));
                }
            }
            if !meta.is_file() {
                return Err(format!("key file {shown}: not a regular file; {KEY_FIX}"));
            }
            let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
                std::io::ErrorKind::PermissionDenied => format!(
                    "key file {shown}: permission denied: labgate must be able to read it \
                     (run labgate as the owner of its data directory)"
                ),
                std::io::ErrorKind::InvalidData => {
                    format!("key file {shown}: malformed (not text); {KEY_FIX}")
                }
                _ => format!("key file {shown}: {e}"),
            })?;
            let keyring = Keyring::parse(&text)
                .map_err(|why| format!("key file {shown}: malformed ({why}); {KEY_FIX}"))?;
            Ok((keyring, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(&path).map(|k| (k, true)),
        Err(e) => Err(format!("key file {shown}: {e}")),
    }
}

/// The text of a new key file: one fresh random key, and what the file is for.
pub fn new_key_file_text() -> String {
    format!(
        "# labgate's key: it encrypts the GitLab secret and the GitLab refresh tokens stored in\n\
         # labgate.db. Keep it with every backup of labgate.db (without it, those secrets cannot\n\
         # be read: the GitLab secret must then be entered again), and nowhere else.\n\
         key {} {}\n",
        crate::crypto::random_hex(ID_BYTES),
        crate::crypto::random_hex(KEY_BYTES)
    )
}

/// Makes a new key file at `path` without ever leaving a partial one: written under a
/// temporary name (0600), synced, then linked to its name, which fails if another labgate
/// made one meanwhile (that one is then read).
fn create(path: &Path) -> Result<Keyring, String> {
    let shown = path.display();
    let text = new_key_file_text();
    let keyring = Keyring::parse(&text).map_err(|why| format!("key file {shown}: {why}"))?;
    let temporary = path.with_extension("key.new");
    let _ = std::fs::remove_file(&temporary);
    crate::process::write_private(&temporary, &text)
        .map_err(|e| format!("key file {shown}: cannot be written: {e}"))?;
    let linked = std::fs::hard_link(&temporary, path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(keyring),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            load_or_create(path.parent().unwrap_or(Path::new("."))).map(|(k, _)| k)
        }
        Err(e) => Err(format!("key file {shown}: cannot be written: {e}")),
    }
}

/// Makes `keyring` the one [`seal`] and [`open`] use, for the life of the process. Only the
/// first call counts (labgate calls it once, at start); returns the keyring in use.
pub fn install(keyring: Keyring) -> &'static Keyring {
    INSTALLED.get_or_init(|| keyring)
}

/// The keyring in use, once installed.
pub fn installed() -> Option<&'static Keyring> {
    INSTALLED.get()
}

/// Seals `plain` for `context` with the installed keyring; `None` when none is installed.
pub fn seal(context: &str, plain: &str) -> Option<String> {
    installed().map(|k| k.seal(context, plain))
}

/// Opens a value [`seal`] made for `context`, with the installed keyring.
pub fn open(context: &str, sealed: &str) -> Result<String, OpenError> {
    installed().ok_or(OpenError::NoKey)?.open(context, sealed)
}

/// Installs a fixed keyring for unit tests (every test of the process shares it).
#[cfg(test)]
pub fn install_for_tests() -> &'static Keyring {
    INSTALLED.get_or_init(|| {
        Keyring::parse(
            "key 0badc0de 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        )
        .expect("the test key parses")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring() -> Keyring {
        Keyring::parse(&new_key_file_text()).unwrap()
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "labgate-secrets-{tag}-{}-{}",
            std::process::id(),
            crate::crypto::random_hex(4)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_sealed_value_opens_for_its_context_only_and_hides_the_plaintext() {
        let k = keyring();
        let sealed = k.seal("setting:x", "s3cret-value");
        assert!(is_sealed(&sealed) && !sealed.contains("s3cret"), "{sealed}");
        assert_eq!(key_id_of(&sealed), Some(k.current_id()));
        assert_eq!(k.open("setting:x", &sealed).unwrap(), "s3cret-value");
        assert_eq!(k.open("setting:y", &sealed), Err(OpenError::Damaged));
        assert_ne!(
            k.seal("setting:x", "s3cret-value"),
            sealed,
            "a fresh nonce every time"
        );
    }

    #[test]
    fn an_altered_or_foreign_value_does_not_open() {
        let k = keyring();
        let sealed = k.seal("c", "value");
        let (head, body) = sealed.rsplit_once(':').unwrap();
        let mut bytes = body.as_bytes().to_vec();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let altered = format!("{head}:{}", String::from_utf8(bytes).unwrap());
        assert_eq!(k.open("c", &altered), Err(OpenError::Damaged));
        for junk in ["", "value", "lgs1:", "lgs1:zz", "lgs1:0badc0de:!!"] {
            assert!(k.open("c", junk).is_err(), "{junk:?}");
        }
        let other = keyring();
        assert_eq!(
            other.open("c", &sealed),
            Err(OpenError::UnknownKey(k.current_id().to_string()))
        );
    }

    #[test]
    fn a_later_key_seals_and_every_key_opens_what_it_sealed() {
        let old = keyring();
        let sealed_old = old.seal("c", "one");
        let old_text = new_key_file_text();
        let both = Keyring::parse(&format!("{old_text}\n{}", new_key_file_text())).unwrap();
        assert_ne!(
            both.current_id(),
            Keyring::parse(&old_text).unwrap().current_id()
        );
        let first = Keyring::parse(&old_text).unwrap();
        let sealed = first.seal("c", "two");
        assert_eq!(both.open("c", &sealed).unwrap(), "two");
        assert_eq!(key_id_of(&both.seal("c", "x")), Some(both.current_id()));
        assert!(old.open("c", &sealed_old).is_ok());
    }

    #[test]
    fn a_malformed_key_file_is_refused_naming_the_line() {
        let good = "key 0a1b2c3d 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        assert!(Keyring::parse(good).is_ok());
        assert!(Keyring::parse(&format!("# comment\n\n{good}\n")).is_ok());
        let cases = [
            ("", "no key"),
            ("# only a comment", "no key"),
            ("key 0a1b2c3d 0001", "line 1: the key must be 64 hex"),
            (
                "key 0A1B2C3D 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                "line 1: the key id",
            ),
            ("secret", "line 1: expected"),
            (&format!("{good} extra"), "line 1: expected"),
            (
                &format!("{good}\n{good}"),
                "line 2: this key id is given twice",
            ),
        ];
        for (text, expected) in cases {
            let err = Keyring::parse(text).unwrap_err();
            assert!(err.starts_with(expected), "{text:?}: {err}");
            assert!(!err.contains("0001020304"), "never the key: {err}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_key_file_is_made_once_with_mode_0600_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("make");
        let (made, created) = load_or_create(&dir).unwrap();
        assert!(created);
        let path = key_path(&dir);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (read, created) = load_or_create(&dir).unwrap();
        assert!(!created);
        assert_eq!(read.current_id(), made.current_id());
        assert_eq!(read.open("c", &made.seal("c", "v")).unwrap(), "v");
        assert!(!dir.join("labgate.key.new").exists(), "no temporary left");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_damaged_or_open_key_file_refuses_the_start_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("bad");
        let path = key_path(&dir);
        crate::process::write_private(&path, "key nonsense\n").unwrap();
        let err = load_or_create(&dir).unwrap_err();
        assert!(
            err.contains("malformed") && err.contains("restore"),
            "{err}"
        );
        std::fs::write(&path, new_key_file_text()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(&dir).unwrap_err();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let err = load_or_create(&dir).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_output_names_key_ids_only() {
        let text = "key 0a1b2c3d 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        let shown = format!("{:?}", Keyring::parse(text).unwrap());
        assert_eq!(shown, "Keyring { ids: [\"0a1b2c3d\"] }");
    }
}
