#!/usr/bin/env python3
"""Helpers for bench/compare.sh (standard library only; reuses bench/bench.py).

  compare.py freeport | udpdrops PORT           as bench.py
  compare.py pids PGID                          processes of a group (not timeout(1)), comma list
  compare.py cpu PGID                           utime+stime ticks, summed over the group
  compare.py snap PGID UPGID PORT UPORT         "cpu upstream_cpu drops upstream_drops" (0 = none)
  compare.py mem PGID                           "PSS_KB,RSS_KB" summed over the group (smaps_rollup)
  compare.py shm CTL                            Kamailio shared memory real_used bytes (kamcmd)
  compare.py sample PGID OUT INTERVAL           t,cpu_ticks,pss_kb,rss_kb rows until OUT.stop exists
  compare.py count_rtd DIR NAME                 rtd NAME samples in DIR/*_rtt.csv
  compare.py active HOST:PORT                   targets whose upstream dialog AND presence are active
  compare.py step DIR | memstep DIR | fanout DIR | instr DIR     one result as JSON
  compare.py report RESULTS_DIR                 markdown comparison of everything in RESULTS_DIR
"""
import glob
import json
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (freeport, udpdrops, read_rtt, pct)

HZ = os.sysconf('SC_CLK_TCK')
SERVERS = ('kamailio', 'bridge')
NAMES = {'kamailio': 'Kamailio 5.6 alone', 'bridge': 'blf-bridge (+ upstream Kamailio)'}


# ------------------------------------------------------------------ /proc
def group(pgid):
    """[(pid, comm, utime+stime ticks)] of the processes in a process group, without
    timeout(1) (the wrapper every process of compare.sh is started under)."""
    out = []
    for d in glob.glob('/proc/[0-9]*'):
        try:
            with open(d + '/stat') as f:
                s = f.read()
        except OSError:
            continue
        comm = s[s.find('(') + 1:s.rfind(')')]
        rest = s[s.rfind(')') + 2:].split()
        if int(rest[2]) == pgid and comm != 'timeout':
            out.append((int(d[6:]), comm, int(rest[11]) + int(rest[12])))
    return out


def cpu(pgid):
    return sum(t for _, _, t in group(pgid))


def mem(pgid):
    pss = rss = 0
    for pid, _, _ in group(pgid):
        try:
            with open('/proc/%d/smaps_rollup' % pid) as f:
                for line in f:
                    if line.startswith('Pss:'):
                        pss += int(line.split()[1])
                    elif line.startswith('Rss:'):
                        rss += int(line.split()[1])
        except OSError:
            pass
    return pss, rss


def shm(ctl):
    import subprocess
    try:
        out = subprocess.run(['kamcmd', '-s', ctl, 'core.shmmem'], capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r'real_used:\s*(\d+)', out)
    return int(m.group(1)) if m else None


def sample(pgid, out, interval):
    t0 = time.time()
    with open(out, 'w') as f:
        f.write('t,cpu_ticks,pss_kb,rss_kb\n')
        while not os.path.exists(out + '.stop') and time.time() - t0 < 3600:
            pss, rss = mem(pgid)
            f.write('%.2f,%d,%d,%d\n' % (time.time(), cpu(pgid), pss, rss))
            f.flush()
            time.sleep(interval)


def active(hostport):
    """min(dialog active, presence active) from the bridge's /metrics."""
    import urllib.request
    try:
        with urllib.request.urlopen('http://%s/metrics' % hostport, timeout=3) as r:
            text = r.read().decode()
    except OSError:
        return 0
    n = {}
    for line in text.splitlines():
        m = re.match(r'blf_bridge_upstream_subscriptions\{(.*)\}\s+(\d+)', line)
        if m and 'state="active"' in m.group(1):
            pk = re.search(r'package="(\w+)"', m.group(1))
            if pk:
                n[pk.group(1)] = int(m.group(2))
    return min(n.get('dialog', 0), n.get('presence', 0))


def rtt_of(d):
    files = glob.glob(os.path.join(d, '*_rtt.csv'))
    return bench.read_rtt(files[0]) if files else {}


