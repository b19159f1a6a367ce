//! Fan-out in the sans-IO core: one upstream presence NOTIFY for a target that
//! N phones watch (Grandstream Wave, UDP, answered 200 as they come), timed from
//! `handle_datagram` to the FIRST phone NOTIFY out of `poll_transmit` and to the
//! LAST one. No sockets: this is the core's share of the on-the-wire figures of
//! `bench/run.sh fanout` (docs/benchmarks.md, "Fan-out, send as you go").
//!
//! Each iteration flips the target between open and closed (the phones' lamp
//! changes, so every phone gets a NOTIFY); the phones' 200s are delivered after
//! the timed part.
//!
//! Run: `cargo bench --bench fanout -- --warm-up-time 1 --measurement-time 5`.
//! Instructions instead of time (steady under load): `examples/fanout.rs`.

#[path = "common/fanout.rs"]
mod driver;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use driver::Fan;

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    g.sample_size(20);
    for watchers in [100usize, 1000] {
        let mut fan = Fan::new(watchers);
        let (_, _, n) = fan.once();
        assert_eq!(n, watchers + 1, "the upstream 200 and one NOTIFY per phone");
        g.bench_function(BenchmarkId::new("first", watchers), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| fan.once().0).sum())
        });
        g.bench_function(BenchmarkId::new("last", watchers), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| fan.once().1).sum())
        });
    }
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
