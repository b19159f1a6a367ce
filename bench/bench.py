#!/usr/bin/env python3
"""Helpers for bench/run.sh (standard library only).

  bench.py freeport                      a port free on 127.0.0.1 for UDP and TCP
  bench.py proc PID                      "<cpu_ticks> <vmrss_kb>" of a process (all threads)
  bench.py cpu_ns PID                    CPU time of a process in ns (all threads, schedstat)
  bench.py udpdrops PORT                 receive-queue drops of the UDP socket(s) on PORT
  bench.py count_rtd RTT_CSV NAME        number of rtd NAME samples in a sipp -trace_rtt file
  bench.py step DIR                      summarise one load step (sipp files + meta.json) as JSON
  bench.py fanout FIELDS META_JSON       fan-out latencies from a tshark field dump
  bench.py report RESULTS_DIR            markdown summary of every step / fan-out in RESULTS_DIR
"""
import glob
import json
import os
import re
import socket
import statistics
import sys

HZ = os.sysconf('SC_CLK_TCK')


def freeport():
    import random
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


def proc(pid):
    """CPU ticks (utime+stime, all threads) and VmRSS (kB) of a process."""
    with open('/proc/%d/stat' % pid) as f:
        s = f.read()
    rest = s[s.rfind(')') + 2:].split()
    ticks = int(rest[11]) + int(rest[12])
    rss = 0
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                rss = int(line.split()[1])
    return ticks, rss


def cpu_ns(pid):
    """Time on a CPU in ns, all threads (/proc/PID/task/*/schedstat), or 0."""
    total = 0
    for fn in glob.glob('/proc/%d/task/*/schedstat' % pid):
        try:
            with open(fn) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def udpdrops(port):
    """Sum of the `drops` column of /proc/net/udp for sockets bound to PORT."""
    total = 0
    hexport = ':%04X' % port
    for fn in ('/proc/net/udp', '/proc/net/udp6'):
        try:
            with open(fn) as f:
                next(f)
                for line in f:
                    p = line.split()
                    if p[1].endswith(hexport):
                        total += int(p[-1])
        except OSError:
            pass
    return total


def read_rtt(fn):
    """{rtd name: [(completion_ms, rtt_ms)]} from a sipp -trace_rtt file."""
    rtd = {}
    try:
        with open(fn) as f:
            next(f, None)
            for line in f:
                p = line.strip().split(';')
                if len(p) < 3:
                    continue
                try:
                    rtd.setdefault(p[2], []).append((float(p[0]), float(p[1])))
                except ValueError:
                    continue
    except OSError:
        pass
    return rtd


def pct(v, p):
    if not v:
        return None
    v = sorted(v)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


def upstream_setup(log_fn):
    """Upstream settle time per target, from the bridge's info log: from 'watching new
    target' (its first phone arrived, upstream SUBSCRIBEs sent) to the target's last
    'target state changed' within 5 s. A lower bound of the time until both upstream
    streams have spoken (a NOTIFY that does not change the merged state is not
    logged). Returns {n, p50, max} in ms."""
    import datetime
    first, ready = {}, {}
    pat = re.compile(r'^(\S+)Z\s+INFO .*?(watching new target|target state changed).*?target=(\S+)(.*)$')
    try:
        with open(log_fn, errors='replace') as f:
            for line in f:
                m = pat.match(line)
                if not m:
                    continue
                t = datetime.datetime.fromisoformat(m.group(1)).timestamp()
                tgt = m.group(3)
                if m.group(2).startswith('watching'):
                    first.setdefault(tgt, t)
                elif tgt in first and t - first[tgt] < 5:
                    ready[tgt] = t
    except OSError:
        return None
    v = sorted((ready[k] - first[k]) * 1000.0 for k in ready if k in first)
    if not v:
        return None
    return dict(n=len(v), p50=round(statistics.median(v), 1), max=round(v[-1], 1))


