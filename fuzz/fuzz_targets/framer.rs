//! Datagram framing: parse the input as one UDP datagram, then run every typed
//! accessor, `check_request`/`check_response`, the editor (push_via, pop_via,
//! set_max_forwards, pop_route, ensure_content_length) and re-parse the result.
//! See `fuzz/exercise.rs` for the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../exercise.rs"]
mod exercise;

fuzz_target!(|data: &[u8]| {
    exercise::datagram(data);
});
