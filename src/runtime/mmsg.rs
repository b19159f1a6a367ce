//! Several UDP datagrams in one system call (Linux `sendmmsg(2)`): a fan-out
//! writes its NOTIFYs in batches instead of one `sendto` each. Elsewhere the
//! runtime sends them one at a time.

use std::io;
use std::net::SocketAddr;
use tokio::net::UdpSocket;

/// Send `msgs` (destination, datagram) in order with as few system calls as
/// the kernel allows. Returns how many went out from the front (at least one),
/// or the error of the first one (`WouldBlock`: the socket buffer is full).
#[cfg(target_os = "linux")]
pub(super) fn send_batch(sock: &UdpSocket, msgs: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    sock.try_io(tokio::io::Interest::WRITABLE, || {
        send_batch_fd(sock.as_raw_fd(), msgs)
    })
}

/// [`send_batch`] on a raw (non-blocking) socket: one `sendmmsg(2)`.
#[cfg(target_os = "linux")]
pub(super) fn send_batch_fd(
    fd: std::os::fd::RawFd,
    msgs: &[(SocketAddr, &[u8])],
) -> io::Result<usize> {
    if msgs.is_empty() {
        return Ok(0);
    }
    let addrs: Vec<socket2::SockAddr> = msgs.iter().map(|(a, _)| (*a).into()).collect();
    let mut iovs: Vec<libc::iovec> = msgs
        .iter()
        .map(|(_, d)| libc::iovec {
            iov_base: d.as_ptr() as *mut libc::c_void,
            iov_len: d.len(),
        })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = addrs
        .iter()
        .zip(iovs.iter_mut())
        .map(|(a, iov)| {
            // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = a.as_ptr() as *mut libc::c_void;
            h.msg_hdr.msg_namelen = a.len();
            h.msg_hdr.msg_iov = iov as *mut libc::iovec;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let n = u32::try_from(hdrs.len()).unwrap_or(u32::MAX);
    // SAFETY: every header points at an address and one iovec that live (in
    // `addrs`, `iovs`, `msgs`) until this call returns; the kernel only reads
    // them and writes each header's `msg_len`.
    let r = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n, 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Elsewhere: one datagram (the caller sends the rest in turn).
#[cfg(not(target_os = "linux"))]
pub(super) fn send_batch(sock: &UdpSocket, msgs: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    match msgs.first() {
        Some((a, d)) => sock.try_send_to(d, *a).map(|_| 1),
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch arrives whole and in order, to each destination.
    #[tokio::test]
    async fn a_batch_arrives_in_order() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let payloads: Vec<Vec<u8>> = (0..40)
            .map(|i| format!("datagram {i}").into_bytes())
            .collect();
        let msgs: Vec<(SocketAddr, &[u8])> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| (if i % 2 == 0 { aa } else { ba }, &p[..]))
            .collect();
        let mut sent = 0;
        while sent < msgs.len() {
            tx.writable().await.unwrap();
            match send_batch(&tx, &msgs[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        let mut buf = [0u8; 64];
        for (i, payload) in payloads.iter().enumerate() {
            let sock = if i % 2 == 0 { &a } else { &b };
            let (n, from) = sock.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &payload[..]);
            assert_eq!(from, tx.local_addr().unwrap());
        }
    }
}
