//! The hash chain: how records are sealed, decoded and verified.
//!
//! A record is the JSON object `{"v":1,"seq":N,"prev":"<hex>","event":{…},"hash":"<hex>"}`
//! with keys in sorted order. Its *canonical bytes* are that object without `"hash"`,
//! serialized with sorted keys and no whitespace; `hash` is the SHA-256 of those bytes, and
//! `prev` is the previous record's `hash` (64 zeros for the first). Sequence numbers start at
//! 1 and have no gaps, across rotated files too.

use aws_lc_rs::digest::{SHA256, digest};
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

impl Default for ChainHead {
    /// [`ChainHead::EMPTY`].
    fn default() -> Self {
        ChainHead::EMPTY
    }
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

/// One sealed record, ready to store.
#[derive(Debug, Clone)]
pub(crate) struct SealedLine {
    pub(crate) receipt: Receipt,
    pub(crate) head: ChainHead,
    /// The JSON line (no trailing newline).
    pub(crate) line: String,
}

fn hash_of(body: &Map<String, Value>) -> Result<Hash, AuditError> {
    let canonical = serde_json::to_vec(body).map_err(|e| AuditError::Malformed(e.to_string()))?;
    Ok(sha256(&canonical))
}

fn sha256(bytes: &[u8]) -> Hash {
    let mut hash = GENESIS;
    hash.copy_from_slice(digest(&SHA256, bytes).as_ref());
    hash
}

/// Seals an event after `head`. `event_json` must be the compact serialization of the
/// event's JSON value with sorted keys (what `serde_json` writes for a `Value`), so that the
/// canonical bytes built around it here are exactly what the verifier rebuilds from the
/// parsed line. The event is serialized once, by the caller; this only concatenates.
pub(crate) fn seal(head: &ChainHead, id: String, event_json: &str) -> SealedLine {
    let seq = head.seq + 1;
    let prev = hex_of(&head.hash);
    let seq_text = seq.to_string();
    let tail = [
        ",\"prev\":\"",
        prev.as_str(),
        "\",\"seq\":",
        seq_text.as_str(),
        ",\"v\":1}",
    ];
    let mut canonical = String::with_capacity(event_json.len() + 128);
    canonical.push_str("{\"event\":");
    canonical.push_str(event_json);
    tail.iter().for_each(|piece| canonical.push_str(piece));
    let hash = sha256(canonical.as_bytes());
    let hash_hex = hex_of(&hash);
    let mut line = String::with_capacity(canonical.len() + 80);
    line.push_str("{\"event\":");
    line.push_str(event_json);
    line.push_str(",\"hash\":\"");
    line.push_str(&hash_hex);
    line.push('"');
    tail.iter().for_each(|piece| line.push_str(piece));
    SealedLine {
        receipt: Receipt {
            id,
            seq,
            hash: hash_hex,
        },
        head: ChainHead { seq, hash },
        line,
    }
}

/// Whether the stored bytes of `line` — with its `"hash"` member cut out, as the record
/// format describes — hash to `stored`. Parsing and re-encoding alone would accept a line
/// rewritten with the same meaning for a parser that keeps the last of two duplicate keys,
/// while another reader (keeping the first) sees something else; the bytes must be the ones
/// that were sealed.
pub(crate) fn stored_bytes_hash_to(line: &[u8], stored: &Hash) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let member = format!(",\"hash\":\"{}\"", hex_of(stored));
    let member = member.as_bytes();
    let Some(at) = line
        .windows(member.len())
        .rposition(|window| window == member)
    else {
        return false;
    };
    let mut bytes = Vec::with_capacity(line.len());
    bytes.extend_from_slice(line.get(..at).unwrap_or_default());
    bytes.extend_from_slice(line.get(at + member.len()..).unwrap_or_default());
    sha256(&bytes) == *stored
}

/// Lower-case hex of a hash, through a byte buffer (`hex::encode` goes char by char, and
/// sealing writes two of these per record).
fn hex_of(hash: &Hash) -> String {
    let mut out = [0u8; 64];
    match hex::encode_to_slice(hash, &mut out) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        // The buffer is exactly twice the hash: cannot happen.
        Err(_) => hex::encode(hash),
    }
}

fn hex32(value: Option<&Value>, what: &str) -> Result<Hash, AuditError> {
    let text = value
        .and_then(Value::as_str)
        .ok_or_else(|| AuditError::Malformed(format!("`{what}` is missing or not a string")))?;
    // Only the canonical (lower-case) spelling: any other byte change must be detectable.
    if !text
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(AuditError::Malformed(format!(
            "`{what}` must be 64 lower-case hex digits"
        )));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hex_of_is_lower_case_hex() {
        let mut hash = GENESIS;
        hash.iter_mut()
            .zip(0u8..)
            .for_each(|(b, i)| *b = i.wrapping_mul(37));
        assert_eq!(hex_of(&hash), hex::encode(hash));
        assert_eq!(hex_of(&GENESIS), "0".repeat(64));
    }

    /// `seal` builds its bytes by hand; they must be exactly what the verifier rebuilds.
    #[test]
    fn sealed_lines_decode_to_their_own_hash() {
        let event = json!({"b": [1, 2.5, "é\"\\\\"], "a": {"z": null, "y": true}});
        let json = serde_json::to_string(&event).unwrap();
        let first = seal(&ChainHead::EMPTY, "id-1".into(), &json);
        let second = seal(&first.head, "id-2".into(), &json);
        for sealed in [&first, &second] {
            let decoded = decode(sealed.line.as_bytes()).unwrap();
            assert_eq!(decoded.computed_hash, decoded.stored_hash);
            assert_eq!(decoded.seq, sealed.head.seq);
            assert_eq!(decoded.event, event);
        }
        assert_eq!(
            decode(second.line.as_bytes()).unwrap().prev,
            first.head.hash
        );
        let reserialized =
            serde_json::to_string(&serde_json::from_str::<Value>(&first.line).unwrap()).unwrap();
        assert_eq!(
            reserialized, first.line,
            "the line is in canonical key order"
        );
    }

    proptest::proptest! {
        /// A float in an event is written in its shortest form, which the verifier parses
        /// back and writes again to hash: both must give the same bytes for every float, or
        /// an untouched record reads as altered (serde_json's default float parsing is off by
        /// one unit in the last place for about one float in ten; `float_roundtrip` is not).
        #[test]
        fn a_sealed_float_verifies(bits in proptest::num::u64::ANY, plain in -1e9..1e9f64) {
            for x in [f64::from_bits(bits), plain, 0.925_933_892_649_635_9] {
                let event = serde_json::to_string(&json!({ "fields": { "x": x } })).unwrap();
                let sealed = seal(&ChainHead::EMPTY, "id".into(), &event);
                let decoded = decode(sealed.line.as_bytes()).unwrap();
                proptest::prop_assert_eq!(decoded.computed_hash, decoded.stored_hash, "{}", sealed.line);
            }
        }
    }
}
