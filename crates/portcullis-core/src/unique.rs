//! Random bits for identifiers that must be unique but are not secret: audit event ids,
//! correlation ids, record ids.
//!
//! A request handler draws several of these. Asking the operating system for each (one
//! `getrandom` system call per id) was a measurable share of an audited request's CPU time,
//! so each thread keeps a ChaCha12 generator ([`rand::rngs::StdRng`]) seeded once from the
//! operating system. Keys, tokens and other secrets do not come from here: they are drawn
//! from the system source directly.

use std::cell::RefCell;

use rand::rngs::{StdRng, SysRng};
use rand::{Rng, SeedableRng};

/// The operating system's random source could not seed this thread's generator.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the system random source failed: {0}")]
pub struct RandomError(String);

thread_local! {
    static GENERATOR: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// `N` random bytes for a unique identifier, from this thread's generator (seeded from the
/// operating system on first use).
///
/// ```
/// let a: [u8; 16] = portcullis_core::unique_bytes()?;
/// let b: [u8; 16] = portcullis_core::unique_bytes()?;
/// assert_ne!(a, b);
/// # Ok::<(), portcullis_core::RandomError>(())
/// ```
///
/// # Errors
///
/// [`RandomError`] when the system source fails to seed the generator; no bytes are made
/// up in that case.
pub fn unique_bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    GENERATOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let generator = match &mut *slot {
            Some(generator) => generator,
            empty => empty
                .insert(StdRng::try_from_rng(&mut SysRng).map_err(|e| RandomError(e.to_string()))?),
        };
        let mut bytes = [0u8; N];
        generator.fill_bytes(&mut bytes);
        Ok(bytes)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn draws_differ_within_and_across_threads() {
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            assert!(seen.insert(unique_bytes::<8>().unwrap()));
        }
        let others: Vec<[u8; 8]> = (0..4)
            .map(|_| std::thread::spawn(|| unique_bytes::<8>().unwrap()))
            .map(|t| t.join().unwrap())
            .collect();
        for other in others {
            assert!(seen.insert(other), "a new thread repeated a draw");
        }
    }

    #[test]
    fn bytes_are_not_constant() {
        // 32 bytes that are all equal would mean the generator is not filling them.
        let bytes: [u8; 32] = unique_bytes().unwrap();
        assert!(bytes.iter().any(|b| *b != bytes[0]));
    }
}
