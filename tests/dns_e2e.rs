//! `[upstream] proxy` as a bare domain, end to end: dnsmasq on 127.0.0.1
//! serves NAPTR → SRV for `pbx.test` with two Kamailios (priority 10 and 20,
//! TTL 10 s), a GXP watches 1002 through the bridge. 1002 is registered at the
//! first Kamailio only, so the lamp tells which server the bridge listens to
//! (idle on the first, offline on the second). The first is killed: the bridge
//! moves to the second within 35 s and the lamp is right; the first comes back
//! on the same port: the bridge returns to it after the TTL.

mod common;

use common::*;
use std::time::{Duration, Instant};

const GXP: &str = "grandstream-gxp";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn srv_failover_to_the_second_pbx_and_back_after_the_ttl() {
    let name = "srv_failover_to_the_second_pbx_and_back_after_the_ttl";
    if !e2e_ready(name) || !dnsmasq_ready(name) {
        return;
    }
    let k1 = Kamailio::start(KamailioOpts::default());
    let k2 = Kamailio::start(KamailioOpts::default());
    let (p1, p2) = (k1.port(), k2.port());
    let dns = Dnsmasq::start(
        &[
            "--naptr-record=pbx.test,10,10,S,SIP+D2U,,_sip._udp.pbx.test".to_string(),
            format!("--srv-host=_sip._udp.pbx.test,pbx1.test,{p1},10,10"),
            format!("--srv-host=_sip._udp.pbx.test,pbx2.test,{p2},20,10"),
            "--host-record=pbx1.test,127.0.0.1".to_string(),
            "--host-record=pbx2.test,127.0.0.1".to_string(),
        ],
        10,
    );
    // proxy = the domain, transport left to NAPTR; keep-alive every 10 s
    let config = bridge_config(free_port(), k1.addr())
        .replace(
            &format!("proxy = \"{}\"", k1.addr()),
            &format!("proxy = \"pbx.test\"\ndns = \"{}\"", dns.addr()),
        )
        .replace("transport = \"udp\"\n", "keepalive_interval = 10\n")
        + "\n[subscriptions]\nretry_min = 1\n";

    // `check` says what was resolved
    let dir = TempDir::new("dnscheck");
    let cfg_path = dir.path().join("bridge.toml");
    std::fs::write(&cfg_path, &config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_blf-bridge"))
        .args(["check", "--config", cfg_path.to_str().unwrap()])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{s}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        s.contains("NAPTR pbx.test -> SRV _sip._udp.pbx.test"),
        "{s}"
    );
    assert!(
        s.contains(&format!("pbx1.test priority 10 weight 10 port {p1} UDP"))
            && s.contains(&format!("pbx2.test priority 20 weight 10 port {p2} UDP")),
        "{s}"
    );

    let bridge = Bridge::start(&config);
    let b = bridge.addr();
    assert!(
        bridge.log().contains("upstream resolved"),
        "{}",
        tail(&bridge.log(), 20)
    );
    let mut p1002 = SippCmd::phone(k1.addr(), "1002", secs(200))
        .limit(secs(240))
        .spawn();
    assert!(wait_until(secs(10), POLL, || k1.is_registered("1002")));
    let mut gxp = SippCmd::blf_watcher(b, BlfModel::Gxp, "1001", "1002", secs(150))
        .limit(secs(200))
        .spawn();
    wait_lamp(GXP, &gxp, &["idle"], secs(10));
    assert!(
        !k1.watchers_of("1002", "dialog").is_empty(),
        "on the first PBX"
    );
    assert!(k2.watchers_of("1002", "dialog").is_empty());

    // the first PBX dies: within 35 s the bridge is on the second, whose
    // view of 1002 (not registered there) the lamp shows
    k1.kill();
    p1002.kill();
    let killed = Instant::now();
    wait_on_server(
        &k2,
        &gxp,
        &["offline"],
        secs(35),
        &bridge,
        "on the second PBX",
    );
    eprintln!("failover took {:?}", killed.elapsed());
    assert!(bridge.log().contains("upstream failover"));

    // the first comes back (fresh database, same port) and 1002 registers
    // there: the bridge returns once the TTL ran out and the probe is answered
    let k1 = Kamailio::start(KamailioOpts {
        port: Some(p1),
        ..KamailioOpts::default()
    });
    let back = Instant::now();
    let _p1002 = SippCmd::phone(k1.addr(), "1002", secs(120))
        .limit(secs(150))
        .spawn();
    assert!(wait_until(secs(10), POLL, || k1.is_registered("1002")));
    let (lamps, within) = (&["offline", "idle"], secs(25));
    let what = "back on the first PBX within the TTL and a probe";
    wait_on_server(&k1, &gxp, lamps, within, &bridge, what);
    eprintln!("failback took {:?}", back.elapsed());
    assert!(bridge.log().contains("upstream failback"));
    // re-resolution happened at the TTL (10 s): dnsmasq saw repeated queries
    let queries = dns.log().matches("query[SRV] _sip._udp.pbx.test").count();
    assert!(queries >= 3, "SRV asked again at each TTL: {queries}");
    gxp.kill();
}

/// A name that does not resolve at start-up (the DNS server is not up yet)
/// is retried with backoff, and the bridge starts once it resolves.
#[test]
fn a_name_unresolvable_at_start_is_retried_until_it_resolves() {
    let name = "a_name_unresolvable_at_start_is_retried_until_it_resolves";
    if !dnsmasq_ready(name) {
        return;
    }
    use blf_bridge::config::Config;
    use blf_bridge::runtime::{Runtime, RuntimeOptions};
    let dns_port = free_port();
    let pbx = free_port();
    let text = format!(
        "[listen]\nudp = \"127.0.0.1:{}\"\n[upstream]\nproxy = \"pbx.test\"\ndomain = \"pbx.test\"\n\
         transport = \"udp\"\ndns = \"127.0.0.1:{dns_port}\"\n[state]\ndir = \"\"\n\
         [[account]]\nuser = \"1001\"\npassword = \"x\"\n",
        free_port()
    );
    let cfg = std::sync::Arc::new(Config::parse(&text, "t.toml", &|_| None).unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let opts = RuntimeOptions {
        seed: Some(1),
        resolve_timeout: secs(2),
        ..RuntimeOptions::default()
    };
    let start = rt.spawn(Runtime::start(cfg, opts));
    std::thread::sleep(secs(3));
    assert!(!start.is_finished(), "still resolving without a DNS server");
    let _dns = Dnsmasq::start_on(
        dns_port,
        &[
            format!("--srv-host=_sip._udp.pbx.test,pbx1.test,{pbx},10,10"),
            "--host-record=pbx1.test,127.0.0.1".to_string(),
        ],
        10,
    );
    let bridge = rt
        .block_on(async { tokio::time::timeout(secs(20), start).await })
        .expect("started within the backoff once DNS answers")
        .expect("task")
        .expect("runtime");
    assert_eq!(bridge.upstream_addr(), loopback(pbx));
    rt.block_on(bridge.shutdown()).unwrap();
}
