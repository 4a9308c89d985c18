//! Several instances of a service on one PostgreSQL (feature `postgres`): what must not
//! live in one process once there are two.
//!
//! - [`PostgresSessionKeys`]: the session signing keys, shared and rotating. A new key is
//!   published ahead of its first signature, signs for a while, then only verifies until the
//!   last token it signed has expired; every key is sealed at rest under a [`SealingKey`]
//!   kept outside the database. A restart signs nobody out, and every instance accepts the
//!   others' sessions.
//! - [`PostgresLoginAttempts`]: failed password logins counted for the service as a whole,
//!   so the guessing limit of [`PasswordLogin`](crate::PasswordLogin) holds across instances.
//! - [`PostgresSpentIds`]: single-use ids (a broker token's `jti`) spent by any instance: an
//!   id spent on one instance is refused on every other, and across restarts.
//!
//! [`SealingKey`]: crate::SealingKey

mod login_attempts;
mod session_keys;
mod spent;

pub use login_attempts::PostgresLoginAttempts;
pub use session_keys::{KeyRefresher, PostgresSessionKeys, SESSION_KEYS_CHANNEL, SessionKeyPolicy};
pub use spent::{PostgresSpentIds, SPENT_ID_GRACE, SpentIdPurger};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix seconds (0 before 1970), as the tables keep times.
fn to_secs(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn from_secs(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.max(0).unsigned_abs())
}

fn secs_of(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}