def sipp_stat(d):
    res = {}
    try:
        with open(os.path.join(d, 'stat.csv')) as f:
            lines = [line.rstrip('\n') for line in f if line.strip()]
        hdr = lines[0].split(';')
        last = dict(zip(hdr, lines[-1].split(';')))
    except (OSError, IndexError):
        return res
    for k, name in (('TotalCallCreated', 'created'), ('SuccessfulCall(C)', 'ok'),
                    ('FailedCall(C)', 'failed'), ('Retransmissions(C)', 'retrans'),
                    ('FailedTimeoutOnRecv(C)', 'failed_timeout'),
                    ('FailedUnexpectedMessage(C)', 'failed_unexpected'),
                    ('FailedMaxUDPRetrans(C)', 'failed_retrans'), ('hold_notify(C)', 'hold_notify')):
        try:
            res[name] = int(last.get(k, 0) or 0)
        except ValueError:
            res[name] = None
    return res


def r3(v, n=3):
    return None if v is None else round(v, n)


# ------------------------------------------------------------------ one load step
def step(d):
    meta = json.load(open(os.path.join(d, 'meta.json')))
    res = dict(meta)
    load = os.path.join(d, 'load')
    res.update(sipp_stat(load))
    rtd = rtt_of(load)
    est = rtd.get('2', [])                  # (completion ms, SUBSCRIBE -> first NOTIFY ms)
    vals = [r for _, r in est]
    if vals:
        res.update(p50=bench.pct(vals, 50), p99=bench.pct(vals, 99), max=max(vals), n_rtd2=len(vals))
        start = min(t - r for t, r in est)
        # the first 2 s of phones (cold start: the phones that wait for their target)
        early = [r for t, r in est if t - r < start + 2000]
        res.update(first2s_p99=bench.pct(early, 99), first2s_max=max(early), first2s_n=len(early))
        # the rate the phones' SUBSCRIBEs went out at (not their NOTIFYs' arrivals, which
        # a cold start's wait for first_notify_timeout_ms would stretch)
        ts = sorted(t - r for t, r in est)
        if len(ts) > 10 and ts[-1] > ts[0]:
            res['achieved_rate'] = round((len(ts) - 1) / ((ts[-1] - ts[0]) / 1000.0), 1)
    created = res.get('created') or 0
    if created:
        res['failed_pct'] = round(100.0 * (res.get('failed') or 0) / created, 3)
        c0, c1 = meta['cpu_ticks']
        res['cpu_ms_per_lifecycle'] = r3((c1 - c0) * 1000.0 / HZ / created, 4)
        u0, u1 = meta['up_cpu_ticks']
        if meta['server'] == 'bridge':
            res['up_cpu_ms_per_lifecycle'] = r3((u1 - u0) * 1000.0 / HZ / created, 4)
    # perf stat -x, : "<count>,<unit>,instructions,..."
    try:
        for line in open(os.path.join(d, 'perf.txt')):
            p = line.strip().split(',')
            if len(p) >= 3 and p[2].startswith('instructions') and p[0].isdigit() and created:
                res['instr_per_lifecycle'] = round(int(p[0]) / created)
    except OSError:
        pass
    # memory samples
    rows = []
    try:
        with open(os.path.join(d, 'samples.csv')) as f:
            next(f)
            for line in f:
                t, c, p, r = line.strip().split(',')
                rows.append((float(t), int(c), int(p), int(r)))
    except (OSError, ValueError, StopIteration):
        pass
    if rows:
        pk_pss = max(r[2] for r in rows)
        pk_rss = max(r[3] for r in rows)
        res['base_pss_mb'] = round(rows[0][2] / 1024.0, 1)
        res['peak_pss_mb'] = round(pk_pss / 1024.0, 1)
        res['peak_rss_mb'] = round(pk_rss / 1024.0, 1)
        held = meta['rate'] * min(meta['hold_s'], meta['step_secs'])
        if held:
            # growth over the pre-warmed base per concurrently held phone subscription
            # (includes transactions and other transient state of the churn)
            res['pss_growth_b_per_held'] = round((pk_pss - rows[0][2]) * 1024.0 / held)
        # peak CPU over any 2 s window, in cores
        best = 0.0
        j = 0
        for i in range(len(rows)):
            while j < len(rows) and rows[j][0] - rows[i][0] < 2.0:
                j += 1
            if j < len(rows):
                best = max(best, (rows[j][1] - rows[i][1]) / HZ / (rows[j][0] - rows[i][0]))
        res['peak_cores'] = round(best, 2)
    ach = res.get('achieved_rate') or 0
    res['pass'] = bool(created and created >= meta['count'] and res.get('failed_pct', 100) < meta['fail_pct']
                       and res.get('p99') is not None and res['p99'] <= meta['p99_ms']
                       and ach >= 0.95 * meta['rate']
                       and (meta.get('mode') != 'cold' or (meta.get('drops') or 0) + (meta.get('up_drops') or 0) == 0))
    return res


