//! TLS to the provider end to end (issue 11 item 4): Kamailio's `tls` module on
//! loopback with a certificate from a CA made here (rcgen), the bridge with
//! `[upstream] transport = "tls"`, phones on UDP.
//!
//! - Lamps, registration and a call through the bridge over one TLS connection:
//!   the upstream's requests (NOTIFYs, the INVITE to the registered phone) come
//!   back on it (RFC 5923 alias); Kamailio sees every request of the bridge
//!   over TLS and none in clear text.
//! - A wrong CA and a certificate for another name are refused, each with one
//!   log line saying what was expected and what was presented, and retried with
//!   a growing backoff.
//! - `blf-bridge check` names unreadable, non-PEM and mismatched TLS files.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Kamailio with a TLS listener presenting `cert`.
fn tls_pbx((cert_pem, key_pem): (String, String)) -> Kamailio {
    Kamailio::start(KamailioOpts {
        tls: Some(KamailioTls {
            cert_pem,
            key_pem,
            port: None,
            client_ca_pem: None,
        }),
        ..KamailioOpts::default()
    })
}

/// The bridge config for `kam` over TLS, trusting `ca_file`, checking `tls_name`.
fn tls_config(kam: &Kamailio, ca_file: &Path, tls_name: &str) -> String {
    let upstream = kam.tls_addr().expect("Kamailio listens for TLS");
    let cfg = bridge_config(free_port(), upstream);
    let udp = "transport = \"udp\"\n";
    assert!(cfg.contains(udp), "bridge_config changed: {cfg}");
    cfg.replace(
        udp,
        &format!(
            "transport = \"tls\"\nca_file = \"{}\"\ntls_name = \"{tls_name}\"\n",
            ca_file.display()
        ),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write test file");
    p
}

/// Kamailio's `RX <method> <ruri> from <proto>:<ip>:<port>` lines after the
/// first `skip` lines of its log.
fn rx_lines(kam: &Kamailio, skip: usize) -> Vec<String> {
    kam.log()
        .lines()
        .skip(skip)
        .filter(|l| l.contains("RX ") && l.contains(" from "))
        .map(String::from)
        .collect()
}

#[test]
fn lamps_registration_and_a_call_over_one_tls_connection() {
    if !tls_e2e_ready("lamps_registration_and_a_call_over_one_tls_connection") {
        return;
    }
    let ca = Ca::new("blf test CA");
    let kam = tls_pbx(ca.server("pbx.test"));
    let files = TempDir::new("tls");
    let ca_file = write(files.path(), "ca.pem", &ca.pem);
    let log_mark = kam.log().lines().count();
    let bridge = Bridge::start(&tls_config(&kam, &ca_file, "pbx.test"));
    let b = bridge.addr();

    // two phones watch 1002 over UDP (never registered yet): offline
    let mut wave = SippCmd::blf_watcher(b, BlfModel::Wave, "1001", "1002", secs(28)).spawn();
    let mut gxp = SippCmd::blf_watcher(b, BlfModel::Gxp, "1003", "1002", secs(28)).spawn();
    wait_lamp("grandstream-wave", &wave, &["offline"], secs(10));
    wait_lamp("grandstream-gxp", &gxp, &["offline"], secs(10));
    assert!(
        bridge
            .log()
            .contains("TLS connection to the upstream established"),
        "{}",
        tail(&bridge.log(), 30)
    );
    let d = kam.watchers_of("1002", "dialog");
    let p = kam.watchers_of("1002", "presence");
    assert_eq!((d.len(), p.len()), (1, 1), "watchers {:?}", kam.watchers());

    // 1002 registers through the bridge; the PBX reaches it through the bridge's
    // TLS connection (its binding names the bridge with transport=tls)
    let mut phone = SippCmd::phone(b, "1002", secs(14))
        .set("ringing_ms", "2000")
        .limit(secs(45))
        .spawn();
    assert!(
        wait_until(secs(10), POLL, || kam.is_registered("1002")),
        "1002 registered through the bridge\n{}\n{}",
        phone.diagnostics(),
        tail(&bridge.log(), 30)
    );
    let contacts = kam.registered_contacts("1002");
    assert!(
        contacts.len() == 1 && contacts[0].contains(";transport=tls"),
        "the PBX reaches 1002 through the bridge over TLS: {contacts:?}"
    );
    wait_lamp("grandstream-wave", &wave, &["offline", "idle"], secs(8));
    wait_lamp("grandstream-gxp", &gxp, &["offline", "idle"], secs(8));

    // 1003 calls 1002 through the bridge: the INVITE goes up over TLS and comes
    // back down on the same connection to the registered phone
    let mut call = SippCmd::caller(b, "1003", "1002", secs(2)).spawn();
    wait_lamp("grandstream-gxp", &gxp, &["idle", "ringing"], secs(8));
    wait_lamp("grandstream-wave", &wave, &["idle", "ringing"], secs(8));
    wait_lamp("grandstream-gxp", &gxp, &["ringing", "busy"], secs(8));
    wait_lamp("grandstream-wave", &wave, &["ringing", "busy"], secs(8));
    call.wait_success(secs(15));
    wait_lamp("grandstream-gxp", &gxp, &["busy", "idle"], secs(8));
    wait_lamp("grandstream-wave", &wave, &["busy", "idle"], secs(8));

    // 1002 un-registers: offline again
    phone.wait_success(secs(25));
    wait_lamp("grandstream-gxp", &gxp, &["idle", "offline"], secs(8));
    wait_lamp("grandstream-wave", &wave, &["idle", "offline"], secs(8));
    wave.wait_success(secs(30));
    gxp.wait_success(secs(30));
    for (profile, s) in [("grandstream-wave", &wave), ("grandstream-gxp", &gxp)] {
        assert_eq!(
            lamp(profile, s),
            ["offline", "idle", "ringing", "busy", "idle", "offline"],
            "{profile}\n{}",
            s.diagnostics()
        );
    }

    // Nothing in clear text to the provider: since the bridge started, every
    // request Kamailio received came over TLS, except its own PUBLISHes (from
    // its own UDP port to itself).
    let lines = rx_lines(&kam, log_mark);
    let own = format!(":127.0.0.1:{}", kam.port());
    let tls: Vec<&String> = lines.iter().filter(|l| l.contains(" from tls:")).collect();
    let clear: Vec<&String> = lines
        .iter()
        .filter(|l| !l.contains(" from tls:") && !l.contains(&own))
        .collect();
    assert!(
        clear.is_empty(),
        "clear-text requests to the PBX: {clear:#?}"
    );
    for method in ["REGISTER", "SUBSCRIBE", "INVITE", "OPTIONS"] {
        assert!(
            tls.iter().any(|l| l.contains(&format!("RX {method} "))),
            "a {method} over TLS: {lines:#?}"
        );
    }
    // one TLS connection carried it all, in both directions
    assert_eq!(
        bridge
            .log()
            .matches("TLS connection to the upstream established")
            .count(),
        1,
        "{}",
        tail(&bridge.log(), 40)
    );
}

/// The bridge's warn lines about refused upstream certificates.
fn refusals(bridge: &Bridge) -> Vec<String> {
    bridge
        .log()
        .lines()
        .filter(|l| l.contains("TLS connection to the upstream refused"))
        .map(String::from)
        .collect()
}

#[test]
fn a_wrong_ca_and_a_certificate_for_another_name_are_refused() {
    if !tls_e2e_ready("a_wrong_ca_and_a_certificate_for_another_name_are_refused") {
        return;
    }
    let ca = Ca::new("blf test CA");
    let kam = tls_pbx(ca.server("pbx.test"));
    let files = TempDir::new("tls");
    let log_mark = kam.log().lines().count();

    // 1. the bridge trusts another CA
    let other = Ca::new("some other CA");
    let other_file = write(files.path(), "other-ca.pem", &other.pem);
    let mut bridge = Bridge::start(&tls_config(&kam, &other_file, "pbx.test"));
    // first attempt at once, then after 1 s and 2 s more (backoff doubling)
    assert!(
        wait_until(secs(8), POLL, || refusals(&bridge).len() >= 3),
        "refused and retried: {}",
        tail(&bridge.log(), 30)
    );
    let lines = refusals(&bridge);
    let first = &lines[0];
    assert!(
        first.contains("not signed by a trusted CA")
            && first.contains("other-ca.pem")
            && first.contains("issuer CN=blf test CA")
            && first.contains("subject CN=pbx.test"),
        "one line with what was expected and what was presented: {first}"
    );
    // bounded: a backoff, not a loop (1 + 1 s + 2 s + 4 s … within 8 s: ≤ 4)
    std::thread::sleep(secs(2));
    let n = refusals(&bridge).len();
    assert!(n <= 5, "{n} attempts:\n{}", refusals(&bridge).join("\n"));
    assert!(
        !bridge
            .log()
            .contains("TLS connection to the upstream established")
    );
    bridge.stop(secs(5));

    // 2. the right CA, but the certificate is for pbx.test, not the name the
    //    bridge was told to expect
    let ca_file = write(files.path(), "ca.pem", &ca.pem);
    let bridge = Bridge::start(&tls_config(&kam, &ca_file, "sip.example.net"));
    assert!(
        wait_until(secs(8), POLL, || !refusals(&bridge).is_empty()),
        "refused: {}",
        tail(&bridge.log(), 30)
    );
    let line = &refusals(&bridge)[0];
    assert!(
        line.contains("name mismatch")
            && line.contains("expected \"sip.example.net\"")
            && line.contains("certificate for \"pbx.test\""),
        "one line with the expected and the presented name: {line}"
    );
    assert!(
        !bridge
            .log()
            .contains("TLS connection to the upstream established")
    );

    // nothing of the bridge reached the PBX's SIP handling
    let lines = rx_lines(&kam, log_mark);
    let own = format!(":127.0.0.1:{}", kam.port());
    let foreign: Vec<&String> = lines.iter().filter(|l| !l.contains(&own)).collect();
    assert!(foreign.is_empty(), "{foreign:#?}");
    assert!(kam.watchers().is_empty(), "{:?}", kam.watchers());
}

/// `blf-bridge check` on a TLS config: exit 2 and a `file:line: upstream.KEY:`
/// line for each bad file.
#[test]
fn check_names_bad_tls_files() {
    let dir = TempDir::new("tls-check");
    let ca = Ca::new("blf test CA");
    let (cert, _key) = ca.server("bridge.example.net");
    let (_, other_key) = ca.server("other.example.net");
    let cert_file = write(dir.path(), "client.pem", &cert);
    let key_file = write(dir.path(), "client-key.pem", &other_key);
    let junk = write(dir.path(), "junk.pem", "hello\n");
    let cfg = format!(
        "[listen]\nudp = \"127.0.0.1:5060\"\n\n[upstream]\nproxy = \"pbx.example.net\"\ndomain = \"pbx.example.net\"\ntransport = \"tls\"\nca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n\n[[account]]\nuser = \"1001\"\npassword = \"x\"\n",
        junk.display(),
        cert_file.display(),
        key_file.display()
    );
    let file = write(dir.path(), "bridge.toml", &cfg);
    let out = Command::new(env!("CARGO_BIN_EXE_blf-bridge"))
        .arg("check")
        .arg("--config")
        .arg(&file)
        .output()
        .expect("run check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
    let at = |key: &str| {
        let line = cfg
            .lines()
            .position(|l| l.starts_with(&format!("{key} =")))
            .map(|i| i + 1)
            .unwrap_or(0);
        format!("{}:{line}: upstream.{key}:", file.display())
    };
    assert!(
        text.contains(&at("ca_file")) && text.contains("holds no PEM certificate"),
        "{text}"
    );
    assert!(
        text.contains(&at("client_cert")) && text.contains("does not belong to the certificate"),
        "{text}"
    );

    // the same files, right: check passes and says TLS
    let (cert, key) = ca.server("bridge.example.net");
    write(dir.path(), "client.pem", &cert);
    write(dir.path(), "client-key.pem", &key);
    write(dir.path(), "junk.pem", &ca.pem);
    // (pbx.example.net does not resolve: DNS is not what this checks)
    let out = Command::new(env!("CARGO_BIN_EXE_blf-bridge"))
        .arg("check")
        .arg("--offline")
        .arg("--config")
        .arg(&file)
        .output()
        .expect("run check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("tls"), "{text}");
}

/// The provider goes away and comes back on the same address: the bridge
/// reconnects after a growing backoff, on one new TLS connection, and its
/// upstream subscriptions are back.
#[test]
fn the_connection_comes_back_after_the_provider_restarts() {
    if !tls_e2e_ready("the_connection_comes_back_after_the_provider_restarts") {
        return;
    }
    let ca = Ca::new("blf test CA");
    let server = ca.server("pbx.test");
    let kam = tls_pbx(server.clone());
    let (port, tls_port) = (kam.port(), kam.tls_addr().map(|a| a.port()));
    let files = TempDir::new("tls");
    let ca_file = write(files.path(), "ca.pem", &ca.pem);
    let cfg = tls_config(&kam, &ca_file, "pbx.test").replace(
        "transport = \"tls\"\n",
        "transport = \"tls\"\nkeepalive_interval = 5\n",
    );
    let bridge = Bridge::start(&cfg);
    let mut gxp =
        SippCmd::blf_watcher(bridge.addr(), BlfModel::Gxp, "1003", "1002", secs(60)).spawn();
    wait_lamp("grandstream-gxp", &gxp, &["offline"], secs(10));
    assert_eq!(kam.watchers_of("1002", "dialog").len(), 1);

    // the provider crashes; the bridge retries after 1 s, then 2 s …
    kam.kill();
    let backoffs = |b: &Bridge| {
        b.log()
            .lines()
            .filter(|l| l.contains("reconnecting after the backoff"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(secs(8), POLL, || backoffs(&bridge).len() >= 3),
        "{}",
        tail(&bridge.log(), 30)
    );
    let b = backoffs(&bridge);
    for (line, s) in b
        .iter()
        .zip(["retry_in_s=1", "retry_in_s=2", "retry_in_s=4"])
    {
        assert!(line.contains(s), "{s}: {b:#?}");
    }

    // … and it comes back: a second TLS connection, the subscriptions renewed
    let kam = Kamailio::start(KamailioOpts {
        port: Some(port),
        tls: Some(KamailioTls {
            cert_pem: server.0,
            key_pem: server.1,
            port: tls_port,
            client_ca_pem: None,
        }),
        ..KamailioOpts::default()
    });
    assert!(
        wait_until(secs(30), POLL, || {
            kam.watchers_of("1002", "dialog").len() == 1
                && kam.watchers_of("1002", "presence").len() == 1
        }),
        "subscriptions back on the restarted provider: {:?}\n{}",
        kam.watchers(),
        tail(&bridge.log(), 30)
    );
    assert_eq!(
        bridge
            .log()
            .matches("TLS connection to the upstream established")
            .count(),
        2,
        "{}",
        tail(&bridge.log(), 40)
    );
    gxp.kill();
}

/// A provider that requires a client certificate gets the bridge's
/// `client_cert`; without one nothing gets through.
#[test]
fn a_client_certificate_is_presented_when_the_provider_asks_for_one() {
    if !tls_e2e_ready("a_client_certificate_is_presented_when_the_provider_asks_for_one") {
        return;
    }
    let ca = Ca::new("blf test CA");
    let (cert_pem, key_pem) = ca.server("pbx.test");
    let kam = Kamailio::start(KamailioOpts {
        tls: Some(KamailioTls {
            cert_pem,
            key_pem,
            port: None,
            client_ca_pem: Some(ca.pem.clone()),
        }),
        ..KamailioOpts::default()
    });
    let files = TempDir::new("tls");
    let ca_file = write(files.path(), "ca.pem", &ca.pem);
    let (client, client_key) = ca.server("bridge.example.net");
    let client = write(files.path(), "bridge.pem", &client);
    let client_key = write(files.path(), "bridge-key.pem", &client_key);

    // without a client certificate: the PBX never accepts a subscription
    let mut bridge = Bridge::start(&tls_config(&kam, &ca_file, "pbx.test"));
    let mut gxp =
        SippCmd::blf_watcher(bridge.addr(), BlfModel::Gxp, "1003", "1002", secs(30)).spawn();
    assert!(
        wait_until(secs(8), POLL, || refusals(&bridge).iter().any(|l| l
            .contains("CertificateRequired")
            && l.contains("client_cert"))),
        "the refusal names the missing client certificate: {}",
        tail(&bridge.log(), 30)
    );
    assert!(kam.watchers().is_empty(), "{:?}", kam.watchers());
    gxp.kill();
    bridge.stop(secs(5));

    // with it: the subscriptions are made over TLS
    let cfg = tls_config(&kam, &ca_file, "pbx.test").replace(
        "transport = \"tls\"\n",
        &format!(
            "transport = \"tls\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
            client.display(),
            client_key.display()
        ),
    );
    let bridge = Bridge::start(&cfg);
    let mut gxp =
        SippCmd::blf_watcher(bridge.addr(), BlfModel::Gxp, "1003", "1002", secs(30)).spawn();
    wait_lamp("grandstream-gxp", &gxp, &["offline"], secs(10));
    assert!(
        wait_until(secs(5), POLL, || kam.watchers_of("1002", "dialog").len()
            == 1),
        "{:?}\n{}",
        kam.watchers(),
        tail(&bridge.log(), 30)
    );
    gxp.kill();
}