def step(d):
    meta = json.load(open(os.path.join(d, 'meta.json')))
    res = dict(meta)
    stat = sorted(glob.glob(os.path.join(d, '*_.csv')) + glob.glob(os.path.join(d, 'stat.csv')))
    if stat:
        with open(stat[-1]) as f:
            lines = [l.rstrip('\n') for l in f if l.strip()]
        hdr = lines[0].split(';')
        last = dict(zip(hdr, lines[-1].split(';')))
        for k in ('TotalCallCreated', 'SuccessfulCall(C)', 'FailedCall(C)', 'Retransmissions(C)',
                  'FailedTimeoutOnRecv(C)', 'FailedUnexpectedMessage(C)', 'FailedMaxUDPRetrans(C)',
                  'OutOfCallMsgs(C)', 'DeadCallMsgs(C)', 'hold_notify(C)'):
            try:
                res[k] = int(last.get(k, 0) or 0)
            except ValueError:
                res[k] = None
    rtt_files = glob.glob(os.path.join(d, '*_rtt.csv'))
    rtd = read_rtt(rtt_files[0]) if rtt_files else {}
    for name in ('1', '2', '3', '4'):
        vals = [x[1] for x in rtd.get(name, [])]
        if vals:
            res['rtd%s' % name] = dict(n=len(vals), p50=pct(vals, 50), p95=pct(vals, 95),
                                       p99=pct(vals, 99), max=max(vals))
    est = rtd.get('2', [])
    if len(est) > 1:
        start = min(t - r for t, r in est)
        end = max(t for t, _ in est)
        # from the first SUBSCRIBE sent to the last phone's first NOTIFY received
        res['establish_span_s'] = round((end - start) / 1000.0, 3)
        res['achieved_rate'] = round(len(est) / ((end - start) / 1000.0), 1) if end > start else None
    try:
        res.update(json.load(open(os.path.join(d, 'sanity.json'))))
    except (OSError, ValueError):
        pass
    up = upstream_setup(os.path.join(d, 'bridge.log'))
    if up:
        res['upstream_ready_ms'] = up
    n = meta.get('count') or 1
    c = meta.get('cpu', {})
    m = meta.get('rss_kb', {})
    c = {k: v for k, v in c.items() if v is not None}
    m = {k: v for k, v in m.items() if v is not None}
    if 'before' in c and 'established' in c:
        res['cpu_ms_per_sub_establish'] = round((c['established'] - c['before']) * 1000.0 / HZ / n, 4)
    if 'before' in c and 'end' in c:
        res['cpu_ms_per_sub_lifecycle'] = round((c['end'] - c['before']) * 1000.0 / HZ / n, 4)
    if 'before' in m and 'established' in m:
        res['rss_bytes_per_sub_established'] = round((m['established'] - m['before']) * 1024.0 / n)
    if 'before' in m and 'settled' in m:
        res['rss_bytes_per_sub_settled'] = round((m['settled'] - m['before']) * 1024.0 / n)
    return res


def fanout(fields_fn, meta_fn):
    """Upstream NOTIFY in -> phone NOTIFYs out, per trigger, from
    `tshark -T fields -e frame.time_epoch -e udp.srcport -e udp.dstport -e sip.Method
    -e sip.Status-Code -e sip.CSeq.method -e sip.Event`."""
    meta = json.load(open(meta_fn))
    bp, kp, wp = meta['bridge_port'], meta['kam_port'], meta['watch_port']
    t_from = meta['t_triggers']
    pkts = []
    with open(fields_fn) as f:
        for line in f:
            p = line.rstrip('\n').split(';')
            if len(p) < 7 or not p[0]:
                continue
            try:
                pkts.append((float(p[0]), int(p[1] or 0), int(p[2] or 0), p[3], p[4], p[5], p[6]))
            except ValueError:
                continue
    pkts.sort()
    trig = [x for x in pkts if x[0] >= t_from and x[1] == kp and x[2] == bp and x[3] == 'NOTIFY']
    out = []
    for i, t in enumerate(trig):
        t0 = t[0]
        # this trigger's fan-out: until the next trigger, at most 2 s (the watchers'
        # final NOTIFYs at the end are not part of it)
        t1 = min(trig[i + 1][0] if i + 1 < len(trig) else float('inf'), t0 + 2.0)
        win = [x for x in pkts if t0 <= x[0] < t1]
        notif = [x[0] for x in win if x[1] == bp and x[2] == wp and x[3] == 'NOTIFY']
        acks = [x[0] for x in win if x[1] == wp and x[2] == bp and x[4] == '200' and x[5] == 'NOTIFY']
        up200 = [x[0] for x in win if x[1] == bp and x[2] == kp and x[4] == '200' and x[5] == 'NOTIFY']
        r = dict(trigger=i + 1, event=t[6], phone_notifies=len(notif))
        ms = lambda v: round((v - t0) * 1000.0, 3)
        if up200:
            r['upstream_200_ms'] = ms(up200[0])
        if notif:
            r['first_ms'] = ms(notif[0])
            r['median_ms'] = ms(statistics.median(notif))
            r['last_ms'] = ms(notif[-1])
            if len(notif) >= meta['watchers']:
                r['nth_ms'] = ms(notif[meta['watchers'] - 1])
        if acks:
            r['last_phone_200_ms'] = ms(acks[-1])
        out.append(r)
    return out