def memstep(d):
    meta = json.load(open(os.path.join(d, 'meta.json')))
    res = dict(meta)
    n = meta['count']
    mk = meta['mem_kb']
    res['pss_mb'] = {k: round(v[0] / 1024.0, 1) for k, v in mk.items()}
    res['rss_mb'] = {k: round(v[1] / 1024.0, 1) for k, v in mk.items()}
    for k in ('established', 'settled'):
        res['pss_b_per_sub_' + k] = round((mk[k][0] - mk['before'][0]) * 1024.0 / n)
        res['rss_b_per_sub_' + k] = round((mk[k][1] - mk['before'][1]) * 1024.0 / n)
        sb = meta['shm_bytes']
        if sb.get('before') is not None and sb.get(k) is not None:
            res['shm_b_per_sub_' + k] = round((sb[k] - sb['before']) / n)
    return res


# ------------------------------------------------------------------ fan-out
def fanout(d):
    """Trigger in (Kamailio alone: the PUBLISH from the publisher; bridge: the upstream
    NOTIFY from its Kamailio) -> phone NOTIFYs out, per trigger, from the tshark fields
    epoch;srcport;dstport;method;status;cseq method;event."""
    meta = json.load(open(os.path.join(d, 'meta.json')))
    sp, wp = meta['server_port'], meta['watch_port']
    tports = set(meta['trigger_ports'])
    pkts = []
    with open(os.path.join(d, 'cap.fields')) as f:
        for line in f:
            p = line.rstrip('\n').split(';')
            if len(p) < 7 or not p[0]:
                continue
            try:
                pkts.append((float(p[0]), int(p[1] or 0), int(p[2] or 0), p[3], p[4], p[5], p[6]))
            except ValueError:
                continue
    pkts.sort()
    if meta['server'] == 'kamailio':
        trig = [x for x in pkts if x[1] in tports and x[2] == sp and x[3] == 'PUBLISH']
    else:
        trig = [x for x in pkts if x[1] == meta['up_port'] and x[2] == sp and x[3] == 'NOTIFY']
    trig = [x for x in trig if x[0] >= meta['t_triggers']]
    # a retransmission or a second message within 0.5 s belongs to the same trigger
    firsts = []
    for x in trig:
        if not firsts or x[0] - firsts[-1][0] > 0.5:
            firsts.append(x)
    rows = []
    for i, t in enumerate(firsts):
        t0 = t[0]
        t1 = min(firsts[i + 1][0] if i + 1 < len(firsts) else float('inf'), t0 + 2.0)
        win = [x for x in pkts if t0 <= x[0] < t1]
        notif = [x[0] for x in win if x[1] == sp and x[2] == wp and x[3] == 'NOTIFY']
        ms = lambda v: round((v - t0) * 1000.0, 3)  # noqa: E731
        r = dict(trigger=i + 1, what=t[3] + (' ' + t[6] if t[6] else ''), phone_notifies=len(notif))
        if notif:
            r.update(first_ms=ms(notif[0]), median_ms=ms(statistics.median(notif)), last_ms=ms(notif[-1]))
            if len(notif) >= meta['watchers']:
                r['nth_ms'] = ms(notif[meta['watchers'] - 1])
        rows.append(r)
    full = [r for r in rows if 'nth_ms' in r]
    c0, c1 = meta['cpu_ticks']
    out = dict(server=meta['server'], watchers=meta['watchers'], established=meta['established'],
               triggers=rows, full_fanouts=len(full),
               cpu_ms_all_triggers=round((c1 - c0) * 1000.0 / HZ, 1))
    if full:
        out['first_ms_median'] = r3(statistics.median(r['first_ms'] for r in full))
        out['last_ms_median'] = r3(statistics.median(r['nth_ms'] for r in full))
        out['last_ms_range'] = [min(r['nth_ms'] for r in full), max(r['nth_ms'] for r in full)]
        out['first_ms_range'] = [min(r['first_ms'] for r in full), max(r['first_ms'] for r in full)]
    return out


