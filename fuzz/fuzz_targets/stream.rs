//! Stream (TCP) framing. Input layout: `n` (1 byte), then `n % 8 + 1` chunk sizes
//! (1 byte each, 0 meaning 1), then the stream bytes, which are pushed into a
//! `StreamFramer` in chunks of those sizes (cycled); every framed message goes
//! through the same checks as a datagram (`fuzz/exercise.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../exercise.rs"]
mod exercise;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = (n as usize % 8 + 1).min(rest.len());
    let (sizes, stream) = rest.split_at(n);
    exercise::stream(stream, sizes);
});
