//! An upstream PIDF (RFC 3863/4480) body: parser, presence stream (both empty-body policies), merge, rendering.
//! See `fuzz/exercise.rs` (`exercise::pidf`) for the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../exercise.rs"]
mod exercise;

fuzz_target!(|data: &[u8]| {
    exercise::pidf(data);
});
