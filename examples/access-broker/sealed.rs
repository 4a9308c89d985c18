//! Request bodies kept for retry, sealed (AES-256-GCM) before they enter the audit log: a
//! body may carry a password or a customer's data, and whoever can read the log must not
//! read those. Only the broker, holding the key, opens them again to retry.

use std::io::Write as _;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;

/// Bound into every sealed body, so nothing sealed for another purpose opens as one.
const PURPOSE: &[u8] = b"access-broker retry body v1";
const KEY_LEN: usize = 32;

/// Seals and opens kept bodies with the broker's retry key.
pub(crate) struct BodySealer {
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for BodySealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodySealer { key: <redacted> }")
    }
}

impl BodySealer {
    /// The key in `path` (32 bytes), made (readable by the owner only) if the file is
    /// missing. It outlives restarts, so requests recorded before one can still be retried.
    ///
    /// A new key is written whole to a file of its own, then linked into place: `path`
    /// never holds half a key (a crash mid-write leaves only the stray file), and of two
    /// brokers starting at once, one key wins and both use it.
    pub(crate) fn load_or_create(path: &Path) -> Result<Self, String> {
        let shown = path.display();
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(path)?,
            Err(e) => return Err(format!("{shown}: {e}")),
        };
        Self::from_key(&bytes).map_err(|e| format!("{shown}: {e}"))
    }

    /// A sealer with this key (32 bytes): the one kept in the store database, in fleet mode.
    pub(crate) fn from_key(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() != KEY_LEN {
            return Err(format!(
                "a retry key is {KEY_LEN} bytes, this one has {}",
                bytes.len()
            ));
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| "not an AES-256 key")?;
        Ok(BodySealer {
            key: LessSafeKey::new(key),
            random: SystemRandom::new(),
        })
    }

    /// A fresh key linked into place at `path`, or the key another process linked first.
    fn create(path: &Path) -> Result<Vec<u8>, String> {
        let shown = path.display();
        let mut key = [0u8; KEY_LEN];
        let random = SystemRandom::new();
        random
            .fill(&mut key)
            .map_err(|_| "the system random source failed".to_owned())?;
        let mut tag = [0u8; 8];
        random
            .fill(&mut tag)
            .map_err(|_| "the system random source failed".to_owned())?;
        let mut staged = path.as_os_str().to_owned();
        staged.push(format!(".{}.new", hex::encode(tag)));
        let staged = std::path::PathBuf::from(staged);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options.open(&staged).and_then(|mut file| {
            file.write_all(&key)?;
            file.sync_all()
        });
        let linked = written.and_then(|()| std::fs::hard_link(&staged, path));
        let _ = std::fs::remove_file(&staged);
        match linked {
            Ok(()) => Ok(key.to_vec()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::read(path).map_err(|e| format!("{shown}: {e}"))
            }
            Err(e) => Err(format!("{shown}: {e}")),
        }
    }

    /// `body` sealed under a fresh random nonce: base64 of nonce ‖ ciphertext ‖ tag.
    pub(crate) fn seal(&self, body: &[u8]) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| "the system random source failed".to_owned())?;
        let mut sealed = body.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(PURPOSE),
                &mut sealed,
            )
            .map_err(|_| "sealing the body failed".to_owned())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    /// The body `sealed` holds, if this key sealed it and nothing changed it since.
    pub(crate) fn open(&self, sealed: &str) -> Result<Vec<u8>, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| "the kept body is not base64".to_owned())?;
        if bytes.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err("the kept body is too short to be sealed".into());
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| "the kept body has no nonce".to_owned())?;
        let mut rest = rest.to_vec();
        let body = self
            .key
            .open_in_place(nonce, Aad::from(PURPOSE), &mut rest)
            .map_err(|_| {
                "the kept body does not open with this broker's retry key (another key, or altered)"
                    .to_owned()
            })?;
        Ok(body.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("access-broker-sealed-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("retry.key")
    }

    #[test]
    fn bodies_open_only_with_the_key_that_sealed_them() {
        let path = scratch("roundtrip");
        let sealer = BodySealer::load_or_create(&path).unwrap();
        let body = br#"{"password":"hunter2"}"#;
        let sealed = sealer.seal(body).unwrap();
        assert!(!sealed.contains("hunter2"));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&sealed)
            .unwrap();
        assert!(!decoded.windows(7).any(|w| w == b"hunter2"));
        assert_ne!(
            sealed,
            sealer.seal(body).unwrap(),
            "a fresh nonce each time"
        );
        assert_eq!(sealer.open(&sealed).unwrap(), body);
        // The same file after a restart opens it; another key does not.
        assert_eq!(
            BodySealer::load_or_create(&path)
                .unwrap()
                .open(&sealed)
                .unwrap(),
            body
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = BodySealer::load_or_create(&scratch("other")).unwrap();
        assert!(other.open(&sealed).unwrap_err().contains("does not open"));
        assert!(format!("{sealer:?}").contains("redacted"));
    }

    #[test]
    fn brokers_starting_at_once_share_one_key_and_leave_no_stray_files() {
        for round in 0..20 {
            let path = scratch(&format!("race-{round}"));
            let start = std::sync::Barrier::new(16);
            let sealers: Vec<BodySealer> = std::thread::scope(|scope| {
                let starts: Vec<_> = (0..16)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            BodySealer::load_or_create(&path).unwrap()
                        })
                    })
                    .collect();
                starts.into_iter().map(|s| s.join().unwrap()).collect()
            });
            let sealed = sealers[0].seal(b"shared").unwrap();
            for sealer in &sealers {
                assert_eq!(sealer.open(&sealed).unwrap(), b"shared");
            }
            let files = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
            assert_eq!(files, 1, "only the key file is left");
        }
    }

    #[test]
    fn altered_or_malformed_seals_are_refused() {
        let sealer = BodySealer::load_or_create(&scratch("altered")).unwrap();
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(sealer.seal(b"body").unwrap())
            .unwrap();
        for i in 0..sealed.len() {
            let mut changed = sealed.clone();
            changed[i] ^= 1;
            let text = base64::engine::general_purpose::STANDARD.encode(changed);
            assert!(sealer.open(&text).is_err(), "byte {i}");
        }
        assert!(sealer.open("not base64!").is_err());
        assert!(sealer.open("AAAA").is_err());
        assert!(sealer.open("").is_err());
        let short = scratch("short");
        std::fs::write(&short, b"too short").unwrap();
        assert!(
            BodySealer::load_or_create(&short)
                .unwrap_err()
                .contains("32 bytes")
        );
    }
}
