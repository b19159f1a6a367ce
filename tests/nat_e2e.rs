//! The bridge at a customer site behind NAT (issue 11, "Done when", first bullet),
//! in network namespaces (tests/netns/site.sh, `common::Site`):
//!
//! - phones (SIPp: a Wave at 192.0.2.11, a GXP at 192.0.2.13, extension 1002 at
//!   192.0.2.12, a caller at 192.0.2.14) and the bridge (192.0.2.2) on the LAN;
//!   another caller elsewhere on the internet (203.0.113.30);
//! - the router masquerades the LAN behind 203.0.113.1, forwards only replies
//!   inwards and forgets a UDP binding after 30 s;
//! - Kamailio as the provider at 203.0.113.20 (no route to the LAN: it reaches
//!   the site only through the router's address, like a provider's edge:
//!   `WITH_NAT` in tests/harness/kamailio.cfg).
//!
//! The lamps follow 1002 through offline → idle → ringing → busy → idle; then
//! 90 s pass without anything but the bridge's keep-alives (three NAT
//! timeouts); then a call from the internet — nothing leaves the site before the
//! provider's NOTIFYs and INVITE must come in — still reaches the phone through
//! the NAT and the lamps still follow (ringing → busy → idle), and 1002's
//! un-registration turns them offline. (Without keep-alives this call fails.) Kamailio saw every request of the site from 203.0.113.1.
//! Once over UDP, once with `[upstream] transport = "tcp"` (run concurrently);
//! the phones speak UDP to the bridge in both.

mod common;

use common::*;
use std::net::{IpAddr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Three NAT timeouts without traffic from the phones or the provider.
const QUIET: Duration = Duration::from_secs(3 * NAT_UDP_TIMEOUT_S);

fn site_config(transport: &str) -> String {
    let mut s = format!(
        "[listen]\nudp = \"{LAN_BRIDGE}:5060\"\ntcp = \"{LAN_BRIDGE}:5060\"\n\n\
         [upstream]\nproxy = \"{PBX1}:5060\"\ndomain = \"{DOMAIN}\"\ntransport = \"{transport}\"\n\n\
         [security]\nallow = [\"192.0.2.0/24\"]\n\n[http]\nlisten = \"\"\n\n[state]\ndir = \"\"\n"
    );
    for (user, pass) in USERS {
        s += &format!("\n[[account]]\nuser = \"{user}\"\npassword = \"{pass}\"\n");
    }
    s
}

/// The requests Kamailio received: (method, proto, source IP).
fn received(kam: &Kamailio) -> Vec<(String, String, IpAddr)> {
    received_from(kam)
        .into_iter()
        .map(|(m, p, a)| (m, p, a.ip()))
        .collect()
}

/// The requests Kamailio received: (method, proto, source address).
fn received_from(kam: &Kamailio) -> Vec<(String, String, SocketAddr)> {
    kam.log()
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("RX ")? + 3..];
            let method = rest.split(' ').next()?.to_string();
            let from = rest.split(" from ").nth(1)?.split(' ').next()?;
            let mut parts = from.splitn(2, ':');
            let proto = parts.next()?.to_string();
            let addr = parts.next()?.parse().ok()?;
            Some((method, proto, addr))
        })
        .collect()
}

/// The `n`th call to 1002: both lamps went idle → ringing → busy → idle once
/// more (waited for as a whole: on a loaded machine one phone's check may come
/// after the other's lamp already moved on).
fn follow_call(wave: &Sipp, gxp: &Sipp, n: usize) {
    for (profile, s) in [("grandstream-gxp", gxp), ("grandstream-wave", wave)] {
        let done = wait_until(secs(25), POLL, || {
            let l = lamp(profile, s);
            l.ends_with(&["idle", "ringing", "busy", "idle"])
                && l.iter().filter(|x| **x == "ringing").count() == n
        });
        assert!(
            done,
            "{profile}: call {n}: {:?}\n{}",
            lamp(profile, s),
            s.diagnostics()
        );
    }
}

