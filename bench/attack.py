#!/usr/bin/env python3
"""The attacker of bench/floods.sh (standard library only): the floods of issue 9
against a running bridge, each printing one result line per bound:

  BOUND <name>: <figures> ... PASS|FAIL

  attack.py freeport
  attack.py subscribe  --bridge H:P --kam-port K --pid PID --count N --seconds S [--after 30 --tail 60]
  attack.py contacts   --bridge H:P --kam-port K --pid PID --count N --contacts C --seconds S [--sources 1]
  attack.py tcp        --bridge H:P --pid PID --count N --size BYTES --src 127.0.0.99
  attack.py forged     --bridge H:P --pid PID --count N --src 127.0.0.99
  attack.py guess      --bridge H:P --kam-port K --pid PID --count N --seconds S

Upstream traffic is counted on the wire: `dumpcap` on `lo` (root) captures what
the bridge sends to Kamailio's port, so a datagram Kamailio drops still counts.
The bridge's memory is VmRSS of /proc/PID/status, sampled every 50 ms: before the
flood, and the peak until the end of the phase.
"""
import argparse
import errno
import hashlib
import os
import random
import re
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

DOMAIN = 'pbx.test'
GXP = 'Grandstream GXP2170 1.0.11.3'


def freeport():
    for _ in range(400):
        p = random.randint(20000, 32000)
        try:
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.bind(('127.0.0.1', p))
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.bind(('127.0.0.1', p))
            u.close()
            t.close()
            return p
        except OSError:
            continue
    raise SystemExit('no free port')


def hostport(s):
    h, p = s.rsplit(':', 1)
    return h, int(p)


def rnd(n=10):
    return '%0*x' % (n, random.getrandbits(4 * n))


def verdict(ok):
    return 'PASS' if ok else 'FAIL'


def say(line):
    print(line, flush=True)


# ------------------------------------------------------------------ memory

