//! A small UDP relay that damages traffic on purpose: between SIPp phones and the
//! bridge, or between the bridge and Kamailio. Each datagram, in each direction, is
//! dropped, duplicated or held back (so that later ones overtake it: reordering)
//! with the given probabilities. The decisions come from a seeded generator, one
//! per direction, drawn in arrival order: the same traffic gets the same faults.
//!
//! Clients send to [`UdpRelay::front`]; the relay forwards each client's
//! datagrams to the target from a back socket of that client's own (so the target
//! sees one source per client, and its answers, to that source, go back to that
//! client). With `back_bind` (one client only) that back socket is bound at a
//! given address: a bridge with `[listen] advertise` set to its IP gets the
//! upstream's requests, sent to its Via / Contact, through the relay too.
#![allow(dead_code)] // not every test crate damages traffic

use std::collections::{BinaryHeap, HashMap};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What happens to datagrams, per direction.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Probability that a datagram is dropped.
    pub drop: f64,
    /// Probability that a (not dropped) datagram is sent twice; the copy follows
    /// 0–40 ms later.
    pub duplicate: f64,
    /// Probability that a datagram is held back 30–150 ms (later ones overtake it).
    pub reorder: f64,
}

impl Faults {
    /// 5 % dropped, 3 % duplicated, 5 % reordered.
    pub const LOSSY: Faults = Faults {
        drop: 0.05,
        duplicate: 0.03,
        reorder: 0.05,
    };
}

/// Counts per direction: `[to target, to client]`.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub received: [AtomicU64; 2],
    pub dropped: [AtomicU64; 2],
    pub duplicated: [AtomicU64; 2],
    pub reordered: [AtomicU64; 2],
}

impl RelayStats {
    pub fn summary(&self) -> String {
        let g = |a: &[AtomicU64; 2], i: usize| a[i].load(Ordering::Relaxed);
        let dir = |i: usize| {
            format!(
                "{} received, {} dropped, {} duplicated, {} reordered",
                g(&self.received, i),
                g(&self.dropped, i),
                g(&self.duplicated, i),
                g(&self.reordered, i)
            )
        };
        format!("to target: {}; to clients: {}", dir(0), dir(1))
    }
    pub fn dropped(&self) -> u64 {
        self.dropped[0].load(Ordering::Relaxed) + self.dropped[1].load(Ordering::Relaxed)
    }
    pub fn received(&self) -> u64 {
        self.received[0].load(Ordering::Relaxed) + self.received[1].load(Ordering::Relaxed)
    }
}

/// xorshift64*: the decisions of one direction.
struct Gen(u64);

impl Gen {
    fn new(seed: u64) -> Gen {
        Gen(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// A datagram waiting for its time. Ordered by due time (earliest first).
struct Held {
    due: Instant,
    seq: u64,
    /// Index of the sending socket: 0 = front, i + 1 = back socket i.
    via: usize,
    to: SocketAddr,
    data: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.due, o.seq).cmp(&(self.due, self.seq))
    }
}

pub struct UdpRelay {
    front: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<RelayStats>,
}

impl UdpRelay {
    /// A relay on 127.0.0.1 (a free port) to `target`.
    pub fn start(target: SocketAddr, faults: Faults, seed: u64) -> UdpRelay {
        Self::start_with(target, None, faults, seed)
    }

    /// With `back_bind`: the back socket (one client only) is bound there.
    pub fn start_with(
        target: SocketAddr,
        back_bind: Option<SocketAddr>,
        faults: Faults,
        seed: u64,
    ) -> UdpRelay {
        let front = UdpSocket::bind("127.0.0.1:0").expect("relay front socket");
        front.set_nonblocking(true).unwrap();
        let front_addr = front.local_addr().unwrap();
        let fixed_back = back_bind.map(|a| {
            let s = UdpSocket::bind(a).unwrap_or_else(|e| panic!("relay back socket {a}: {e}"));
            s.set_nonblocking(true).unwrap();
            s
        });
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(RelayStats::default());
        let (stop2, stats2) = (stop.clone(), stats.clone());
        let thread = thread::Builder::new()
            .name(format!("relay-{front_addr}"))
            .spawn(move || run(front, fixed_back, target, faults, seed, &stop2, &stats2))
            .expect("relay thread");
        UdpRelay {
            front: front_addr,
            stop,
            thread: Some(thread),
            stats,
        }
    }

