#!/bin/sh
# Build the seed corpora from the test data (tests/data/rfc4475, tests/data/samples,
# tests/data/presence, tests/data/ipv6), the shipped profiles and the example config.
# framer: the messages as they are. stream: each message behind a chunk-size header
# (see fuzz_targets/stream.rs), plus all samples back to back on one stream.
set -eu
cd "$(dirname "$0")"
mkdir -p corpus/framer corpus/stream corpus/endpoint corpus/headers corpus/dialog_info \
    corpus/pidf corpus/profile corpus/config
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
# the same story with a restart of the bridge after the upstream's NOTIFY, and a
# TCP phone whose connection closes
{ printf '\000'; cat $S/subscribe_expires3600.sip; printf '\000\000\003\000\000\001'; cat $S/notify.sip;
  printf '\000\000\004\000\000\003\010\000\000\001'; cat $S/notify.sip; printf '\000\000\377\000\000\000';
  cat $S/subscribe_expires0.sip; } > corpus/endpoint/story-restart
{ printf '\002'; cat $S/subscribe_expires3600.sip; printf '\000\000\006\000\000\004\000\000\003\100'; } \
    > corpus/endpoint/tcp-close-restart
for f in ../tests/data/ipv6/*.sip; do
    [ -e "$f" ] || continue
    b=$(basename "$f")
    cp "$f" "corpus/framer/ipv6-$b"
    printf '\000' | cat - "$f" > "corpus/endpoint/0-ipv6-$b"
done

# headers: every header value of the sample messages (name and colon cut off),
# and every Request-URI
i=0
for f in ../tests/data/rfc4475/*.dat ../tests/data/samples/*.sip ../tests/data/ipv6/*.sip; do
    [ -e "$f" ] || continue
    tr -d '\r' < "$f" | sed -n '1,/^$/p' | while IFS= read -r line; do
        case "$line" in
            *SIP/2.0) v=${line#* }; v=${v% SIP/2.0} ;;
            *:*) v=${line#*:}; v=${v# } ;;
            *) continue ;;
        esac
        [ -n "$v" ] && printf '%s' "$v" > "corpus/headers/$(basename "$f")-$(printf '%s' "$line" | cksum | cut -d' ' -f1)"
    done
done
# dialog-info and PIDF documents
for f in ../tests/data/presence/*.xml; do
    case "$(basename "$f")" in
        *pidf*|*presence*) cp "$f" corpus/pidf/ ;;
        *) cp "$f" corpus/dialog_info/ ;;
    esac
done
# profiles and the configuration
cp ../profiles/*.toml corpus/profile/
cp ../blf-bridge.example.toml corpus/config/example.toml
printf '%s' "$(sed -n '/^\[listen\]/,$p' exercise.rs | sed -n '1,/^"#;/p' | sed '$d')" > corpus/config/endpoint.toml