fn behind_nat(transport: &str) {
    let site = Site::up();
    let kam = Kamailio::start(KamailioOpts {
        listen_ip: Some(PBX1.into()),
        netns: Some(site.wan.clone()),
        nat: true,
        ..KamailioOpts::default()
    });
    let bridge = Bridge::start_in(&site.lan, &site_config(transport));
    let b = SocketAddr::new(LAN_BRIDGE.into(), 5060);
    let lan = |i| (site.lan.as_str(), phone_ip(i));

    // 1002 is held registered this long; the watchers unsubscribe after it
    let hold = secs(25) + QUIET + secs(20);
    let run = hold + secs(15);
    let watcher = |model, user, i| {
        let (ns, ip) = lan(i);
        SippCmd::blf_watcher(b, model, user, "1002", run)
            .netns(ns, ip)
            .limit(run + secs(60))
            .spawn()
    };
    let mut wave = watcher(BlfModel::Wave, "1001", 1);
    let mut gxp = watcher(BlfModel::Gxp, "1003", 3);
    wait_lamp("grandstream-wave", &wave, &["offline"], secs(10));
    wait_lamp("grandstream-gxp", &gxp, &["offline"], secs(10));

    // 1002 registers through the bridge and answers calls after 2 s of ringing
    let (ns, ip) = lan(2);
    let mut phone = SippCmd::phone(b, "1002", hold)
        .set("ringing_ms", "2000")
        .netns(ns, ip)
        .limit(hold + secs(60))
        .spawn();
    wait_lamp("grandstream-wave", &wave, &["offline", "idle"], secs(10));
    wait_lamp("grandstream-gxp", &gxp, &["offline", "idle"], secs(10));
    let phone_started = Instant::now();

    let pbx = SocketAddr::new(PBX1.into(), 5060);
    // 1003 on the LAN calls 1002 through the bridge
    let mut first = SippCmd::caller(b, "1003", "1002", secs(2))
        .name("call-from-the-lan")
        .netns(&site.lan, phone_ip(4))
        .spawn();
    follow_call(&wave, &gxp, 1);
    first.wait_success(secs(20));

    // quiet: only the bridge's keep-alives cross the router
    let notifies_before = (wave.notifies().len(), gxp.notifies().len());
    thread::sleep(QUIET);
    assert_eq!(
        (wave.notifies().len(), gxp.notifies().len()),
        notifies_before,
        "nothing happened while quiet"
    );

    // a call from elsewhere on the internet (1003 at the provider directly):
    // nothing leaves the site first, so the provider's NOTIFYs and its INVITE
    // reach the bridge only through the binding the keep-alives kept
    let mut second = SippCmd::caller(pbx, "1003", "1002", secs(2))
        .name("call-from-the-internet")
        .netns(&site.wan, WAN_PHONE.into())
        .spawn();
    follow_call(&wave, &gxp, 2);
    second.wait_success(secs(20));
    let answered = phone
        .messages()
        .iter()
        .filter(|m| m.received && m.start_line().starts_with("INVITE "))
        .count();
    assert_eq!(
        answered,
        2,
        "both INVITEs reached 1002\n{}",
        phone.diagnostics()
    );

    // 1002 un-registers: offline
    let left = hold.saturating_sub(phone_started.elapsed());
    phone.wait_success(left + secs(20));
    wait_lamp("grandstream-gxp", &gxp, &["idle", "offline"], secs(10));
    wait_lamp("grandstream-wave", &wave, &["idle", "offline"], secs(10));
    wave.wait_success(run + secs(20));
    gxp.wait_success(run + secs(20));
    for (profile, s) in [("grandstream-wave", &wave), ("grandstream-gxp", &gxp)] {
        assert_eq!(
            lamp(profile, s),
            [
                "offline", "idle", "ringing", "busy", "idle", "ringing", "busy", "idle", "offline"
            ],
            "{profile}\n{}",
            s.diagnostics()
        );
    }

    // the provider saw the whole site from the router's address, on the transport
    let rx = received(&kam);
    let site_rx: Vec<_> = rx
        .iter()
        .filter(|(_, _, ip)| *ip != IpAddr::from(PBX1) && *ip != IpAddr::from(WAN_PHONE))
        .collect();
    for (m, proto, ip) in &site_rx {
        assert_eq!(*ip, IpAddr::from(ROUTER_WAN), "{m} over {proto} from {ip}");
        assert_eq!(proto, transport, "{m} from {ip} over {proto}");
    }
    for m in ["REGISTER", "SUBSCRIBE", "INVITE", "OPTIONS", "ACK", "BYE"] {
        assert!(
            site_rx.iter().any(|(x, _, _)| x == m),
            "Kamailio got no {m} from the site: {rx:?}"
        );
    }
    // one flow: the listener's socket (port kept by the router) or one connection
    let ports: std::collections::BTreeSet<u16> = received_from(&kam)
        .iter()
        .filter(|(_, _, a)| a.ip() == IpAddr::from(ROUTER_WAN))
        .map(|(_, _, a)| a.port())
        .collect();
    assert_eq!(ports.len(), 1, "one flow from the site: ports {ports:?}");
    // it sent its requests (NOTIFYs, INVITEs) back through the router's binding
    assert!(
        kam.log()
            .contains(&format!("is reachable at sip:{ROUTER_WAN}:")),
        "{}",
        tail(&kam.log(), 30)
    );
    drop(bridge);
}

