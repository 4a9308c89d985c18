#![allow(unreachable_pub, reason = "shared by test binaries")]
pub mod certs;
