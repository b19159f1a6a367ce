#!/usr/bin/env python3
"""Helpers for bench/scale.sh (standard library only; reuses bench.py and compare.py).

  scale.py phones_csv OUT PHONES TARGETS EXP_MIN EXP_MAX REFRESH_PCT SEED
                                   SEQUENTIAL -inf file: target;expires;refresh_ms per phone
  scale.py pid_of PGID COMM        the process named COMM in the group
  scale.py proc PGID               one JSON line: cpu ticks, VmRSS/RssAnon/Pss kB of the group
  scale.py metrics HOST:PORT       the bridge's /metrics as JSON (the figures scale.sh uses)
  scale.py sample RUN SGROUP UGROUP HTTP SPORT UPORT INTERVAL HOLD_METRICS_S
                                   RUN/samples.csv until RUN/samples.stop exists
  scale.py ready RUN PHONES TARGETS   exit 0 when every upstream subscription is active
                                   (last sample) and every phone had its first NOTIFY
  scale.py count_rtd DIR NAME      rtd NAME samples in DIR/*_rtt.csv
  scale.py pcap RUN                packet counts per kind and side from RUN/cap.pcap -> JSON
  scale.py report RUN              markdown report
"""
import glob
import json
import os
import random
import re
import statistics
import struct
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (freeport, udpdrops, read_rtt, pct)
import compare  # noqa: E402  (group, cpu, sipp_stat)

HZ = os.sysconf('SC_CLK_TCK')


# ------------------------------------------------------------------ inputs
def phones_csv(out, phones, targets, emin, emax, pct, seed):
    """One line per phone (SIPp SEQUENTIAL: call n reads line n): phone i watches
    target 3000 + i mod TARGETS (so the first TARGETS phones make every target, from
    cold), asks for Expires uniform in [EXP_MIN, EXP_MAX] s, refreshes every
    REFRESH_PCT % of it."""
    rnd = random.Random(seed)
    with open(out, 'w') as f:
        f.write('SEQUENTIAL\n')
        for i in range(phones):
            e = rnd.randint(emin, emax)
            f.write('%d;%d;%d\n' % (3000 + i % targets, e, e * 10 * pct))


def read_phones(fn):
    out = []
    with open(fn) as f:
        next(f)
        for line in f:
            p = line.strip().split(';')
            if len(p) >= 3:
                out.append((p[0], int(p[1]), int(p[2])))
    return out


# ------------------------------------------------------------------ /proc
def proc(pgid):
    ticks = rss = anon = pss = 0
    for pid, _, t in compare.group(pgid):
        ticks += t
        try:
            with open('/proc/%d/status' % pid) as f:
                for line in f:
                    if line.startswith('VmRSS:'):
                        rss += int(line.split()[1])
                    elif line.startswith('RssAnon:'):
                        anon += int(line.split()[1])
            with open('/proc/%d/smaps_rollup' % pid) as f:
                for line in f:
                    if line.startswith('Pss:'):
                        pss += int(line.split()[1])
        except OSError:
            pass
    return dict(t=round(time.time(), 3), cpu=ticks, rss_kb=rss, anon_kb=anon, pss_kb=pss)