# ------------------------------------------------------------------ instructions (callgrind)
def instr(d):
    meta = json.load(open(os.path.join(d, 'meta.json')))
    res = dict(meta)
    created = sipp_stat(os.path.join(d, 'load')).get('created') or 0
    total = 0
    files = 0
    for fn in glob.glob(os.path.join(d, 'cg', 'callgrind.out.*')):
        try:
            text = open(fn, errors='replace').read()
        except OSError:
            continue
        # the dump compare.sh asked for (callgrind_control -d) holds the load window;
        # the one written at program termination is skipped
        trig = re.search(r'^desc: Trigger: (.*)$', text, re.M)
        if not trig or 'termination' in trig.group(1).lower():
            continue
        m = re.search(r'^(?:summary|totals):\s*(\d+)', text, re.M)
        if m:
            total += int(m.group(1))
            files += 1
    res.update(created=created, dump_files=files, instructions=total,
               instr_per_lifecycle=round(total / created) if created and files else None)
    return res


# ------------------------------------------------------------------ report
def load_json(pattern):
    out = []
    for fn in sorted(glob.glob(pattern)):
        try:
            out.append(json.load(open(fn)))
        except (OSError, ValueError):
            pass
    return out


def fmt(v, nd=None):
    if v is None:
        return '–'
    if isinstance(v, float) and nd is not None:
        return ('%.' + str(nd) + 'f') % v
    if isinstance(v, int) and abs(v) >= 10000:
        return '{:,}'.format(v)
    return '%g' % v if isinstance(v, float) else str(v)


def ratio(b, k, invert=False):
    """bridge ÷ Kamailio (invert only says lower is better; the value is the same)"""
    if b is None or k is None or b <= 0 or k <= 0:
        return '–'
    return '%.2f' % (b / k)


def best_rate(steps, server):
    """the step at the highest rate passing the criterion (a lower rate may have missed:
    one run per step, on a shared machine; the cell says so)"""
    ok = [s for s in steps if s['server'] == server and s.get('pass')]
    return max(ok, key=lambda s: s['rate']) if ok else None


