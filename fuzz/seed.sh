#!/bin/sh
# Build the seed corpora from the test data (tests/data/rfc4475, tests/data/samples).
# framer: the messages as they are. stream: each message behind a chunk-size header
# (see fuzz_targets/stream.rs), plus all samples back to back on one stream.
set -eu
cd "$(dirname "$0")"
mkdir -p corpus/framer corpus/stream
for f in ../tests/data/rfc4475/*.dat ../tests/data/samples/*.sip; do
    b=$(basename "$f")
    cp "$f" "corpus/framer/$b"
    # 4 sizes: 1, 7, 13, 64
    { printf '\003\001\007\015\100'; cat "$f"; } > "corpus/stream/$b"
done
{ printf '\000\000'; cat ../tests/data/samples/*.sip; } > corpus/stream/all-samples-bytewise
{ printf '\000\377'; cat ../tests/data/samples/*.sip; } > corpus/stream/all-samples-255
