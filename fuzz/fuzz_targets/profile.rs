//! A device-model profile file: loader, then rendering of every state (re-parsed).
//! See `fuzz/exercise.rs` (`exercise::profile`) for the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../exercise.rs"]
mod exercise;

fuzz_target!(|data: &[u8]| {
    exercise::profile(data);
});
