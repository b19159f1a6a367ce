//! A second UDP sender for large fan-outs. On a small machine the kernel's
//! share of sending a datagram (on loopback: the receiver's path and any
//! capture tap run inside the sender's system call) is larger than building
//! it; a fan-out to a thousand phones is then bounded by one thread's
//! `sendmmsg` time. The event loop hands part of such a fan-out's NOTIFYs —
//! and only those: one per dialog, in no order among themselves — to this
//! thread and sends the rest itself, then waits until the lane is idle (the
//! time its share takes; at most one `wait` more when the socket is full)
//! before it goes on, so every other message keeps the order the core gave
//! it. Linux only (elsewhere there is no lane and the loop
//! sends everything itself).

use crate::flow::Flow;
use bytes::Bytes;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// One datagram for the lane: where (as the socket wants it), what, and the
/// flow to report if the kernel refuses it.
pub(super) struct Datagram {
    pub dest: SocketAddr,
    pub data: Bytes,
    pub flow: Flow,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Vec<Datagram>>,
    busy: bool,
    stop: bool,
    /// Flows whose datagram failed with an error (not a full buffer).
    failed: Vec<Flow>,
    /// Datagrams the lane sent since it started.
    sent: u64,
    /// The socket stayed full for `wait`: the rest until the loop's next
    /// `wait_idle` is dropped at once, so the loop never waits long.
    congested: bool,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

/// What the lane reports when it is idle again.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Idle {
    pub failed: Vec<Flow>,
}

pub(super) struct Lane {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Lane {
    /// A lane writing to `sock` (a duplicate of the loop's UDP socket: same
    /// port, same buffers). `wait`: how long a datagram may wait for buffer
    /// space before it is dropped (the transaction layer retransmits).
    #[cfg(target_os = "linux")]
    pub fn start(sock: socket2::Socket, wait: Duration) -> std::io::Result<Lane> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("udp-lane".into())
            .spawn(move || run(&s, &sock, wait))?;
        Ok(Lane {
            shared,
            thread: Some(thread),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `job` for the lane (sent in order, one `sendmmsg` per kernel
    /// batch).
    pub fn submit(&self, job: Vec<Datagram>) {
        if job.is_empty() {
            return;
        }
        self.lock().jobs.push_back(job);
        self.shared.cv.notify_all();
    }

    /// Block until everything submitted has been sent (or dropped).
    pub fn wait_idle(&self) -> Idle {
        let mut st = self.lock();
        while !st.jobs.is_empty() || st.busy {
            st = self.shared.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.congested = false;
        Idle {
            failed: std::mem::take(&mut st.failed),
        }
    }

    /// Datagrams the lane has sent since it started.
    #[cfg(test)]
    pub fn sent(&self) -> u64 {
        self.lock().sent
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.lock().stop = true;
        self.shared.cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(target_os = "linux")]
fn run(shared: &Shared, sock: &socket2::Socket, wait: Duration) {
    loop {
        let (job, congested) = {
            let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(j) = st.jobs.pop_front() {
                    st.busy = true;
                    break (j, st.congested);
                }
                if st.stop {
                    return;
                }
                st = shared.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        };
        let out = if congested {
            Sent {
                congested: true,
                ..Sent::default()
            }
        } else {
            send_all(sock, &job, wait)
        };
        let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.busy = false;
        st.sent += out.sent;
        st.congested |= out.congested;
        st.failed.extend(out.failed);
        drop(st);
        shared.cv.notify_all();
    }
}

#[derive(Default)]
struct Sent {
    sent: u64,
    failed: Vec<Flow>,
    congested: bool,
}

/// Send `job` in order; when the kernel refuses a datagram for a full buffer
/// it waits (at most `wait`) for room, else drops the rest of the job
/// (congested); a datagram refused with an error is reported and skipped.
#[cfg(target_os = "linux")]
fn send_all(sock: &socket2::Socket, job: &[Datagram], wait: Duration) -> Sent {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    let mut at = 0;
    let mut out = Sent::default();
    while at < job.len() {
        let msgs: Vec<(SocketAddr, &[u8])> =
            job[at..].iter().map(|d| (d.dest, &d.data[..])).collect();
        match super::mmsg::send_batch_fd(fd, &msgs) {
            Ok(n) if n > 0 => {
                at += n;
                out.sent += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if !writable(fd, wait) {
                    tracing::warn!(
                        peer = %job[at].flow.remote,
                        datagrams = job.len() - at,
                        "UDP socket busy, datagrams dropped"
                    );
                    out.congested = true;
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(_) | Err(_) => {
                tracing::warn!(peer = %job[at].flow.remote, "UDP send failed");
                out.failed.push(job[at].flow);
                at += 1;
            }
        }
    }
    out
}

/// Wait until `fd` takes a datagram again, at most `wait`.
#[cfg(target_os = "linux")]
fn writable(fd: std::os::fd::RawFd, wait: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    r > 0 && p.revents & libc::POLLOUT != 0
}

#[cfg(not(target_os = "linux"))]
fn run(_shared: &Shared, _sock: &socket2::Socket, _wait: Duration) {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Jobs from the loop arrive whole, each datagram once, and `wait_idle`
    /// returns only when all were sent.
    #[test]
    fn everything_submitted_is_sent_before_wait_idle_returns() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let dest = rx.local_addr().unwrap();
        let tx = socket2::Socket::from(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
        tx.set_nonblocking(true).unwrap();
        let lane = Lane::start(tx, Duration::from_millis(100)).unwrap();
        let flow = Flow::udp(dest);
        for j in 0..10 {
            lane.submit(
                (0..20)
                    .map(|i| Datagram {
                        dest,
                        data: Bytes::from(format!("job {j} datagram {i}")),
                        flow,
                    })
                    .collect(),
            );
        }
        let idle = lane.wait_idle();
        assert_eq!(idle, Idle::default());
        assert_eq!(lane.sent(), 200);
        let mut got = std::collections::BTreeSet::new();
        let mut buf = [0u8; 64];
        for _ in 0..200 {
            let n = rx.recv(&mut buf).unwrap();
            got.insert(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert_eq!(got.len(), 200, "each datagram once");
        assert!(got.contains("job 9 datagram 19"));
    }
}