class Rss:
    """VmRSS (kB) of a process: the value now, and the peak since start()."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = 0
        self.before = self.now()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def now(self):
        try:
            with open('/proc/%d/status' % self.pid) as f:
                for line in f:
                    if line.startswith('VmRSS:'):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def start(self):
        self.before = self.now()
        self.peak = self.before
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.05)

    def stop(self):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.now())
        return self

    def delta_mb(self):
        return (self.peak - self.before) / 1024.0

    def alive(self):
        return os.path.exists('/proc/%d' % self.pid)


# ------------------------------------------------------------------ capture

class Capture:
    """dumpcap on lo for UDP datagrams to `port` (pcap format, parsed here)."""

    def __init__(self, path, port):
        self.path = path
        self.proc = subprocess.Popen(
            ['dumpcap', '-q', '-i', 'lo', '-P', '-s', '4096', '-B', '64',
             '-f', 'udp and dst port %d' % port, '-w', path],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # dumpcap writes the file header once it captures
        for _ in range(100):
            if os.path.exists(path) and os.path.getsize(path) >= 24:
                break
            if self.proc.poll() is not None:
                raise SystemExit('dumpcap failed: %s' % self.proc.stderr.read().decode(errors='replace'))
            time.sleep(0.05)
        time.sleep(0.3)

    def stop(self):
        time.sleep(0.5)  # let the last datagrams reach the file
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def packets(self):
        """(unix time, SIP payload bytes) of every captured datagram."""
        out = []
        with open(self.path, 'rb') as f:
            data = f.read()
        if len(data) < 24:
            return out
        magic = struct.unpack('<I', data[:4])[0]
        endian = '<' if magic in (0xa1b2c3d4, 0xa1b23c4d) else '>'
        nano = magic in (0xa1b23c4d, 0x4d3cb2a1)
        linktype = struct.unpack(endian + 'I', data[20:24])[0]
        off = 24
        while off + 16 <= len(data):
            ts_s, ts_f, incl, _orig = struct.unpack(endian + 'IIII', data[off:off + 16])
            pkt = data[off + 16:off + 16 + incl]
            off += 16 + incl
            ts = ts_s + ts_f / (1e9 if nano else 1e6)
            l2 = 14 if linktype == 1 else (16 if linktype == 113 else 0)
            if len(pkt) < l2 + 28:
                continue
            ihl = (pkt[l2] & 0x0f) * 4
            out.append((ts, pkt[l2 + ihl + 8:]))
        return out


def requests(pkts, method, src_port=None):
    """(time, payload) of captured requests of `method`."""
    m = method.encode() + b' '
    return [(t, p) for t, p in pkts if p.startswith(m)]


def header(payload, name):
    m = re.search(rb'(?im)^' + name.encode() + rb'\s*:\s*(.*?)\r?$', payload)
    return m.group(1).decode(errors='replace') if m else None


# ------------------------------------------------------------------ SIP

def subscribe(src, bridge, target, n, call_tag):
    return (
        'SUBSCRIBE sip:{t}@{d} SIP/2.0\r\n'
        'Via: SIP/2.0/UDP {s};branch=z9hG4bK{r};rport\r\n'
        'Max-Forwards: 70\r\n'
        'From: <sip:1001@{d}>;tag=a{n}\r\n'
        'To: <sip:{t}@{d}>\r\n'
        'Call-ID: flood-{n}-{c}@attacker\r\n'
        'CSeq: 1 SUBSCRIBE\r\n'
        'Contact: <sip:1001@{s}>\r\n'
        'Event: dialog\r\n'
        'Accept: application/dialog-info+xml\r\n'
        'Expires: 3600\r\n'
        'User-Agent: {ua}\r\n'
        'Content-Length: 0\r\n\r\n'
    ).format(t=target, d=DOMAIN, s='%s:%d' % src, r=rnd(), n=n, c=call_tag, ua=GXP).encode()


def register(src, user, cseq, call_id, contacts, auth=None, expires=3600):
    lines = [
        'REGISTER sip:%s SIP/2.0' % DOMAIN,
        'Via: SIP/2.0/UDP %s:%d;branch=z9hG4bK%s;rport' % (src[0], src[1], rnd()),
        'Max-Forwards: 70',
        'From: <sip:%s@%s>;tag=r%s' % (user, DOMAIN, call_id[:8]),
        'To: <sip:%s@%s>' % (user, DOMAIN),
        'Call-ID: %s' % call_id,
        'CSeq: %d REGISTER' % cseq,
    ]
    if contacts:
        lines.append('Contact: ' + ', '.join(contacts))
    if auth:
        lines.append('Authorization: ' + auth)
    lines += ['Expires: %d' % expires, 'Supported: path', 'User-Agent: ' + GXP, 'Content-Length: 0', '', '']
    return '\r\n'.join(lines).encode()


def status_of(data):
    m = re.match(rb'SIP/2\.0 (\d{3})', data)
    return int(m.group(1)) if m else None


def challenge_of(data):
    v = header(data, 'WWW-Authenticate')
    if not v:
        return None
    return dict(re.findall(r'(\w+)="?([^",]*)"?', v))


def digest(user, password, ch, uri, method='REGISTER', nc=1):
    realm, nonce = ch.get('realm', ''), ch.get('nonce', '')
    h = lambda s: hashlib.md5(s.encode()).hexdigest()
    ha1 = h('%s:%s:%s' % (user, realm, password))
    ha2 = h('%s:%s' % (method, uri))
    if 'auth' in ch.get('qop', '').split(','):
        cnonce = rnd(8)
        ncs = '%08x' % nc
        resp = h('%s:%s:%s:%s:auth:%s' % (ha1, nonce, ncs, cnonce, ha2))
        a = ('Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", '
             'qop=auth, nc=%s, cnonce="%s", algorithm=MD5' % (user, realm, nonce, uri, resp, ncs, cnonce))
    else:
        resp = h('%s:%s:%s' % (ha1, nonce, ha2))
        a = 'Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", algorithm=MD5' % (
            user, realm, nonce, uri, resp)
    if ch.get('opaque'):
        a += ', opaque="%s"' % ch['opaque']
    return a


def udp(src_ip, port=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((src_ip, port))
    return s


class Drain(threading.Thread):
    """Reads a UDP socket, counting final response codes (the attacker never
    answers the NOTIFYs it gets)."""

    def __init__(self, sock, on_msg=None):
        super().__init__(daemon=True)
        self.sock = sock
        self.codes = {}
        self.notifies = 0
        self.on_msg = on_msg
        self.stop = False

    def run(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                data, _ = self.sock.recvfrom(70000)
            except socket.timeout:
                continue
            except OSError:
                return
            c = status_of(data)
            if c is not None:
                self.codes[c] = self.codes.get(c, 0) + 1
            elif data.startswith(b'NOTIFY '):
                self.notifies += 1
            if self.on_msg:
                self.on_msg(data)


def paced(count, seconds, fn):
    """Call fn(i) for i in range(count), spread evenly over `seconds`."""
    t0 = time.monotonic()
    for i in range(count):
        due = t0 + seconds * i / count
        d = due - time.monotonic()
        if d > 0:
            time.sleep(d)
        fn(i)
    return time.monotonic() - t0


def codes_str(codes):
    return ' '.join('%d×%d' % (n, c) for c, n in sorted(codes.items())) or 'none'


# ------------------------------------------------------------------ floods

def cmd_subscribe(a):
    """`count` phone SUBSCRIBEs to distinct non-existent targets from one source
    in `seconds`; upstream SUBSCRIBEs until `after` s after the flood, the rate
    from +25 s, and the bridge's RSS."""
    bridge = hostport(a.bridge)
    sock = udp(a.src)
    src = sock.getsockname()
    drain = Drain(sock)
    drain.start()
    cap = Capture(os.path.join(a.dir, 'subscribe-%d.pcap' % a.count), a.kam_port)
    rss = Rss(a.pid).start()
    tag = rnd(6)
    t_start = time.time()
    took = paced(a.count, a.seconds, lambda i: sock.sendto(
        subscribe(src, bridge, '5%06d' % i, i, tag), bridge))
    t_end = time.time()
    tail = max(a.tail, a.after)
    time.sleep(tail)
    rss.stop()
    cap.stop()
    drain.stop = True
    subs = requests(cap.packets(), 'SUBSCRIBE')
    until = t_end + a.after
    total = [t for t, _ in subs if t_start <= t <= until]
    unsub = sum(1 for t, p in subs if t_start <= t <= until and re.search(rb'(?im)^Expires:\s*0\s*$', p))
    per_s = {}
    for t, _ in subs:
        k = int(t - t_start)
        per_s[k] = per_s.get(k, 0) + 1
    # from 25 s after the flood until `tail` s after: whole seconds since the start
    first_late, last_late = int(t_end + 25 - t_start) + 1, int(t_end + tail - t_start) - 1
    late = [per_s.get(k, 0) for k in range(first_late, last_late + 1)]
    busiest = max(late or [0])
    late_avg = sum(late) / max(len(late), 1)
    timeline = ' '.join('%d' % per_s.get(k, 0) for k in range(0, int(t_end + tail - t_start) + 1))
    with open(os.path.join(a.dir, 'subscribe-%d.timeline' % a.count), 'w') as f:
        f.write(timeline + '\n')
    name = '%d SUBSCRIBEs/%ds' % (a.count, a.seconds)
    ok_total = len(total) <= a.max_total if a.max_total else True
    say('BOUND %s: upstream SUBSCRIBEs until %ds after: %d (%d un-SUBSCRIBEs)%s ... %s' % (
        name, a.after, len(total), unsub,
        ' (bound %d)' % a.max_total if a.max_total else ' (figure)', verdict(ok_total)))
    say('BOUND %s: RSS +%.1f MB (%d -> peak %d kB; bound 50 MB) ... %s' % (
        name, rss.delta_mb(), rss.before, rss.peak, verdict(rss.delta_mb() <= 50 and rss.alive())))
    say('BOUND %s: upstream SUBSCRIBEs/s from 25 s to %d s after: busiest second %d, mean %.1f/s (bound 5/s) ... %s' % (
        name, tail, busiest, late_avg, verdict(busiest <= 5)))
    say('  info: sent %d in %.1f s; answers %s; NOTIFYs to the attacker %d; upstream SUBSCRIBEs per second: %s' % (
        a.count, took, codes_str(drain.codes), drain.notifies, timeline))