def median(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


def report(rdir):
    steps = []
    for fn in sorted(glob.glob(os.path.join(rdir, '*/step.json'))):
        try:
            steps.append(json.load(open(fn)))
        except (OSError, ValueError):
            pass
    lines = []
    sweep = [s for s in steps if s.get('phase') == 'sweep']
    if sweep:
        lines.append('### Rate sweep (%d phone subscriptions over %d targets per step)' %
                     (sweep[0]['count'], sweep[0]['targets']))
        lines.append('')
        lines.append('| offered/s | runs | failed calls (per run) | sipp retrans (per run) | achieved/s (median) | '
                     'SUB→200 p50/p99/max ms | SUB→NOTIFY p50/p99/max ms | bridge CPU ms/sub (median) | '
                     'bridge RSS B/sub (median) | bridge UDP drops (per run) | Kamailio UDP drops | extra NOTIFYs | upstream settle p50/max ms | load avg (1 min) |')
        lines.append('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
        for rate in sorted({s['rate'] for s in sweep}):
            ss = [s for s in sweep if s['rate'] == rate]
            def med_rtd(name, key):
                return median([s.get(name, {}).get(key) for s in ss])
            fmt = lambda v: '-' if v is None else ('%g' % v)
            lines.append('| %d | %d | %s | %s | %s | %s/%s/%s | %s/%s/%s | %s | %s | %s | %s | %s | %s/%s | %s |' % (
                rate, len(ss),
                ' '.join(str(s.get('FailedCall(C)')) for s in ss),
                ' '.join(str(s.get('Retransmissions(C)')) for s in ss),
                fmt(median([s.get('achieved_rate') for s in ss])),
                fmt(med_rtd('rtd1', 'p50')), fmt(med_rtd('rtd1', 'p99')), fmt(med_rtd('rtd1', 'max')),
                fmt(med_rtd('rtd2', 'p50')), fmt(med_rtd('rtd2', 'p99')), fmt(med_rtd('rtd2', 'max')),
                fmt(median([s.get('cpu_ms_per_sub_establish') for s in ss])),
                fmt(median([s.get('rss_bytes_per_sub_established') for s in ss])),
                ' '.join(str(s.get('udp_drops')) for s in ss),
                ' '.join(str(s.get('kam_udp_drops')) for s in ss),
                ' '.join(str(s.get('hold_notify(C)')) for s in ss),
                fmt(median([s.get('upstream_ready_ms', {}).get('p50') for s in ss])),
                fmt(median([s.get('upstream_ready_ms', {}).get('max') for s in ss])),
                ' '.join(str(s.get('loadavg')) for s in ss)))
        lines.append('')
        def ok(s, clean):
            good = s.get('FailedCall(C)') == 0 and s.get('SuccessfulCall(C)') == s['count']
            if clean:
                good = (good and s.get('Retransmissions(C)') == 0 and s.get('udp_drops') == 0
                        and (s.get('achieved_rate') or 0) >= 0.95 * s['rate'])
            return good
        for clean, what in ((False, '0 failed calls in every run'),
                            (True, '0 failed calls, 0 SIPp retransmissions, 0 datagrams dropped at the bridge and '
                             'achieved >= 95 % of offered in every run')):
            best = None
            for rate in sorted({s['rate'] for s in sweep}):
                if all(ok(s, clean) for s in sweep if s['rate'] == rate):
                    best = rate
                else:
                    break
            lines.append('highest offered rate with %s (and at every lower rate): %s' % (what, best))
        warn = sum(s.get('bridge_warnings') or 0 for s in sweep)
        subs = sorted({s.get('targets_subscribed') for s in sweep})
        lines.append('')
        lines.append('bridge warnings in all sweep logs: %d; upstream targets per step: %s' % (warn, subs))
        lines.append('')
    mem = [s for s in steps if s.get('phase') == 'mem']
    if mem:
        lines.append('### Memory and CPU (%d phone subscriptions over %d targets, held)' %
                     (mem[0]['count'], mem[0]['targets']))
        lines.append('')
        lines.append('| run | offered/s | failed | VmRSS before kB | established kB | settled (+%ds) kB | '
                     'after unsubscribe kB | B/sub established | B/sub settled | CPU ms/sub establish | '
                     'CPU ms/sub whole lifecycle |' % mem[0].get('settle_s', 0))
        lines.append('|---|---|---|---|---|---|---|---|---|---|---|')
        for s in mem:
            m = s.get('rss_kb', {})
            lines.append('| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |' % (
                s['label'], s['rate'], s.get('FailedCall(C)'), m.get('before'), m.get('established'),
                m.get('settled'), m.get('end'), s.get('rss_bytes_per_sub_established'),
                s.get('rss_bytes_per_sub_settled'), s.get('cpu_ms_per_sub_establish'),
                s.get('cpu_ms_per_sub_lifecycle')))
        lines.append('')
        lines.append('median B/sub settled: %s; median CPU ms/sub establish: %s; whole lifecycle: %s' % (
            median([s.get('rss_bytes_per_sub_settled') for s in mem]),
            median([s.get('cpu_ms_per_sub_establish') for s in mem]),
            median([s.get('cpu_ms_per_sub_lifecycle') for s in mem])))
        lines.append('')
    fans = []
    for fn in sorted(glob.glob(os.path.join(rdir, '*/fanout.json'))):
        try:
            fans.append((os.path.basename(os.path.dirname(fn)), json.load(open(fn))))
        except (OSError, ValueError):
            pass
    if fans:
        lines.append('### Fan-out (upstream presence NOTIFY in → phone NOTIFYs out, on the wire)')
        lines.append('')
        lines.append('| run | trigger | phone NOTIFYs | bridge 200 upstream ms | first ms | median ms | '
                     '**last ms** | last phone 200 ms |')
        lines.append('|---|---|---|---|---|---|---|---|')
        alls, firsts, cpus = [], [], []
        for label, rows in fans:
            try:
                meta = json.load(open(os.path.join(rdir, label, 'meta.json')))
                c = meta.get('cpu_ns')
                if c and rows:
                    cpus.append((c['after'] - c['before']) / 1e6 / len(rows))
            except (OSError, ValueError, KeyError):
                pass
            for r in rows:
                lines.append('| %s | %s | %s | %s | %s | %s | **%s** | %s |' % (
                    label, r['trigger'], r['phone_notifies'], r.get('upstream_200_ms'), r.get('first_ms'),
                    r.get('median_ms'), r.get('nth_ms', r.get('last_ms')), r.get('last_phone_200_ms')))
                if 'nth_ms' in r:
                    alls.append(r['nth_ms'])
                if 'first_ms' in r:
                    firsts.append(r['first_ms'])
        lines.append('')
        if alls:
            lines.append('fan-outs: %d; to the last phone NOTIFY: median %.3f ms, min %.3f, max %.3f' % (
                len(alls), statistics.median(alls), min(alls), max(alls)))
            lines.append('')
        if firsts:
            lines.append('to the first phone NOTIFY: median %.3f ms, min %.3f, max %.3f' % (
                statistics.median(firsts), min(firsts), max(firsts)))
            lines.append('')
        if cpus:
            lines.append('bridge CPU per fan-out (all it did between the first and the last trigger, '
                         'the phones\' 200s included, divided by the triggers): %s ms' % (
                             ', '.join('%.2f' % c for c in cpus)))
            lines.append('')
    return '\n'.join(lines)


def main():
    a = sys.argv[1:]
    if not a:
        raise SystemExit(__doc__)
    cmd = a[0]
    if cmd == 'freeport':
        print(freeport())
    elif cmd == 'proc':
        print('%d %d' % proc(int(a[1])))
    elif cmd == 'cpu_ns':
        print(cpu_ns(int(a[1])))
    elif cmd == 'udpdrops':
        print(udpdrops(int(a[1])))
    elif cmd == 'count_rtd':
        print(len(read_rtt(a[1]).get(a[2], [])))
    elif cmd == 'step':
        print(json.dumps(step(a[1])))
    elif cmd == 'fanout':
        print(json.dumps(fanout(a[1], a[2])))
    elif cmd == 'report':
        print(report(a[1]))
    else:
        raise SystemExit(__doc__)


if __name__ == '__main__':
    main()
