//! An upstream dialog-info (RFC 4235) body: parser, dialog stream, merge, rendering by every shipped profile (re-parsed).
//! See `fuzz/exercise.rs` (`exercise::dialog_info`) for the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../exercise.rs"]
mod exercise;

fuzz_target!(|data: &[u8]| {
    exercise::dialog_info(data);
});