def cmd_contacts(a):
    """`count` unauthenticated REGISTERs × `contacts` Contacts in `seconds`,
    from `sources` addresses; the bridge's RSS."""
    bridge = hostport(a.bridge)
    socks = [udp('127.0.%d.%d' % (3 + i // 250, i % 250 + 1)) for i in range(a.sources)]
    drains = [Drain(s) for s in socks]
    for d in drains:
        d.start()
    cap = Capture(os.path.join(a.dir, 'contacts-%d.pcap' % a.sources), a.kam_port)
    rss = Rss(a.pid).start()
    tag = rnd(6)

    def one(i):
        s = socks[i % len(socks)]
        src = s.getsockname()
        user = '9%04d' % (i % 10000)
        contacts = ['<sip:%s@127.0.0.1:%d;c=%d>' % (user, 10000 + j, j) for j in range(a.contacts)]
        s.sendto(register(src, user, 1, 'c%d-%s' % (i, tag), contacts), bridge)
    took = paced(a.count, a.seconds, one)
    time.sleep(a.after)
    rss.stop()
    cap.stop()
    codes = {}
    for d in drains:
        d.stop = True
        for c, n in d.codes.items():
            codes[c] = codes.get(c, 0) + n
    up = requests(cap.packets(), 'REGISTER')
    size = len(register(('127.0.0.1', 5060), '90000', 1, 'x', [
        '<sip:90000@127.0.0.1:%d;c=%d>' % (10000 + j, j) for j in range(a.contacts)]))
    say('BOUND %d REGISTERs×%d Contacts/%ds from %d source(s): RSS +%.1f MB (%d -> peak %d kB; bound 64 MB) ... %s' % (
        a.count, a.contacts, a.seconds, a.sources, rss.delta_mb(), rss.before, rss.peak,
        verdict(rss.delta_mb() <= 64 and rss.alive())))
    say('  info: %d bytes each, sent in %.1f s; answers %s; REGISTERs reaching the PBX %d' % (
        size, took, codes_str(codes), len(up)))


def open_after(socks):
    """How many of these TCP sockets the peer has not closed (EOF or reset)."""
    n = 0
    for s in socks:
        try:
            d = s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            if d:
                n += 1  # data from the bridge: still open
        except BlockingIOError:
            n += 1
        except OSError:
            pass
    return n


class OptionsProbe(threading.Thread):
    """An allowed phone's TCP OPTIONS every `every` s on one connection (opened
    again when closed): sent, answered within 2 s, worst latency."""

    def __init__(self, bridge, src_ip, every=0.2):
        super().__init__(daemon=True)
        self.bridge, self.src_ip, self.every = bridge, src_ip, every
        self.sent = self.answered = 0
        self.worst = 0.0
        self.stop = False
        self.errors = []

    def connect(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((self.src_ip, 0))
        s.settimeout(2)
        s.connect(self.bridge)
        return s

    def run(self):
        s = None
        n = 0
        while not self.stop:
            t0 = time.monotonic()
            n += 1
            try:
                if s is None:
                    s = self.connect()
                local = '%s:%d' % s.getsockname()
                msg = ('OPTIONS sip:%s:%d SIP/2.0\r\nVia: SIP/2.0/TCP %s;branch=z9hG4bKo%s\r\n'
                       'Max-Forwards: 70\r\nFrom: <sip:probe@%s>;tag=p%d\r\nTo: <sip:%s:%d>\r\n'
                       'Call-ID: probe-%d-%s\r\nCSeq: %d OPTIONS\r\nContent-Length: 0\r\n\r\n') % (
                    self.bridge[0], self.bridge[1], local, rnd(), local, n, self.bridge[0],
                    self.bridge[1], n, rnd(4), n)
                self.sent += 1
                s.sendall(msg.encode())
                buf = b''
                while b'\r\n\r\n' not in buf:
                    d = s.recv(65536)
                    if not d:
                        raise OSError('closed by the bridge')
                    buf += d
                if status_of(buf):
                    self.answered += 1
                    self.worst = max(self.worst, time.monotonic() - t0)
            except OSError as e:
                self.errors.append(str(e))
                if s:
                    s.close()
                s = None
            d = self.every - (time.monotonic() - t0)
            if d > 0:
                time.sleep(d)


def cmd_tcp(a):
    """`count` TCP connections from `src` (outside allow), each sending `size`
    bytes of an unfinished header; how many are open 1 s after connect; RSS; an
    allowed phone's OPTIONS answered throughout."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (a.count + 1024, a.count + 1024))
    bridge = hostport(a.bridge)
    probe = OptionsProbe(bridge, a.phone_src)
    probe.start()
    time.sleep(1)
    rss = Rss(a.pid).start()
    head = ('OPTIONS sip:%s:%d SIP/2.0\r\nVia: SIP/2.0/TCP %s:5060;branch=z9hG4bKt\r\nX-Filler: ' % (
        bridge[0], bridge[1], a.src)).encode()
    payload = head + b'a' * (a.size - len(head))  # no end of header, ever
    socks, connect_at, refused, sent_bytes = [], [], 0, 0
    open_1s = []
    t0 = time.monotonic()
    for i in range(a.count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((a.src, 0))
        s.settimeout(2)
        try:
            s.connect(bridge)
        except OSError:
            refused += 1
            s.close()
            continue
        s.setblocking(False)
        try:
            sent_bytes += s.send(payload)
        except OSError:
            pass
        socks.append(s)
        connect_at.append(time.monotonic())
        # the connections that are 1 s old now: still open?
        while len(open_1s) < len(socks) and time.monotonic() - connect_at[len(open_1s)] >= 1.0:
            open_1s.append(open_after([socks[len(open_1s)]]))
    took = time.monotonic() - t0
    while len(open_1s) < len(socks):
        d = connect_at[len(open_1s)] + 1.0 - time.monotonic()
        if d > 0:
            time.sleep(d)
        open_1s.append(open_after([socks[len(open_1s)]]))
    # keep trying to push the rest of the 64 KB for a while
    for _ in range(20):
        for s in socks:
            try:
                sent_bytes += s.send(payload[:4096])
            except OSError:
                pass
        time.sleep(0.1)
    still_open = open_after(socks)
    time.sleep(1)
    rss.stop()
    probe.stop = True
    probe.join()
    for s in socks:
        s.close()
    held = sum(open_1s)
    say('BOUND %d TCP connections×%d KB from %s (%s allow): open 1 s after connect: %d (bound %d) ... %s' % (
        a.count, a.size // 1024, a.src, 'inside' if a.max_held else 'outside', held, a.max_held,
        verdict(held <= a.max_held)))
    say('BOUND %d TCP connections from %s: RSS +%.1f MB (%d -> peak %d kB; bound 64 MB) ... %s' % (
        a.count, a.src, rss.delta_mb(), rss.before, rss.peak, verdict(rss.delta_mb() <= 64 and rss.alive())))
    ok = probe.sent > 0 and probe.answered == probe.sent
    say('BOUND allowed phone TCP OPTIONS during the TCP flood: answered %d/%d, worst %.0f ms ... %s' % (
        probe.answered, probe.sent, probe.worst * 1000, verdict(ok)))
    say('  info: connects took %.1f s, %d refused at connect, %d bytes accepted by the kernel, %d open at the end%s' % (
        took, refused, sent_bytes, still_open, '; probe errors: %s' % probe.errors[:3] if probe.errors else ''))


def cmd_forged(a):
    """`count` forged responses (top Via: the bridge, a z9hG4bK-bb- branch;
    second Via: a third host) from `src` (outside allow); datagrams reaching
    the third host; one naming a TCP hop: connections the third host gets."""
    bridge = hostport(a.bridge)
    third_udp = udp(a.third)
    third_udp.settimeout(0.1)
    tport = third_udp.getsockname()[1]
    third_tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    third_tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    third_tcp.bind((a.third, 0))
    third_tcp.listen(64)
    third_tcp.setblocking(False)
    ttcp = third_tcp.getsockname()[1]
    s = udp(a.src)
    rss = Rss(a.pid).start()

    def forged(i, transport, port):
        return ('SIP/2.0 200 OK\r\n'
                'Via: SIP/2.0/UDP %s:%d;branch=z9hG4bK-bb-%s\r\n'
                'Via: SIP/2.0/%s %s:%d;branch=z9hG4bKvictim%d;rport\r\n'
                'From: <sip:1001@%s>;tag=f%d\r\nTo: <sip:1002@%s>;tag=t%d\r\n'
                'Call-ID: forged-%d@%s\r\nCSeq: 1 INVITE\r\nContact: <sip:1002@%s:%d>\r\n'
                'Content-Length: 0\r\n\r\n') % (
            bridge[0], bridge[1], rnd(16), transport, a.third, port, i,
            DOMAIN, i, DOMAIN, i, i, a.third, a.third, port)
    took = paced(a.count, a.seconds, lambda i: s.sendto(forged(i, 'UDP', tport).encode(), bridge))
    s.sendto(forged(a.count, 'TCP', ttcp).encode(), bridge)
    relayed = 0
    conns = 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            third_udp.recvfrom(70000)
            relayed += 1
        except socket.timeout:
            pass
        try:
            c, _ = third_tcp.accept()
            conns += 1
            c.close()
        except BlockingIOError:
            pass
    rss.stop()
    say('BOUND %d forged responses from %s (outside allow): relayed to the third host: %d (bound 0) ... %s' % (
        a.count, a.src, relayed, verdict(relayed == 0)))
    say('BOUND forged response naming a TCP hop: connections opened to the third host: %d (bound 0) ... %s' % (
        conns, verdict(conns == 0)))
    say('  info: sent in %.1f s; bridge RSS +%.1f MB' % (took, rss.delta_mb()))


def cmd_guess(a):
    """`count` wrong-password REGISTERs from one source in `seconds`; REGISTERs
    reaching the PBX; another phone's REGISTER (right password) during the flood."""
    bridge = hostport(a.bridge)
    s = udp(a.src)
    src = s.getsockname()
    chal = {}

    def on_msg(data):
        c = challenge_of(data)
        if c:
            chal.update(c)
    drain = Drain(s, on_msg)
    drain.start()
    cap = Capture(os.path.join(a.dir, 'guess.pcap'), a.kam_port)
    call_id = 'guess-%s' % rnd(8)
    contact = ['<sip:%s@127.0.0.1:%d>' % (a.user, src[1])]
    results = []

    def legit_phone():
        # the other phone registers a few times during the flood
        for at in a.phone_at:
            d = t0 + at - time.monotonic()
            if d > 0:
                time.sleep(d)
            results.append(phone_register(bridge, a.phone_src, a.phone_user, a.phone_password))
    t0 = time.monotonic()
    th = threading.Thread(target=legit_phone, daemon=True)
    th.start()

    def one(i):
        auth = None
        if chal:
            auth = digest(a.user, 'guess%06d' % i, chal, 'sip:%s' % DOMAIN)
        s.sendto(register(src, a.user, i + 1, call_id, contact, auth), bridge)
    took = paced(a.count, a.seconds, one)
    th.join()
    time.sleep(2)
    cap.stop()
    drain.stop = True
    ups = [p for _, p in requests(cap.packets(), 'REGISTER')
           if header(p, 'Call-ID') == call_id]
    say('BOUND %d wrong-password REGISTERs/%ds from one source: reaching the PBX: %d (bound 50) ... %s' % (
        a.count, a.seconds, len(ups), verdict(len(ups) <= 50)))
    ok = results and all(r[0] == 200 and r[1] <= 5 for r in results)
    say("BOUND another phone's REGISTER during the guessing: %s (bound 200 within 5 s) ... %s" % (
        ', '.join('%s in %.2f s' % (r[0], r[1]) for r in results), verdict(ok)))
    say('  info: sent in %.1f s; answers to the attacker %s' % (took, codes_str(drain.codes)))


def phone_register(bridge, src_ip, user, password, timeout=5.0):
    """REGISTER → 401 → REGISTER with credentials → final; (code, seconds)."""
    s = udp(src_ip)
    src = s.getsockname()
    call_id = 'phone-%s' % rnd(8)
    contact = ['<sip:%s@127.0.0.1:%d>' % (user, src[1])]
    t0 = time.monotonic()
    cseq = 1
    msg = register(src, user, cseq, call_id, contact)
    last_send = 0
    s.settimeout(0.1)
    try:
        while time.monotonic() - t0 < timeout:
            if time.monotonic() - last_send > 0.5:  # retransmit like a phone (T1)
                s.sendto(msg, bridge)
                last_send = time.monotonic()
            try:
                data, _ = s.recvfrom(70000)
            except socket.timeout:
                continue
            code = status_of(data)
            if code is None or code < 200 or header(data, 'CSeq') != '%d REGISTER' % cseq:
                continue
            if code == 401 and cseq == 1:
                cseq = 2
                msg = register(src, user, cseq, call_id, contact,
                               digest(user, password, challenge_of(data), 'sip:%s' % DOMAIN))
                s.sendto(msg, bridge)
                last_send = time.monotonic()
                continue
            return code, time.monotonic() - t0
        return 'timeout', time.monotonic() - t0
    finally:
        s.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True)
    sub.add_parser('freeport')
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--bridge', required=True)
    common.add_argument('--pid', type=int, required=True)
    common.add_argument('--dir', default='.')
    common.add_argument('--count', type=int, required=True)
    common.add_argument('--seconds', type=float, default=10)
    common.add_argument('--kam-port', type=int, default=0)
    x = sub.add_parser('subscribe', parents=[common])
    x.add_argument('--src', default='127.0.0.7')
    x.add_argument('--after', type=float, default=30)
    x.add_argument('--tail', type=float, default=60)
    x.add_argument('--max-total', type=int, default=0)
    x = sub.add_parser('contacts', parents=[common])
    x.add_argument('--contacts', type=int, default=700)
    x.add_argument('--sources', type=int, default=1)
    x.add_argument('--after', type=float, default=3)
    x = sub.add_parser('tcp', parents=[common])
    x.add_argument('--size', type=int, default=65536)
    x.add_argument('--src', default='127.0.0.99')
    x.add_argument('--phone-src', default='127.0.0.2')
    x.add_argument('--max-held', type=int, default=0)
    x = sub.add_parser('forged', parents=[common])
    x.add_argument('--src', default='127.0.0.99')
    x.add_argument('--third', default='127.0.0.50')
    x = sub.add_parser('guess', parents=[common])
    x.add_argument('--src', default='127.0.0.8')
    x.add_argument('--user', default='1002')
    x.add_argument('--phone-src', default='127.0.0.3')
    x.add_argument('--phone-user', default='1003')
    x.add_argument('--phone-password', default='pass1003')
    x.add_argument('--phone-at', type=float, nargs='*', default=[3, 10, 17])
    a = p.parse_args()
    if a.cmd == 'freeport':
        print(freeport())
        return
    {'subscribe': cmd_subscribe, 'contacts': cmd_contacts, 'tcp': cmd_tcp,
     'forged': cmd_forged, 'guess': cmd_guess}[a.cmd](a)


if __name__ == '__main__':
    main()
