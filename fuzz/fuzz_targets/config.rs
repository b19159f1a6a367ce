//! The configuration file: loader, then an endpoint built from what it accepted.
//! See `fuzz/exercise.rs` (`exercise::config`) for the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../exercise.rs"]
mod exercise;

fuzz_target!(|data: &[u8]| {
    exercise::config(data);
});
