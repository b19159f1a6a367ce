//! Instructions per fan-out in the sans-IO core, steady whatever the machine's
//! load: run under callgrind, which counts only inside [`to_first`] (upstream
//! NOTIFY in → first phone NOTIFY out) and [`to_last`] (→ the last one).
//! Same driver as `benches/fanout.rs`; only the endpoint's public API, so the
//! same program measures an older core too.
//!
//! ```sh
//! cargo build --release --example fanout
//! valgrind --tool=callgrind --callgrind-out-file=cg.out \
//!   --toggle-collect='*to_first*' --toggle-collect='*to_last*' \
//!   target/release/examples/fanout 1000 5
//! callgrind_annotate --inclusive=yes cg.out | grep -E 'to_first|to_last'
//! ```
//! (instructions per fan-out = the function's inclusive count / rounds)

#[path = "../benches/common/fanout.rs"]
mod driver;

use blf_bridge::flow::Transmit;
use bytes::Bytes;
use driver::Fan;

/// The upstream NOTIFY delivered, and the endpoint polled to the first phone
/// NOTIFY.
#[inline(never)]
fn to_first(fan: &mut Fan, change: Bytes, out: &mut Vec<Transmit>) {
    fan.deliver(change);
    fan.poll_to_first(out);
}

/// The rest of the fan-out polled.
#[inline(never)]
fn to_last(fan: &mut Fan, out: &mut Vec<Transmit>) {
    fan.poll_rest(out);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let watchers: usize = args.get(1).map_or(1000, |v| v.parse().expect("watchers"));
    let rounds: usize = args.get(2).map_or(5, |v| v.parse().expect("rounds"));
    let mut fan = Fan::new(watchers);
    fan.once(); // warm: every table sized
    for _ in 0..rounds {
        let mut out = Vec::with_capacity(watchers + 8);
        let change = fan.tick();
        to_first(&mut fan, change, &mut out);
        to_last(&mut fan, &mut out);
        assert_eq!(
            out.len(),
            watchers + 1,
            "the 200 upstream and one NOTIFY per phone"
        );
        fan.answer_sent(out);
    }
    println!("{rounds} fan-outs to {watchers} phones");
}
