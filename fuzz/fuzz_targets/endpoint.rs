//! The whole sans-IO core: arbitrary messages from phones (UDP and TCP) and from
//! the upstream, with time passing, TCP connections closing and restarts from the
//! in-memory state store between them, fed into one `Endpoint` (validation,
//! transactions, subscription translation, proxy, persistence). Nothing may
//! panic, and every transmit must be non-empty and go to a loopback peer.
//!
//! Input: chunks separated by `\0\0`; the first byte of a chunk picks what
//! happens (`exercise::endpoint_sequence` has the table).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../exercise.rs"]
mod exercise;

fuzz_target!(|data: &[u8]| {
    exercise::endpoint_sequence(data);
});
