#!/bin/sh
# Build the seed corpora from the test data (tests/data/rfc4475, tests/data/samples).
# framer: the messages as they are. stream: each message behind a chunk-size header
# (see fuzz_targets/stream.rs), plus all samples back to back on one stream.
set -eu
cd "$(dirname "$0")"
mkdir -p corpus/framer corpus/stream corpus/endpoint
for f in ../tests/data/rfc4475/*.dat ../tests/data/samples/*.sip; do
    b=$(basename "$f")
    cp "$f" "corpus/framer/$b"
    # 4 sizes: 1, 7, 13, 64
    { printf '\003\001\007\015\100'; cat "$f"; } > "corpus/stream/$b"
done
{ printf '\000\000'; cat ../tests/data/samples/*.sip; } > corpus/stream/all-samples-bytewise
{ printf '\000\377'; cat ../tests/data/samples/*.sip; } > corpus/stream/all-samples-255
# endpoint: each message from a phone (UDP), from the upstream, on a TCP phone
# connection; and a subscription story: SUBSCRIBE, time, upstream NOTIFYs.
for f in ../tests/data/rfc4475/*.dat ../tests/data/samples/*.sip; do
    b=$(basename "$f")
    for op in 0 1 2; do
        { printf "\\00$op"; cat "$f"; } > "corpus/endpoint/$op-$b"
    done
done
S=../tests/data/samples
{ printf '\000'; cat $S/subscribe_expires3600.sip; printf '\000\000\003\000\000\001'; cat $S/notify.sip;
  printf '\000\000\377\000\000\000'; cat $S/subscribe_expires0.sip; } > corpus/endpoint/story