def report(rdir):
    lines = []
    try:
        mach = open(os.path.join(rdir, 'machine.txt')).read().strip().splitlines()
    except OSError:
        mach = []
    try:
        cmd = open(os.path.join(rdir, 'command.txt')).read().strip()
    except OSError:
        cmd = ''
    steps = load_json(os.path.join(rdir, '*/step.json'))
    mems = {m['server']: m for m in load_json(os.path.join(rdir, 'mem-*/mem.json'))}
    fans = {f['server']: f for f in load_json(os.path.join(rdir, 'fanout-*/fanout.json'))}
    instrs = {i['server']: i for i in load_json(os.path.join(rdir, 'instr-*/instr.json'))}
    crit = None
    if steps:
        s0 = next((s for s in steps if s['mode'] == 'steady'), steps[0])
        crit = (s0['p99_ms'], s0['fail_pct'])
        cold = next((s for s in steps if s['mode'] == 'cold'), None)
        lines.append('### Kamailio alone vs the bridge: the same workload, one run (`bench/compare.sh`)')
        lines.append('')
        lines.append('Workload: SIPp Grandstream Wave phones, SUBSCRIBE → hold %d s → unsubscribe, over %d targets; '
                     '%d s of new subscriptions per step, fresh processes per step, the two servers alternating '
                     'at each rate. Sustained = < %g %% failed calls, p99 SUBSCRIBE→first NOTIFY ≤ %g ms, '
                     'achieved ≥ 95 %% of offered (SUBSCRIBEs sent per s); one run per step.' % (
                         s0['hold_s'], s0['targets'], s0['step_secs'], crit[1], crit[0])
                     + (' Cold start (nothing established upstream: a phone waits for its target, at most '
                        'first_notify_timeout_ms): p99 ≤ %g ms (that timeout + one 4 ms tick of SIPp\'s clock) '
                        'and no UDP datagram dropped at either socket instead of the %g ms.' % (cold['p99_ms'], crit[0])
                        if cold else ''))
        lines.append('')
    if cmd:
        lines.append('Command: `%s`' % cmd)
        lines.append('')
    if mach:
        lines.append('Machine and versions: ' + '; '.join(mach))
        lines.append('')

    # -------- the comparison table
    rows = []
    for mode in ('steady', 'cold'):
        ms = [s for s in steps if s['mode'] == mode]
        if not ms:
            continue
        b = {sv: best_rate(ms, sv) for sv in SERVERS}
        tried = {sv: sorted(s['rate'] for s in ms if s['server'] == sv) for sv in SERVERS}

        def rate_cell(sv):
            x = b[sv]
            if x is None:
                return 'none of %s' % tried[sv] if tried[sv] else '–'
            top = max(tried[sv])
            missed = sorted(s['rate'] for s in ms if s['server'] == sv and not s.get('pass') and s['rate'] < x['rate'])
            return '**%d/s**%s%s' % (x['rate'], ' (highest offered)' if x['rate'] == top else '',
                                     ' (missed at %s)' % ', '.join(map(str, missed)) if missed else '')
        rk, rb = (b['kamailio'] or {}).get('rate'), (b['bridge'] or {}).get('rate')
        rows.append(('%s: highest sustained new subscriptions/s (higher is better)' % mode, rate_cell('kamailio'), rate_cell('bridge'),
                     ratio(rb, rk)))
        at = {sv: (b[sv] or min((s for s in ms if s['server'] == sv), key=lambda s: s['rate'], default=None))
              for sv in SERVERS}

        def p99_cell(sv):
            x = at[sv]
            if x is None:
                return '–'
            return '%s / %s%s' % (fmt(x.get('p99')), fmt(x.get('max')),
                                  '' if b[sv] else ' (at %d/s, missed)' % x['rate'])
        rows.append(('%s: p99 / max SUB→first NOTIFY at that rate, ms' % mode, p99_cell('kamailio'),
                     p99_cell('bridge'), ''))
        if mode == 'cold':
            # the phones of the first 2 s: those that waited for their target's upstream pair
            rows.append(('cold: first 2 s of phones, p99 / max SUB→first NOTIFY ms (at %s/s, %s/s)' % (
                (at['kamailio'] or {}).get('rate'), (at['bridge'] or {}).get('rate')),
                '%s / %s' % (fmt((at['kamailio'] or {}).get('first2s_p99')), fmt((at['kamailio'] or {}).get('first2s_max'))),
                '%s / %s' % (fmt((at['bridge'] or {}).get('first2s_p99')), fmt((at['bridge'] or {}).get('first2s_max'))), ''))
            continue
        # costs at the highest rate both sustained (same offered load)
        both = sorted(set(s['rate'] for s in ms if s['server'] == 'kamailio' and s.get('pass'))
                      & set(s['rate'] for s in ms if s['server'] == 'bridge' and s.get('pass')))
        cmp_rate = both[-1] if both else None
        if cmp_rate is None:
            common = sorted(set(s['rate'] for s in ms if s['server'] == 'kamailio')
                            & set(s['rate'] for s in ms if s['server'] == 'bridge'))
            cmp_rate = common[0] if common else None
        if cmp_rate is not None:
            at = {sv: next(s for s in ms if s['server'] == sv and s['rate'] == cmp_rate) for sv in SERVERS}
            k, br = at['kamailio'], at['bridge']
            rows.append(('steady, at %d/s: CPU ms per lifecycle (/proc; bridge alone, its upstream in brackets; lower is better)' % cmp_rate,
                         fmt(k.get('cpu_ms_per_lifecycle')),
                         '%s (%s)' % (fmt(br.get('cpu_ms_per_lifecycle')), fmt(br.get('up_cpu_ms_per_lifecycle'))),
                         ratio(br.get('cpu_ms_per_lifecycle'), k.get('cpu_ms_per_lifecycle'), invert=True)))
            if k.get('instr_per_lifecycle') or br.get('instr_per_lifecycle'):
                rows.append(('steady, at %d/s: instructions per lifecycle (perf stat)' % cmp_rate,
                             fmt(k.get('instr_per_lifecycle')), fmt(br.get('instr_per_lifecycle')),
                             ratio(br.get('instr_per_lifecycle'), k.get('instr_per_lifecycle'), invert=True)))
            rows.append(('steady, at %d/s: peak PSS MB (RSS; Kamailio: sum over its processes)' % cmp_rate,
                         '%s (%s)' % (fmt(k.get('peak_pss_mb')), fmt(k.get('peak_rss_mb'))),
                         '%s (%s)' % (fmt(br.get('peak_pss_mb')), fmt(br.get('peak_rss_mb'))),
                         ratio(br.get('peak_pss_mb'), k.get('peak_pss_mb'), invert=True)))
            rows.append(('steady, at %d/s: PSS growth per concurrently held subscription under churn, B' % cmp_rate,
                         fmt(k.get('pss_growth_b_per_held')), fmt(br.get('pss_growth_b_per_held')),
                         ratio(br.get('pss_growth_b_per_held'), k.get('pss_growth_b_per_held'), invert=True)))
    if instrs:
        k, br = instrs.get('kamailio', {}), instrs.get('bridge', {})
        rows.append(('instructions per lifecycle (callgrind, steady, %s/s)' % (k or br).get('rate'),
                     fmt(k.get('instr_per_lifecycle')), fmt(br.get('instr_per_lifecycle')),
                     ratio(br.get('instr_per_lifecycle'), k.get('instr_per_lifecycle'), invert=True)))
    if mems:
        k, br = mems.get('kamailio', {}), mems.get('bridge', {})
        n = (k or br).get('count')
        rows.append(('held: memory per held subscription, %s held, B (Kamailio: shm real_used; PSS in brackets)' % fmt(n),
                     '%s (%s)' % (fmt(k.get('shm_b_per_sub_settled')), fmt(k.get('pss_b_per_sub_settled'))),
                     '%s (RSS)' % fmt(br.get('rss_b_per_sub_settled')),
                     ratio(br.get('rss_b_per_sub_settled'), k.get('shm_b_per_sub_settled'), invert=True)))
        rows.append(('held: PSS MB with %s held (RSS)' % fmt(n),
                     '%s (%s)' % (fmt(k.get('pss_mb', {}).get('settled')), fmt(k.get('rss_mb', {}).get('settled'))),
                     '%s (%s)' % (fmt(br.get('pss_mb', {}).get('settled')), fmt(br.get('rss_mb', {}).get('settled'))),
                     ratio(br.get('pss_mb', {}).get('settled'), k.get('pss_mb', {}).get('settled'), invert=True)))
    if fans:
        k, br = fans.get('kamailio', {}), fans.get('bridge', {})
        w = (k or br).get('watchers')
        rows.append(('fan-out to %s phones: trigger in → FIRST phone NOTIFY out, ms (median of full fan-outs)' % fmt(w),
                     fmt(k.get('first_ms_median')), fmt(br.get('first_ms_median')),
                     ratio(br.get('first_ms_median'), k.get('first_ms_median'), invert=True)))
        rows.append(('fan-out to %s phones: trigger in → LAST phone NOTIFY out, ms (median; range)' % fmt(w),
                     '%s (%s)' % (fmt(k.get('last_ms_median')), '–'.join(map(fmt, k.get('last_ms_range', [])))),
                     '%s (%s)' % (fmt(br.get('last_ms_median')), '–'.join(map(fmt, br.get('last_ms_range', [])))),
                     ratio(br.get('last_ms_median'), k.get('last_ms_median'), invert=True)))
    if rows:
        lines.append('| | Kamailio 5.6 alone | blf-bridge | bridge ÷ Kamailio |')
        lines.append('|---|---|---|---|')
        for r in rows:
            lines.append('| %s | %s | %s | %s |' % r)
        lines.append('')

    # -------- details per step
    for mode in ('steady', 'cold'):
        ms = sorted((s for s in steps if s['mode'] == mode), key=lambda s: (s['rate'], s['server']))
        if not ms:
            continue
        lines.append('#### %s: every step' % mode)
        lines.append('')
        lines.append('| offered/s | server | calls | failed % | SIPp retrans | achieved/s | SUB→NOTIFY p50/p99/max ms '
                     '| first 2 s p99/max ms | CPU ms/lifecycle (upstream) | instr/lifecycle | peak cores (2 s) '
                     '| peak PSS MB (RSS) | UDP drops server/upstream | load avg | sustained |')
        lines.append('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
        for s in ms:
            up = s.get('up_cpu_ms_per_lifecycle')
            lines.append('| %d | %s | %s | %s | %s | %s | %s/%s/%s | %s/%s | %s%s | %s | %s | %s (%s) | %s/%s | %s | %s |' % (
                s['rate'], s['server'], fmt(s.get('created')), fmt(s.get('failed_pct')), fmt(s.get('retrans')),
                fmt(s.get('achieved_rate')), fmt(s.get('p50')), fmt(s.get('p99')), fmt(s.get('max')),
                fmt(s.get('first2s_p99')), fmt(s.get('first2s_max')),
                fmt(s.get('cpu_ms_per_lifecycle')), '' if up is None else ' (%s)' % fmt(up),
                fmt(s.get('instr_per_lifecycle')), fmt(s.get('peak_cores')),
                fmt(s.get('peak_pss_mb')), fmt(s.get('peak_rss_mb')),
                fmt(s.get('drops')), fmt(s.get('up_drops')) if s['server'] == 'bridge' else '–',
                s.get('loadavg'), 'yes' if s.get('pass') else 'no'))
        lines.append('')
    if mems:
        lines.append('#### Held subscriptions (phase `mem`)')
        lines.append('')
        lines.append('| server | held | established | PSS MB before/established/settled | RSS MB before/established/settled '
                     '| B/sub settled: PSS, RSS, shm |')
        lines.append('|---|---|---|---|---|---|')
        for sv in SERVERS:
            m = mems.get(sv)
            if not m:
                continue
            p, r = m['pss_mb'], m['rss_mb']
            lines.append('| %s | %s | %s | %s/%s/%s | %s/%s/%s | %s, %s, %s |' % (
                sv, fmt(m['count']), fmt(m['established']), p['before'], p['established'], p['settled'],
                r['before'], r['established'], r['settled'], fmt(m.get('pss_b_per_sub_settled')),
                fmt(m.get('rss_b_per_sub_settled')), fmt(m.get('shm_b_per_sub_settled'))))
        lines.append('')
    if fans:
        lines.append('#### Fan-out, every trigger (on the wire, dumpcap on lo)')
        lines.append('')
        lines.append('| server | trigger | in | phone NOTIFYs | first ms | median ms | last ms |')
        lines.append('|---|---|---|---|---|---|---|')
        for sv in SERVERS:
            f = fans.get(sv)
            if not f:
                continue
            for r in f['triggers']:
                lines.append('| %s | %d | %s | %d | %s | %s | %s |' % (
                    sv, r['trigger'], r['what'], r['phone_notifies'], fmt(r.get('first_ms')),
                    fmt(r.get('median_ms')), fmt(r.get('nth_ms', r.get('last_ms')))))
        lines.append('')
    return '\n'.join(lines)


def main():
    a = sys.argv[1:]
    if not a:
        raise SystemExit(__doc__)
    cmd = a[0]
    if cmd == 'freeport':
        print(bench.freeport())
    elif cmd == 'udpdrops':
        print(bench.udpdrops(int(a[1])))
    elif cmd == 'pids':
        print(','.join(str(p) for p, _, _ in group(int(a[1]))))
    elif cmd == 'cpu':
        print(cpu(int(a[1])))
    elif cmd == 'snap':   # snap PGID UPGID PORT UPORT: cpu, upstream cpu, drops, upstream drops
        g, ug, p, up = (int(x) for x in a[1:5])
        print(cpu(g), cpu(ug) if ug else 0, bench.udpdrops(p), bench.udpdrops(up) if up else 0)
    elif cmd == 'mem':
        print('%d,%d' % mem(int(a[1])))
    elif cmd == 'shm':
        v = shm(a[1])
        print('null' if v is None else v)
    elif cmd == 'sample':
        sample(int(a[1]), a[2], float(a[3]))
    elif cmd == 'count_rtd':
        print(len(rtt_of(a[1]).get(a[2], [])))
    elif cmd == 'active':
        print(active(a[1]))
    elif cmd in ('step', 'memstep', 'fanout', 'instr'):
        print(json.dumps({'step': step, 'memstep': memstep, 'fanout': fanout, 'instr': instr}[cmd](a[1])))
    elif cmd == 'report':
        print(report(a[1]))
    else:
        raise SystemExit(__doc__)


if __name__ == '__main__':
    main()
