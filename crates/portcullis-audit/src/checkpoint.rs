//! Signed checkpoints: a chain head signed with Ed25519, exported somewhere the log's writer
//! cannot rewrite, so a verifier can detect a truncated tail.

use std::fmt;

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::AuditError;
use crate::chain::{ChainHead, Hash};

mod file;

pub use file::{CHECKPOINTS_FILE, CheckpointFile, PUBLIC_KEY_FILE};

/// A signed statement: the log had `seq` records ending in `head` at `time_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The last sequence number covered.
    pub seq: u64,
    /// That record's hash, hex.
    pub head: String,
    /// When it was signed, in milliseconds since the epoch.
    pub time_ms: u64,
    /// The signer's Ed25519 public key, hex.
    pub public_key: String,
    /// The signature over [`Checkpoint::message`], hex.
    pub signature: String,
}

impl Checkpoint {
    /// The signed bytes.
    #[must_use]
    pub fn message(seq: u64, head: &str, time_ms: u64) -> Vec<u8> {
        format!("portcullis-audit-checkpoint/v1\n{seq}\n{head}\n{time_ms}").into_bytes()
    }

    /// Checks the signature against `trusted_key` (raw 32-byte Ed25519 public key), and that
    /// the checkpoint names that key.
    ///
    /// # Errors
    ///
    /// [`AuditError::Crypto`] if the key differs or the signature does not verify.
    pub fn verify(&self, trusted_key: &[u8]) -> Result<(), AuditError> {
        if hex::encode(trusted_key) != self.public_key {
            return Err(AuditError::Crypto(format!(
                "checkpoint {} is signed by {}, not the trusted key",
                self.seq, self.public_key
            )));
        }
        let signature = hex::decode(&self.signature)
            .map_err(|e| AuditError::Crypto(format!("signature is not hex: {e}")))?;
        UnparsedPublicKey::new(&ED25519, trusted_key)
            .verify(
                &Checkpoint::message(self.seq, &self.head, self.time_ms),
                &signature,
            )
            .map_err(|_| AuditError::Crypto(format!("checkpoint {} has a bad signature", self.seq)))
    }

    /// The head as bytes.
    ///
    /// # Errors
    ///
    /// [`AuditError::Crypto`] if it is not 64 hex digits.
    pub fn head_hash(&self) -> Result<Hash, AuditError> {
        let mut out = [0; 32];
        hex::decode_to_slice(&self.head, &mut out)
            .map_err(|e| AuditError::Crypto(format!("checkpoint head is not a hash: {e}")))?;
        Ok(out)
    }
}

/// Signs checkpoints. `Debug` shows only the public key.
pub struct CheckpointSigner {
    key: Ed25519KeyPair,
}

impl fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("public_key", &hex::encode(self.public_key()))
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// A new random key; returns the signer and its PKCS#8 document to store (secretly).
    ///
    /// # Errors
    ///
    /// [`AuditError::Crypto`] if the system random source fails.
    pub fn generate() -> Result<(Self, Vec<u8>), AuditError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .map_err(|_| AuditError::Crypto("could not generate an Ed25519 key".into()))?;
        let signer = CheckpointSigner::from_pkcs8(pkcs8.as_ref())?;
        Ok((signer, pkcs8.as_ref().to_vec()))
    }

    /// A signer from a PKCS#8 Ed25519 key.
    ///
    /// # Errors
    ///
    /// [`AuditError::Crypto`] if it is not one.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, AuditError> {
        Ed25519KeyPair::from_pkcs8(pkcs8)
            .map(|key| CheckpointSigner { key })
            .map_err(|e| AuditError::Crypto(format!("not a PKCS#8 Ed25519 key: {e}")))
    }

    /// The raw public key, for verifiers.
    #[must_use]
    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    /// Signs `head` at `time_ms`.
    #[must_use]
    pub fn sign(&self, head: &ChainHead, time_ms: u64) -> Checkpoint {
        let head_hex = hex::encode(head.hash);
        let signature = self
            .key
            .sign(&Checkpoint::message(head.seq, &head_hex, time_ms));
        Checkpoint {
            seq: head.seq,
            head: head_hex,
            time_ms,
            public_key: hex::encode(self.public_key()),
            signature: hex::encode(signature.as_ref()),
        }
    }
}