    /// Where clients send to.
    pub fn front(&self) -> SocketAddr {
        self.front
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    front: UdpSocket,
    fixed_back: Option<UdpSocket>,
    target: SocketAddr,
    faults: Faults,
    seed: u64,
    stop: &AtomicBool,
    stats: &RelayStats,
) {
    // back sockets and the client each one serves
    let mut backs: Vec<(UdpSocket, Option<SocketAddr>)> = Vec::new();
    let mut by_client: HashMap<SocketAddr, usize> = HashMap::new();
    let single = fixed_back.is_some();
    if let Some(s) = fixed_back {
        backs.push((s, None));
    }
    let mut gens = [Gen::new(seed), Gen::new(seed ^ 0x5555_5555)];
    let mut held: BinaryHeap<Held> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let mut busy = false;
        // client → target
        loop {
            match front.recv_from(&mut buf) {
                Ok((n, client)) => {
                    busy = true;
                    let i = if single {
                        backs[0].1 = Some(client);
                        0
                    } else {
                        *by_client.entry(client).or_insert_with(|| {
                            let s = UdpSocket::bind("127.0.0.1:0").expect("relay back socket");
                            s.set_nonblocking(true).unwrap();
                            backs.push((s, Some(client)));
                            backs.len() - 1
                        })
                    };
                    decide(
                        &mut gens[0],
                        faults,
                        stats,
                        0,
                        &mut held,
                        &mut seq,
                        i + 1,
                        target,
                        &buf[..n],
                    );
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        // target → client
        for (sock, client) in &backs {
            loop {
                match sock.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        busy = true;
                        if let Some(c) = client {
                            decide(
                                &mut gens[1],
                                faults,
                                stats,
                                1,
                                &mut held,
                                &mut seq,
                                0,
                                *c,
                                &buf[..n],
                            );
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => break,
                }
            }
        }
        // due datagrams
        let now = Instant::now();
        while held.peek().is_some_and(|h| h.due <= now) {
            let h = held.pop().unwrap();
            let sock = if h.via == 0 {
                &front
            } else {
                &backs[h.via - 1].0
            };
            let _ = sock.send_to(&h.data, h.to);
        }
        if !busy {
            thread::sleep(Duration::from_micros(500));
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn decide(
    g: &mut Gen,
    f: Faults,
    stats: &RelayStats,
    dir: usize,
    held: &mut BinaryHeap<Held>,
    seq: &mut u64,
    via: usize,
    to: SocketAddr,
    data: &[u8],
) {
    stats.received[dir].fetch_add(1, Ordering::Relaxed);
    // always draw the same numbers per datagram, whatever is decided
    let (d, dup, re) = (g.chance(f.drop), g.chance(f.duplicate), g.chance(f.reorder));
    let (re_ms, dup_ms) = (g.range(30, 150), g.range(0, 40));
    if d {
        stats.dropped[dir].fetch_add(1, Ordering::Relaxed);
        return;
    }
    let now = Instant::now();
    let mut push = |delay: u64| {
        *seq += 1;
        held.push(Held {
            due: now + Duration::from_millis(delay),
            seq: *seq,
            via,
            to,
            data: data.to_vec(),
        });
    };
    let first = if re {
        stats.reordered[dir].fetch_add(1, Ordering::Relaxed);
        re_ms
    } else {
        0
    };
    push(first);
    if dup {
        stats.duplicated[dir].fetch_add(1, Ordering::Relaxed);
        push(first + dup_ms);
    }
}
