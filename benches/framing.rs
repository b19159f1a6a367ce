//! Framing throughput: parse a datagram and read what the bridge needs to route a
//! SUBSCRIBE or NOTIFY (top Via branch, Call-ID, CSeq, From/To tags, Event and its
//! id, Expires, Subscription-State). One iteration = one message, reported as
//! messages per second (`Throughput::Elements(1)`).
//!
//! The input is a `Bytes` cloned from a static buffer each iteration, which is
//! what the runtime hands the core (a refcount bump, no copy).
//!
//! Run: `cargo bench --bench framing -- --warm-up-time 1 --measurement-time 3`.
//! Results and machine: docs/benchmarks.md.

use blf_bridge::sip::header::{SubscriptionState, ezk_parse};
use blf_bridge::sip::{SipMessage, SubState};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const SAMPLES: &[(&str, &[u8])] = &[
    (
        "subscribe_expires3600",
        include_bytes!("../tests/data/samples/subscribe_expires3600.sip"),
    ),
    ("notify", include_bytes!("../tests/data/samples/notify.sip")),
    (
        "notify_compact",
        include_bytes!("../tests/data/samples/notify_compact.sip"),
    ),
];

/// What the routing code reads from every SUBSCRIBE/NOTIFY. Returns a checksum so
/// nothing can be optimised away.
fn frame_and_read(buf: &Bytes) -> usize {
    let Ok(m) = SipMessage::parse(buf.clone()) else {
        return 0;
    };
    let mut n = 0;
    n += m.branch().map_or(0, <[u8]>::len);
    n += m.call_id().map_or(0, <[u8]>::len);
    if let Some(Ok(c)) = m.cseq() {
        n += c.seq as usize + c.method.len();
    }
    n += m.from_tag().map_or(0, <[u8]>::len);
    n += m.to_tag().map_or(0, <[u8]>::len);
    if let Some(Ok(e)) = m.event() {
        n += e.package.len() + e.id().map_or(0, <[u8]>::len);
    }
    if let Some(Ok(e)) = m.expires() {
        n += e as usize;
    }
    if let Some(Ok(s)) = m.subscription_state() {
        n += s.state as usize + s.expires.unwrap_or(0) as usize;
    }
    n
}

fn framing(c: &mut Criterion) {
    let mut g = c.benchmark_group("framing");
    g.throughput(Throughput::Elements(1));
    for &(name, data) in SAMPLES {
        let buf = Bytes::from_static(data);
        // the samples are what they claim to be
        assert!(frame_and_read(&buf) > 0, "{name}");
        g.bench_function(name, |b| b.iter(|| frame_and_read(black_box(&buf))));
    }
    g.finish();
}

/// Our Subscription-State parser against the ezk-sip-types grammar it replaced.
fn subscription_state(c: &mut Criterion) {
    let mut g = c.benchmark_group("subscription_state");
    g.throughput(Throughput::Elements(1));
    let v: &[u8] = b"active;expires=3599";
    g.bench_function("SubState::parse", |b| {
        b.iter(|| SubState::parse(black_box(v)).map(|s| s.expires))
    });
    g.bench_function("ezk_parse", |b| {
        b.iter(|| ezk_parse::<SubscriptionState>(black_box(v)).map(|s| s.expires))
    });
    g.finish();
}

criterion_group!(benches, framing, subscription_state);
criterion_main!(benches);
