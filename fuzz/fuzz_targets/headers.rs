//! Typed header values (Via, name-addr, CSeq, Event, Subscription-State, URI, delta-seconds).
//! See `fuzz/exercise.rs` (`exercise::headers`) for the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../exercise.rs"]
mod exercise;

fuzz_target!(|data: &[u8]| {
    exercise::headers(data);
});
