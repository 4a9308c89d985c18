//! The hash chain: how records are sealed, decoded and verified.
//!
//! A record is the JSON object `{"v":1,"seq":N,"prev":"<hex>","event":{…},"hash":"<hex>"}`
//! with keys in sorted order. Its *canonical bytes* are that object without `"hash"`,
//! serialized with sorted keys and no whitespace; `hash` is the SHA-256 of those bytes, and
//! `prev` is the previous record's `hash` (64 zeros for the first). Sequence numbers start at
//! 1 and have no gaps, across rotated files too.

use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{AuditError, AuditEvent};

/// The record format version.
pub const RECORD_VERSION: u64 = 1;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The `prev` of the first record.
pub const GENESIS: Hash = [0; 32];

/// The end of a chain: the last record's sequence number and hash (`0` and [`GENESIS`] for an
/// empty log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainHead {
    /// The last sequence number.
    pub seq: u64,
    /// The last hash.
    pub hash: Hash,
}

impl ChainHead {
    /// The head of an empty log.
    pub const EMPTY: ChainHead = ChainHead {
        seq: 0,
        hash: GENESIS,
    };
}

/// What `record` acknowledges: the event is durable at this position of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Receipt {
    /// The event's id.
    pub id: String,
    /// Its sequence number.
    pub seq: u64,
    /// Its record hash, hex.
    pub hash: String,
}

/// A record as read back: position, links and the event.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Sequence number.
    pub seq: u64,
    /// The previous record's hash.
    pub prev: Hash,
    /// This record's hash, as stored.
    pub hash: Hash,
    /// The event.
    pub event: AuditEvent,
}

/// A sealed record, ready to store.
#[derive(Debug, Clone)]
pub(crate) struct Sealed {
    pub(crate) receipt: Receipt,
    pub(crate) head: ChainHead,
    /// The JSON line (no trailing newline).
    pub(crate) line: String,
}

fn body(seq: u64, prev: &Hash, event: Value) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("event".into(), event);
    body.insert("prev".into(), Value::String(hex::encode(prev)));
    body.insert("seq".into(), Value::from(seq));
    body.insert("v".into(), Value::from(RECORD_VERSION));
    body
}

fn hash_of(body: &Map<String, Value>) -> Result<Hash, AuditError> {
    let canonical = serde_json::to_vec(body).map_err(|e| AuditError::Malformed(e.to_string()))?;
    let mut hash = GENESIS;
    hash.copy_from_slice(digest(&SHA256, &canonical).as_ref());
    Ok(hash)
}

/// Seals `event` (its JSON form, already redacted and checked) after `head`.
pub(crate) fn seal(head: &ChainHead, id: String, event: Value) -> Result<Sealed, AuditError> {
    let seq = head.seq + 1;
    let mut body = body(seq, &head.hash, event);
    let hash = hash_of(&body)?;
    body.insert("hash".into(), Value::String(hex::encode(hash)));
    let line = serde_json::to_string(&body).map_err(|e| AuditError::Malformed(e.to_string()))?;
    Ok(Sealed {
        receipt: Receipt {
            id,
            seq,
            hash: hex::encode(hash),
        },
        head: ChainHead { seq, hash },
        line,
    })
}

fn hex32(value: Option<&Value>, what: &str) -> Result<Hash, AuditError> {
    let text = value
        .and_then(Value::as_str)
        .ok_or_else(|| AuditError::Malformed(format!("`{what}` is missing or not a string")))?;
    let mut out = GENESIS;
    hex::decode_to_slice(text, &mut out)
        .map_err(|e| AuditError::Malformed(format!("`{what}` is not 64 hex digits: {e}")))?;
    Ok(out)
}

/// A decoded line: its fields, and the hash its content actually has.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The sequence number it claims.
    pub seq: u64,
    /// The previous hash it claims.
    pub prev: Hash,
    /// The hash it claims.
    pub stored_hash: Hash,
    /// The hash of its canonical bytes.
    pub computed_hash: Hash,
    /// The event, as JSON.
    pub event: Value,
}

impl Decoded {
    /// The typed record.
    ///
    /// # Errors
    ///
    /// [`AuditError::Malformed`] if the event is not a valid [`AuditEvent`].
    pub fn into_record(self) -> Result<AuditRecord, AuditError> {
        let event = serde_json::from_value(self.event)
            .map_err(|e| AuditError::Malformed(format!("event: {e}")))?;
        Ok(AuditRecord {
            seq: self.seq,
            prev: self.prev,
            hash: self.stored_hash,
            event,
        })
    }
}

/// Decodes one stored line (untrusted input: never panics).
///
/// # Errors
///
/// [`AuditError::Malformed`] if it is not a record of this version.
pub fn decode(line: &[u8]) -> Result<Decoded, AuditError> {
    let value: Value =
        serde_json::from_slice(line).map_err(|e| AuditError::Malformed(e.to_string()))?;
    let Value::Object(mut object) = value else {
        return Err(AuditError::Malformed("a record is a JSON object".into()));
    };
    let stored_hash = hex32(object.get("hash"), "hash")?;
    object.remove("hash");
    if object.get("v").and_then(Value::as_u64) != Some(RECORD_VERSION) {
        return Err(AuditError::Malformed(format!(
            "`v` must be {RECORD_VERSION}"
        )));
    }
    if object.len() != 4 {
        return Err(AuditError::Malformed(
            "a record has exactly the keys v, seq, prev, event, hash".into(),
        ));
    }
    let seq = object
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or_else(|| AuditError::Malformed("`seq` is missing or not a number".into()))?;
    let prev = hex32(object.get("prev"), "prev")?;
    let computed_hash = hash_of(&object)?;
    let event = object
        .remove("event")
        .ok_or_else(|| AuditError::Malformed("`event` is missing".into()))?;
    Ok(Decoded {
        seq,
        prev,
        stored_hash,
        computed_hash,
        event,
    })
}