def metrics(hostport):
    """The figures of the bridge's /metrics scale.sh uses ({} when it does not answer)."""
    try:
        with urllib.request.urlopen('http://%s/metrics' % hostport, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    m = {'up': {}, 'targets': {}, 'phones': 0}
    for line in text.splitlines():
        if line.startswith('#'):
            continue
        g = re.match(r'(\w+)(?:\{(.*)\})?\s+(\S+)', line)
        if not g:
            continue
        name, labels, val = g.group(1), g.group(2) or '', g.group(3)
        try:
            v = int(float(val))
        except ValueError:
            continue
        lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if name == 'blf_bridge_upstream_subscriptions':
            m['up'].setdefault(lab.get('package'), {})[lab.get('state')] = v
        elif name == 'blf_bridge_targets':
            m['targets'][lab.get('state')] = v
        elif name == 'blf_bridge_phone_subscriptions':
            m['phones'] += v
        elif name == 'blf_bridge_upstream_subscribes_paced':
            m['paced'] = v
        elif name in ('blf_bridge_notifies_sent_total', 'blf_bridge_notifies_sent'):
            m['notifies_sent'] = v
        elif name in ('blf_bridge_notifies_received_total', 'blf_bridge_notifies_received'):
            m['notifies_received'] = v
        elif name in ('blf_bridge_transaction_timeouts_total', 'blf_bridge_transaction_timeouts'):
            m['tx_timeouts'] = v
        elif name in ('blf_bridge_upstream_auth_failures_total', 'blf_bridge_upstream_auth_failures'):
            m['auth_failures'] = v
    return m


SAMPLE_COLS = ('t', 'cpu', 'rss_kb', 'anon_kb', 'pss_kb', 'up_cpu', 'drops', 'up_drops', 'sipp_drops',
               'load1', 'm_ok', 'targets', 'unknown', 'phones', 'dlg_active', 'pres_active',
               'up_not_active', 'paced', 'notifies_sent', 'notifies_received', 'tx_timeouts')


def sample(run, sgroup, ugroup, http, sport, uport, interval, hold_metrics_s):
    """Every INTERVAL s: the bridge's CPU and memory, its upstream's CPU, UDP drops at
    the three sockets; /metrics at every sample until RUN/hold exists, then every
    HOLD_METRICS_S (the quiet hold is measured, not the scraper)."""
    out = os.path.join(run, 'samples.csv')
    last_m = 0.0
    t_start = time.time()
    with open(out, 'w') as f:
        f.write(','.join(SAMPLE_COLS) + '\n')
        while not os.path.exists(os.path.join(run, 'samples.stop')) and time.time() - t_start < 86400:
            p = proc(sgroup)
            sipp_port = 0
            try:
                sipp_port = int(open(os.path.join(run, 'phones', 'port')).read())
            except (OSError, ValueError):
                pass
            row = dict(p, up_cpu=compare.cpu(ugroup), drops=bench.udpdrops(sport),
                       up_drops=bench.udpdrops(uport),
                       sipp_drops=bench.udpdrops(sipp_port) if sipp_port else 0,
                       load1=open('/proc/loadavg').read().split()[0], m_ok=0)
            hold = os.path.exists(os.path.join(run, 'hold'))
            if not hold or time.time() - last_m >= hold_metrics_s:
                m = metrics(http)
                last_m = time.time()
                if m:
                    up = m['up']
                    row.update(m_ok=1, targets=sum(m['targets'].values()),
                               unknown=m['targets'].get('unknown', 0), phones=m['phones'],
                               dlg_active=up.get('dialog', {}).get('active', 0),
                               pres_active=up.get('presence', {}).get('active', 0),
                               up_not_active=sum(v for pk in up.values() for s, v in pk.items()
                                                 if s != 'active'),
                               paced=m.get('paced', 0), notifies_sent=m.get('notifies_sent', 0),
                               notifies_received=m.get('notifies_received', 0),
                               tx_timeouts=m.get('tx_timeouts', 0))
            f.write(','.join(str(row.get(c, '')) for c in SAMPLE_COLS) + '\n')
            f.flush()
            time.sleep(max(0.0, interval - (time.time() - p['t'])))


def read_samples(run):
    rows = []
    try:
        with open(os.path.join(run, 'samples.csv')) as f:
            hdr = next(f).strip().split(',')
            for line in f:
                p = line.strip().split(',')
                if len(p) != len(hdr):
                    continue
                r = {}
                for k, v in zip(hdr, p):
                    if v == '':
                        r[k] = None
                    else:
                        try:
                            r[k] = float(v) if ('.' in v or k == 't') else int(v)
                        except ValueError:
                            r[k] = v
                rows.append(r)
    except (OSError, StopIteration):
        pass
    return rows


def rtt(d):
    files = glob.glob(os.path.join(d, '*_rtt.csv'))
    return bench.read_rtt(files[0]) if files else {}


def count_rtd(d, name):
    files = glob.glob(os.path.join(d, '*_rtt.csv'))
    if not files:
        return 0
    n = 0
    suffix = ';' + name
    with open(files[0]) as f:
        for line in f:
            if line.rstrip('\n;').endswith(suffix):
                n += 1
    return n


def count_rtd_since(run, d, name):
    """count_rtd, reading only what SIPp appended since the last call (the file
    grows by every refresh; the offset and count are kept in RUN/.rtd<NAME>)."""
    files = glob.glob(os.path.join(d, '*_rtt.csv'))
    if not files:
        return 0
    state = os.path.join(run, '.rtd%s' % name)
    off, n = 0, 0
    try:
        off, n = (int(x) for x in open(state).read().split())
    except (OSError, ValueError):
        pass
    suffix = b';' + name.encode()
    with open(files[0], 'rb') as f:
        f.seek(off)
        data = f.read()
    end = data.rfind(b'\n') + 1          # a line being written is read next time
    for line in data[:end].splitlines():
        if line.rstrip(b';\r').endswith(suffix):
            n += 1
    with open(state, 'w') as f:
        f.write('%d %d' % (off + end, n))
    return n


def ready(run, phones, targets):
    rows = [r for r in read_samples(run) if r.get('m_ok')]
    if not rows:
        return False
    last = rows[-1]
    if (last.get('dlg_active') or 0) < targets or (last.get('pres_active') or 0) < targets:
        return False
    return count_rtd_since(run, os.path.join(run, 'phones'), '2') >= phones


# ------------------------------------------------------------------ the capture
def pcap_packets(fn):
    """(epoch, src port, dst port, payload prefix) of the UDP/IPv4 packets of a
    libpcap file (dumpcap -P)."""
    with open(fn, 'rb') as f:
        gh = f.read(24)
        if len(gh) < 24:
            return
        magic = struct.unpack('<I', gh[:4])[0]
        if magic in (0xa1b2c3d4, 0xa1b23c4d):
            end = '<'
        else:
            end = '>'
            magic = struct.unpack('>I', gh[:4])[0]
        nano = magic == 0xa1b23c4d
        link = struct.unpack(end + 'I', gh[20:24])[0]
        l2 = {1: 14, 113: 16, 276: 20, 0: 4, 101: 0}.get(link)
        if l2 is None:
            raise SystemExit('link type %d not handled' % link)
        ph = struct.Struct(end + 'IIII')
        while True:
            h = f.read(16)
            if len(h) < 16:
                return
            sec, frac, incl, _ = ph.unpack(h)
            data = f.read(incl)
            ip = data[l2:]
            if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
                continue
            ihl = (ip[0] & 15) * 4
            sp, dp = struct.unpack('>HH', ip[ihl:ihl + 4])
            yield sec + frac / (1e9 if nano else 1e6), sp, dp, ip[ihl + 8:]


CSEQ = re.compile(rb'\r\n(?:CSeq|cseq|CSEQ)\s*:\s*\d+\s+([A-Z]+)')


def kind(payload):
    """'SUBSCRIBE', 'NOTIFY', ... for a request; '200 SUBSCRIBE', '407 SUBSCRIBE', ... for
    a response (the CSeq method; '?' when the snapshot cut it)."""
    line = payload.split(b'\r\n', 1)[0]
    if line.startswith(b'SIP/2.0 '):
        code = line[8:11].decode(errors='replace')
        m = CSEQ.search(payload)
        return '%s %s' % (code, m.group(1).decode() if m else '?')
    if not line.strip():
        return 'keepalive'
    return line.split(b' ', 1)[0].decode(errors='replace')


def pcap_counts(run):
    """Packets per (side, direction, kind) in the establishment and in the hold windows
    (from RUN/events: phones_start, established, hold_end)."""
    meta = json.load(open(os.path.join(run, 'meta.json')))
    ev = events(run)
    sp, up = meta['sport'], meta['uport']
    wins = {'establish': (ev.get('phones_start', 0), ev.get('established', 0)),
            'hold': (ev.get('established', 0), ev.get('hold_end', 0))}
    counts = {w: {} for w in wins}
    total = 0
    fn = os.path.join(run, 'cap.pcap')
    if not os.path.exists(fn):
        return {}
    for t, s, d, pl in pcap_packets(fn):
        total += 1
        if s == sp:
            side, dirn = ('upstream' if d == up else 'phones'), 'out'
        elif d == sp:
            side, dirn = ('upstream' if s == up else 'phones'), 'in'
        else:
            continue
        k = kind(pl)
        for w, (a, b) in wins.items():
            if a <= t < b:
                key = '%s %s %s' % (side, dirn, k)
                counts[w][key] = counts[w].get(key, 0) + 1
    res = {'packets': total, 'windows': {w: dict(seconds=round(b - a, 3), counts=counts[w])
                                         for w, (a, b) in wins.items()}}
    return res


# ------------------------------------------------------------------ report
def events(run):
    ev = {}
    try:
        for line in open(os.path.join(run, 'events')):
            p = line.split()
            if len(p) >= 2:
                ev.setdefault(p[0], float(p[1]))
    except OSError:
        pass
    return ev


def fmt(v, nd=1):
    if v is None:
        return '–'
    if isinstance(v, float):
        s = ('{:,.%df}' % nd).format(v)
        return s
    if isinstance(v, int):
        return '{:,}'.format(v)
    return str(v)


def first_time(rows, t0, pred):
    for r in rows:
        if r.get('m_ok') and pred(r):
            return r['t'] - t0
    return None


def snap(run, name):
    try:
        return json.load(open(os.path.join(run, 'proc-%s.json' % name)))
    except (OSError, ValueError):
        return None


def sipp_periods(run):
    """[(epoch at the end of the period, {column: value})] from SIPp's stat.csv (-fd)."""
    out = []
    try:
        with open(os.path.join(run, 'phones', 'stat.csv')) as f:
            rows = [x.rstrip('\n').split(';') for x in f if x.strip()]
    except OSError:
        return out
    hdr = rows[0]
    for r in rows[1:]:
        d = dict(zip(hdr, r))
        try:
            t = float(d.get('CurrentTime', '').split()[-1])
        except (ValueError, IndexError):
            continue
        v = {}
        for k, x in d.items():
            if k.endswith('(P)'):
                try:
                    v[k] = int(x)
                except ValueError:
                    pass
        out.append((t, v))
    return out


def notify_timeouts(run):
    """Epochs of the bridge's 'NOTIFY timed out: removing the phone subscription' lines."""
    import datetime
    out = []
    try:
        for line in open(os.path.join(run, 'bridge', 'bridge.log'), errors='replace'):
            if 'NOTIFY timed out' in line:
                ts = line.split()[0].rstrip('Z')
                try:
                    out.append(datetime.datetime.fromisoformat(ts).replace(
                        tzinfo=datetime.timezone.utc).timestamp())
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def malloc_totals(run, name):
    """(arenas, system bytes, in use bytes) from RUN/malloc-NAME.txt (glibc malloc_stats)."""
    try:
        text = open(os.path.join(run, 'malloc-%s.txt' % name)).read()
    except OSError:
        return None
    m = re.search(r'Total \(incl\. mmap\):\s*system bytes\s*=\s*(\d+)\s*in use bytes\s*=\s*(\d+)', text)
    if not m:
        return None
    return len(re.findall(r'^Arena \d+:', text, re.M)), int(m.group(1)), int(m.group(2))


def report(run):
    meta = json.load(open(os.path.join(run, 'meta.json')))
    ev = events(run)
    rows = read_samples(run)
    n, T = meta['phones'], meta['targets']
    t0 = ev.get('phones_start')
    L = []
    L.append('### Scale run: %s phones over %s targets, held %d s (`bench/scale.sh`)' % (
        fmt(n), fmt(T), meta['hold_s']))
    L.append('')
    try:
        L.append('Command: `%s`' % open(os.path.join(run, 'command.txt')).read().strip())
        L.append('')
        L.append('Machine and versions: ' + '; '.join(
            open(os.path.join(run, 'machine.txt')).read().strip().splitlines()))
        L.append('')
    except OSError:
        pass
    loads = [float(r['load1']) for r in rows if r.get('load1') is not None]
    if loads:
        L.append('Load average (1 min) during the run: median %.2f, max %.2f (2 cores, shared with '
                 'fuzzers and builds)' % (statistics.median(loads), max(loads)))
        L.append('')
    # ---------------- establishment
    rtd = rtt(os.path.join(run, 'phones'))
    est = rtd.get('2', [])
    phones_csv_fn = os.path.join(run, 'phones.csv')
    ph = read_phones(phones_csv_fn) if os.path.exists(phones_csv_fn) else []
    st = compare.sipp_stat(os.path.join(run, 'phones'))
    fn_ms = meta.get('first_notify_ms') or 2000
    rate = meta.get('upstream_rate') or 20
    L.append('| establishment, from cold (time from the first phone SUBSCRIBE) | |')
    L.append('|---|---|')
    L.append('| phones offered at | %s/s (%s phones: the first %s make the %s targets) |' % (
        fmt(meta['phone_rate']), fmt(n), fmt(T), fmt(T)))
    if t0:
        tu = first_time(rows, t0, lambda r: (r.get('dlg_active') or 0) >= T and (r.get('pres_active') or 0) >= T)
        tk = first_time(rows, t0, lambda r: (r.get('targets') or 0) >= T and (r.get('unknown') or 0) == 0)
        L.append('| all %s upstream subscriptions active (/metrics, every %s s) | **%s s** (design: %s SUBSCRIBEs at '
                 '`upstream_rate` %d/s = %s s) |' % (
                     fmt(2 * T), meta['sample_s'], fmt(tu), fmt(2 * T), rate, fmt(2.0 * T / rate)))
        L.append('| every target\'s state known (no target `unknown`) | %s s |' % fmt(tk))
    if est:
        start = min(t - r for t, r in est)
        end = max(t for t, _ in est)
        vals = [r for _, r in est]
        waited = sum(1 for v in vals if v >= fn_ms - 50)
        L.append('| every phone had its first NOTIFY | **%s s** (%s of %s phones; SIPp offered them over %s s) |' % (
            fmt((end - start) / 1000.0), fmt(len(est)), fmt(n), fmt(n / float(meta['phone_rate']))))
        L.append('| SUBSCRIBE → first NOTIFY p50 / p99 / max | %s / %s / %s ms |' % (
            fmt(bench.pct(vals, 50), 0), fmt(bench.pct(vals, 99), 0), fmt(max(vals), 0)))
        L.append('| phones whose first NOTIFY waited `first_notify_timeout_ms` (%d ms; target not yet known '
                 'upstream: the unknown rendering, the state follows) | %s |' % (fn_ms, fmt(waited)))
    L.append('')
    # ---------------- memory
    b, e, h = snap(run, 'before'), snap(run, 'established'), snap(run, 'end')
    if b and e and h:
        L.append('| memory of the bridge process | VmRSS | PSS | RssAnon |')
        L.append('|---|---:|---:|---:|')
        for name, s in (('started, nothing held', b), ('all established', e), ('end of the hold', h)):
            L.append('| %s | %s MB | %s MB | %s MB |' % (name, fmt(s['rss_kb'] / 1024.0), fmt(s['pss_kb'] / 1024.0),
                                                         fmt(s['anon_kb'] / 1024.0)))
        for name, s in (('all established', e), ('end of the hold', h)):
            L.append('| **per held phone subscription**, %s (growth / %s phones, targets included) | **%s B** | %s B | %s B |' % (
                name, fmt(n), fmt(round((s['rss_kb'] - b['rss_kb']) * 1024.0 / n)),
                fmt(round((s['pss_kb'] - b['pss_kb']) * 1024.0 / n)),
                fmt(round((s['anon_kb'] - b['anon_kb']) * 1024.0 / n))))
        pk = max((r['rss_kb'] for r in rows if r.get('rss_kb')), default=None)
        if pk:
            L.append('| peak VmRSS (samples every %s s) | %s MB | | |' % (meta['sample_s'], fmt(pk / 1024.0)))
        L.append('')
    ms = {k: malloc_totals(run, k) for k in ('before', 'established', 'end')}
    if all(ms.values()):
        L.append('| glibc malloc_stats() (gdb) | in use (live heap, chunk bytes) | taken from the system | per held phone: '
                 'in use / taken |')
        L.append('|---|---:|---:|---:|')
        for k, name in (('before', 'started, nothing held'), ('established', 'all established'),
                        ('end', 'end of the hold')):
            per = '–' if k == 'before' else '%s B / %s B' % (
                fmt(round((ms[k][2] - ms['before'][2]) / float(n))), fmt(round((ms[k][1] - ms['before'][1]) / float(n))))
            L.append('| %s (%d arenas) | %s MB | %s MB | %s |' % (
                name, ms[k][0], fmt(ms[k][2] / 1048576.0), fmt(ms[k][1] / 1048576.0), per))
        L.append('')
    # ---------------- CPU
    if e and h and b:
        hold_s = h['t'] - e['t']
        est_s = e['t'] - b['t']
        L.append('| CPU of the bridge process (utime+stime, /proc) | |')
        L.append('|---|---|')
        per = sipp_periods(run)
        refr = sum(v.get('refresh(P)', 0) for t, v in per if b['t'] <= t - 2.5 < e['t'])
        L.append('| establishment (%s s; the phones already held refreshed %s times meanwhile) | %s CPU s = %s ms per '
                 'phone subscription, refreshes included |' % (
                     fmt(est_s), fmt(refr), fmt((e['cpu'] - b['cpu']) / HZ, 2),
                     fmt((e['cpu'] - b['cpu']) * 1000.0 / HZ / n, 3)))
        L.append('| **the hold** (%s s, refreshes only) | **%s CPU s per s** (%s CPU s) |' % (
            fmt(hold_s), fmt((h['cpu'] - e['cpu']) / HZ / hold_s, 4), fmt((h['cpu'] - e['cpu']) / HZ, 2)))
        # per-minute windows of the hold
        hr = [r for r in rows if e['t'] <= r['t'] <= h['t'] and r.get('cpu') is not None]
        wins = []
        i = 0
        for j in range(len(hr)):
            while hr[j]['t'] - hr[i]['t'] > 60.0:
                i += 1
            if hr[j]['t'] - hr[i]['t'] >= 55.0:
                wins.append((hr[j]['cpu'] - hr[i]['cpu']) / HZ / (hr[j]['t'] - hr[i]['t']))
        if wins:
            L.append('| the hold, per 60 s window: min / median / max | %s / %s / %s CPU s per s |' % (
                fmt(min(wins), 4), fmt(statistics.median(wins), 4), fmt(max(wins), 4)))
        uc = [r for r in hr if r.get('up_cpu') is not None]
        if len(uc) > 1:
            L.append('| (the upstream Kamailio during the hold, all its processes) | %s CPU s per s |' % fmt(
                (uc[-1]['up_cpu'] - uc[0]['up_cpu']) / HZ / (uc[-1]['t'] - uc[0]['t']), 4))
        L.append('')
    # ---------------- traffic
    try:
        cap = json.load(open(os.path.join(run, 'pcap.json')))
    except (OSError, ValueError):
        cap = {}
    if cap.get('windows'):
        hw = cap['windows']['hold']
        secs = hw['seconds'] or 1
        c = hw['counts']

        def rate_of(*keys):
            return sum(c.get(k, 0) for k in keys) / secs
        exp_ph = sum(1000.0 / r for _, _, r in ph) if ph else None
        ue = meta.get('upstream_expires') or 600
        L.append('| refresh traffic during the hold (dumpcap on lo, %s s) | packets/s |' % fmt(secs))
        L.append('|---|---:|')
        L.append('| phones → bridge: SUBSCRIBE (refreshes; expected from the phones\' Expires: %s/s) | %s |' % (
            fmt(exp_ph), fmt(rate_of('phones in SUBSCRIBE'))))
        L.append('| bridge → phones: 200 / NOTIFY | %s / %s |' % (
            fmt(rate_of('phones out 200 SUBSCRIBE')), fmt(rate_of('phones out NOTIFY'))))
        L.append('| phones → bridge: 200 to NOTIFY | %s |' % fmt(rate_of('phones in 200 NOTIFY')))
        L.append('| **phone side, all packets** | **%s** |' % fmt(sum(v for k, v in c.items() if k.startswith('phones ')) / secs))
        L.append('| bridge → upstream: SUBSCRIBE (refreshes; %s subscriptions at upstream_expires %d s, refreshed at '
                 '70–85 %%: %s/s) | %s |' % (fmt(2 * T), ue, fmt(2 * T / (0.775 * ue)), fmt(rate_of('upstream out SUBSCRIBE'))))
        L.append('| upstream → bridge: 407 / 200 to SUBSCRIBE | %s / %s |' % (
            fmt(rate_of('upstream in 407 SUBSCRIBE')), fmt(rate_of('upstream in 200 SUBSCRIBE'))))
        L.append('| upstream → bridge: NOTIFY; bridge → upstream: 200 to NOTIFY | %s / %s |' % (
            fmt(rate_of('upstream in NOTIFY')), fmt(rate_of('upstream out 200 NOTIFY'))))
        L.append('| bridge ↔ upstream: OPTIONS keep-alive (out / in 200) | %s / %s |' % (
            fmt(rate_of('upstream out OPTIONS'), 2), fmt(rate_of('upstream in 200 OPTIONS'), 2)))
        L.append('| **upstream side, all packets** | **%s** |' % fmt(sum(v for k, v in c.items() if k.startswith('upstream ')) / secs))
        other = {k: v for k, v in c.items() if not any(k == x for x in (
            'phones in SUBSCRIBE', 'phones out 200 SUBSCRIBE', 'phones out NOTIFY', 'phones in 200 NOTIFY',
            'upstream out SUBSCRIBE', 'upstream in 407 SUBSCRIBE', 'upstream in 200 SUBSCRIBE', 'upstream in NOTIFY',
            'upstream out 200 NOTIFY', 'upstream out OPTIONS', 'upstream in 200 OPTIONS'))}
        if other:
            L.append('| other packets in the hold (count) | %s |' % ', '.join(
                '%s: %s' % (k, fmt(v)) for k, v in sorted(other.items())))
        L.append('')
    # ---------------- health, per window
    t_est, t_end = ev.get('established'), ev.get('hold_end')
    wins = [('establishment', t0, t_est), ('hold', t_est, t_end)]
    L.append('| health | establishment | hold |')
    L.append('|---|---:|---:|')
    if st:
        L.append('| SIPp phones: created / failed (whole run) | %s / %s (timeouts %s, unexpected %s, max UDP retrans %s) | |' % (
            fmt(st.get('created')), fmt(st.get('failed')), fmt(st.get('failed_timeout')),
            fmt(st.get('failed_unexpected')), fmt(st.get('failed_retrans'))))
    per = sipp_periods(run)
    if per and t0 and t_est and t_end:
        def in_win(key, a, b):
            # a period of SIPp's statistics (-fd 5) ends at t: counted where its middle is
            return sum(v.get(key, 0) for t, v in per if a <= t - 2.5 < b)
        L.append('| SIPp retransmissions | %s | %s |' % tuple(fmt(in_win('Retransmissions(P)', a, b)) for _, a, b in wins))
        L.append('| SIPp: refreshes sent / their NOTIFYs / NOTIFYs during a pause / refreshes refused | %s | %s |' % tuple(
            ' / '.join(fmt(in_win(k, a, b)) for k in ('refresh(P)', 'refresh_notify(P)', 'hold_notify(P)',
                                                       'refresh_refused(P)')) for _, a, b in wins))
    r3 = rtd.get('3', [])
    if r3 and t0 and t_est and t_end:
        cells = []
        for _, a, b in wins:
            v = [r for t, r in r3 if a <= t0 + t / 1000.0 < b]
            cells.append('%s / %s / %s ms (%s; %s > 1 s)' % (fmt(bench.pct(v, 50), 0), fmt(bench.pct(v, 99), 0),
                                                              fmt(max(v), 0), fmt(len(v)), fmt(sum(1 for x in v if x > 1000)))
                         if v else '–')
        L.append('| refresh SUBSCRIBE → 200 p50 / p99 / max | %s | %s |' % tuple(cells))
    if rows and t0 and t_est and t_end:
        def at(t):
            before = [r for r in rows if r['t'] <= t]
            return before[-1] if before else rows[0]

        def delta(col, a, b):
            return (at(b)[col] or 0) - (at(a)[col] or 0)
        L.append('| UDP receive drops (/proc/net/udp) at the bridge / upstream Kamailio / SIPp | %s | %s |' % tuple(
            ' / '.join(fmt(delta(c, a, b)) for c in ('drops', 'up_drops', 'sipp_drops')) for _, a, b in wins))
        L.append('| CPU pressure seen by the sampler: its 2 s sample late by > 1 s (count) | %s | %s |' % tuple(
            fmt(sum(1 for x, y in zip(rows, rows[1:]) if a <= y['t'] <= b and y['t'] - x['t'] > meta['sample_s'] + 1.0))
            for _, a, b in wins))
        to = notify_timeouts(run)
        if to:
            L.append('| phone subscriptions the bridge removed after a NOTIFY timed out (bridge log), in / after | %s | %s '
                     '(after the hold: %s) |' % (fmt(sum(1 for t in to if t0 <= t < t_est)),
                                                 fmt(sum(1 for t in to if t_est <= t < t_end)),
                                                 fmt(sum(1 for t in to if t >= t_end))))
    L.append('')
    L.append('| at the end of the hold | |')
    L.append('|---|---|')
    try:
        me = json.load(open(os.path.join(run, 'metrics-end.json')))
        up = me.get('up', {})
        L.append('| /metrics: phone subscriptions / targets / upstream active (dialog, presence) / not active / '
                 'transaction timeouts | %s / %s / %s, %s / %s / %s |' % (
                     fmt(me.get('phones')), fmt(sum(me.get('targets', {}).values())),
                     fmt(up.get('dialog', {}).get('active')), fmt(up.get('presence', {}).get('active')),
                     fmt(sum(v for pk in up.values() for k, v in pk.items() if k != 'active')), fmt(me.get('tx_timeouts'))))
    except (OSError, ValueError):
        pass
    mr = [r for r in rows if r.get('m_ok') and e and h and e['t'] <= r['t'] <= h['t'] + 1]
    if len(mr) > 1:
        L.append('| /metrics during the hold: NOTIFYs sent to phones / received from upstream | %s / %s |' % (
            fmt((mr[-1]['notifies_sent'] or 0) - (mr[0]['notifies_sent'] or 0)),
            fmt((mr[-1]['notifies_received'] or 0) - (mr[0]['notifies_received'] or 0))))
    try:
        shm = json.load(open(os.path.join(run, 'up-shm.json')))
        if shm.get('end') is not None and shm.get('before') is not None:
            L.append('| upstream Kamailio shm real_used: before / end (B per upstream subscription) | %s / %s MB (%s B) |' % (
                fmt(shm['before'] / 1048576.0), fmt(shm['end'] / 1048576.0),
                fmt(round((shm['end'] - shm['before']) / (2.0 * T)))))
    except (OSError, ValueError):
        pass
    L.append('')
    return '\n'.join(L)


def main():
    a = sys.argv[1:]
    if not a:
        raise SystemExit(__doc__)
    cmd = a[0]
    if cmd == 'phones_csv':
        phones_csv(a[1], *(int(x) for x in a[2:8]))
    elif cmd == 'pid_of':   # pid_of PGID COMM: the process of the group with that name
        pids = [p for p, c, _ in compare.group(int(a[1])) if c == a[2][:15]]
        for _ in range(50):
            if pids:
                break
            time.sleep(0.1)
            pids = [p for p, c, _ in compare.group(int(a[1])) if c == a[2][:15]]
        if not pids:
            sys.exit(1)
        print(pids[0])
    elif cmd == 'proc':
        print(json.dumps(proc(int(a[1]))))
    elif cmd == 'metrics':
        print(json.dumps(metrics(a[1])))
    elif cmd == 'sample':
        sample(a[1], int(a[2]), int(a[3]), a[4], int(a[5]), int(a[6]), float(a[7]), float(a[8]))
    elif cmd == 'ready':
        sys.exit(0 if ready(a[1], int(a[2]), int(a[3])) else 1)
    elif cmd == 'count_rtd':
        print(count_rtd(a[1], a[2]))
    elif cmd == 'pcap':
        print(json.dumps(pcap_counts(a[1])))
    elif cmd == 'report':
        print(report(a[1]))
    else:
        raise SystemExit(__doc__)


if __name__ == '__main__':
    main()