#[test]
fn site_behind_nat_over_udp() {
    if !e2e_ready("site_behind_nat_over_udp") || !netns_ready("site_behind_nat_over_udp") {
        return;
    }
    behind_nat("udp");
}

#[test]
fn site_behind_nat_over_tcp() {
    if !e2e_ready("site_behind_nat_over_tcp") || !netns_ready("site_behind_nat_over_tcp") {
        return;
    }
    behind_nat("tcp");
}

/// Over TCP through the NAT: one connection to the provider; when the router
/// resets it, the bridge opens a new one at once and refreshes its upstream
/// subscriptions on it, so that the lamps keep following 1002 and a call still
/// reaches the phone.
#[test]
fn tcp_connection_to_the_provider_is_reopened_after_a_reset() {
    let name = "tcp_connection_to_the_provider_is_reopened_after_a_reset";
    if !e2e_ready(name) || !netns_ready(name) {
        return;
    }
    let site = Site::up();
    let kam = Kamailio::start(KamailioOpts {
        listen_ip: Some(PBX1.into()),
        netns: Some(site.wan.clone()),
        nat: true,
        ..KamailioOpts::default()
    });
    let bridge = Bridge::start_in(&site.lan, &site_config("tcp"));
    let b = SocketAddr::new(LAN_BRIDGE.into(), 5060);
    let pbx = SocketAddr::new(PBX1.into(), 5060);

    let (hold, run) = (secs(70), secs(85));
    let mut wave = SippCmd::blf_watcher(b, BlfModel::Wave, "1001", "1002", run)
        .netns(&site.lan, phone_ip(1))
        .spawn();
    let mut gxp = SippCmd::blf_watcher(b, BlfModel::Gxp, "1003", "1002", run)
        .netns(&site.lan, phone_ip(3))
        .spawn();
    wait_lamp("grandstream-wave", &wave, &["offline"], secs(10));
    wait_lamp("grandstream-gxp", &gxp, &["offline"], secs(10));
    let mut phone = SippCmd::phone(b, "1002", hold)
        .set("ringing_ms", "2000")
        .netns(&site.lan, phone_ip(2))
        .spawn();
    let phone_started = Instant::now();
    wait_lamp("grandstream-wave", &wave, &["offline", "idle"], secs(10));
    wait_lamp("grandstream-gxp", &gxp, &["offline", "idle"], secs(10));

    // one connection to the provider
    let ports = site.tcp_ports_to(&site.lan, pbx);
    assert_eq!(ports.len(), 1, "one connection to the provider: {ports:?}");
    let old = ports[0];
    let subscribes_before = received(&kam)
        .iter()
        .filter(|(m, _, _)| m == "SUBSCRIBE")
        .count();

    // the router resets it: the bridge's next keep-alive finds out
    site.reset_tcp(LAN_BRIDGE.into(), old);
    let reopened = wait_until(secs(30), secs(1), || {
        let now = site.tcp_ports_to(&site.lan, pbx);
        now.len() == 1 && now[0] != old
    });
    assert!(
        reopened,
        "a new connection: {:?}\n{}",
        site.tcp_ports_to(&site.lan, pbx),
        tail(&bridge.log(), 30)
    );
    assert!(bridge.log().contains("connection to the upstream lost"));
    // both upstream subscriptions refreshed on it
    let refreshed = wait_until(secs(10), secs(1), || {
        received(&kam)
            .iter()
            .filter(|(m, _, _)| m == "SUBSCRIBE")
            .count()
            >= subscribes_before + 2
    });
    assert!(refreshed, "{}", tail(&kam.log(), 30));

    // a call: the INVITE reaches 1002 and the provider's NOTIFYs reach the bridge
    let mut call = SippCmd::caller(b, "1003", "1002", secs(2))
        .netns(&site.lan, phone_ip(4))
        .spawn();
    follow_call(&wave, &gxp, 1);
    call.wait_success(secs(20));

    let left = hold.saturating_sub(phone_started.elapsed());
    phone.wait_success(left + secs(20));
    wait_lamp("grandstream-gxp", &gxp, &["idle", "offline"], secs(10));
    wait_lamp("grandstream-wave", &wave, &["idle", "offline"], secs(10));
    wave.wait_success(run + secs(20));
    gxp.wait_success(run + secs(20));
    // still one connection, the new one
    assert_eq!(site.tcp_ports_to(&site.lan, pbx).len(), 1);
}
