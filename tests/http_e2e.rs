//! The operator's window end to end: the blf-bridge binary with `[http]`,
//! Kamailio as the PBX, a SIPp GXP watching 1002. `/healthz`, `/readyz` (and
//! its 503 within one keep-alive interval of the PBX going away),
//! `/api/targets`, `/metrics` parsed by a Prometheus text-format parser with
//! counters that move, the lamp panel's HTML, and basic authentication.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// GET `path` (HTTP/1.1, Connection: close): (status, body).
fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, secs(2)).ok()?;
    s.set_read_timeout(Some(secs(5))).ok()?;
    let auth = auth
        .map(|a| format!("Authorization: Basic {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|x| x.1.to_string())?;
    // chunked bodies: good enough to strip the chunk sizes for our checks
    Some((status, body))
}

fn metric(samples: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .samples
        .iter()
        .find(|s| {
            s.metric == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(k).is_some_and(|x| x == *v))
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

fn scrape(addr: SocketAddr) -> prometheus_parse::Scrape {
    let (code, body) = get(addr, "/metrics", None).expect("GET /metrics");
    assert_eq!(code, 200, "{body}");
    let body = dechunk(&body);
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("Prometheus text format")
}

/// Remove HTTP/1.1 chunk framing if present.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return body.to_string();
        };
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_string();
        };
        if n == 0 {
            return out;
        }
        if after.len() < n {
            return body.to_string();
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
}

#[test]
fn window_shows_lamps_metrics_and_readiness_as_the_pbx_comes_and_goes() {
    if !e2e_ready("window_shows_lamps_metrics_and_readiness_as_the_pbx_comes_and_goes") {
        return;
    }
    let kam = Kamailio::start(KamailioOpts::default());
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = bridge_config(free_port(), kam.addr()).replace(
        "transport = \"udp\"\n",
        "transport = \"udp\"\nkeepalive_interval = 5\n",
    ) + &format!("\n[http]\nlisten = \"{http}\"\n");
    let bridge = Bridge::start(&config);

    assert_eq!(get(http, "/healthz", None).map(|r| r.0), Some(200));
    assert!(
        wait_until(secs(10), POLL, || get(http, "/readyz", None)
            .is_some_and(|r| r.0 == 200)),
        "ready once the PBX answered a keep-alive: {:?}",
        get(http, "/readyz", None)
    );
    let before = scrape(http);
    assert_eq!(metric(&before, "blf_bridge_build_info", &[]), Some(1.0));
    assert!(metric(&before, "process_start_time_seconds", &[]).is_some_and(|t| t > 1.7e9));

    let mut gxp =
        SippCmd::blf_watcher(bridge.addr(), BlfModel::Gxp, "1001", "1002", secs(40)).spawn();
    wait_lamp("grandstream-gxp", &gxp, &["offline"], secs(8));
    assert!(
        wait_until(secs(5), POLL, || get(http, "/api/targets", None)
            .is_some_and(|(_, b)| {
                let b = dechunk(&b);
                b.contains("\"aor\":\"sip:1002@pbx.test\"") && b.contains("\"state\":\"offline\"")
            })),
        "{:?}",
        get(http, "/api/targets", None)
    );
    let api = dechunk(&get(http, "/api/targets", None).unwrap().1);
    assert!(
        api.contains("Grandstream GXP"),
        "the watching phone's User-Agent: {api}"
    );
    assert!(api.contains("\"profile\":\"grandstream-gxp\""), "{api}");

    let m = scrape(http);
    assert_eq!(
        metric(&m, "blf_bridge_targets", &[("state", "offline")]),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "blf_bridge_phone_subscriptions",
            &[("profile", "grandstream-gxp")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "blf_bridge_upstream_subscriptions",
            &[("package", "dialog"), ("state", "active")]
        ),
        Some(1.0)
    );
    let sent = |s: &prometheus_parse::Scrape| {
        metric(s, "blf_bridge_notifies_sent_total", &[]).unwrap_or(0.0)
    };
    let received = |s: &prometheus_parse::Scrape| {
        metric(s, "blf_bridge_notifies_received_total", &[]).unwrap_or(0.0)
    };
    assert!(
        sent(&m) > sent(&before),
        "NOTIFYs sent moved: {} -> {}",
        sent(&before),
        sent(&m)
    );
    assert!(
        received(&m) >= 2.0,
        "dialog and presence NOTIFYs received: {}",
        received(&m)
    );

    // 1002 registers through the bridge: idle; a REGISTER forwarded is counted
    let mut phone = SippCmd::phone(bridge.addr(), "1002", secs(6)).spawn();
    wait_lamp("grandstream-gxp", &gxp, &["offline", "idle"], secs(8));
    // the window refreshes at most every 250 ms
    assert!(
        wait_until(secs(3), POLL, || {
            metric(
                &scrape(http),
                "blf_bridge_requests_forwarded_total",
                &[("method", "REGISTER")],
            )
            .is_some_and(|n| n >= 1.0)
        }),
        "REGISTER forwarded counted:\n{}",
        dechunk(&get(http, "/metrics", None).unwrap().1)
    );
    let m2 = scrape(http);
    assert!(sent(&m2) > sent(&m));
    assert!(
        wait_until(secs(3), POLL, || {
            let s = scrape(http);
            metric(&s, "blf_bridge_targets", &[("state", "idle")]) == Some(1.0)
        }),
        "the idle lamp in the metrics"
    );
    phone.wait_success(secs(20));

    // the panel itself: compiled-in HTML that reads /events
    let (code, html) = get(http, "/", None).unwrap();
    assert_eq!(code, 200);
    assert!(html.contains("EventSource(\"events\")") && html.contains("data-state"));

    // the PBX goes away: not ready within one keep-alive interval (5 s) + a ping
    kam.kill();
    let t = std::time::Instant::now();
    assert!(
        wait_until(secs(12), POLL, || get(http, "/readyz", None)
            .is_some_and(|r| r.0 == 503)),
        "503 after the PBX stopped answering"
    );
    let (_, why) = get(http, "/readyz", None).unwrap();
    assert!(why.contains("upstream"), "{why}");
    eprintln!(
        "readyz turned 503 {:?} after the PBX was killed",
        t.elapsed()
    );
    assert_eq!(
        get(http, "/healthz", None).map(|r| r.0),
        Some(200),
        "still alive"
    );
    gxp.kill();
}

#[test]
fn basic_authentication_guards_everything_but_healthz() {
    let port = free_port();
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let upstream = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let config = bridge_config(port, upstream.local_addr().unwrap())
        + &format!("\n[http]\nlisten = \"{http}\"\nuser = \"admin\"\npassword = \"s3cret\"\n");
    let _bridge = Bridge::start(&config);
    assert_eq!(get(http, "/healthz", None).map(|r| r.0), Some(200));
    for path in ["/", "/metrics", "/api/targets", "/readyz", "/events"] {
        assert_eq!(get(http, path, None).map(|r| r.0), Some(401), "{path}");
        assert_eq!(
            get(http, path, Some("YWRtaW46d3Jvbmc=")).map(|r| r.0),
            Some(401),
            "{path} with a wrong password"
        );
    }
    // admin:s3cret
    assert_eq!(
        get(http, "/", Some("YWRtaW46czNjcmV0")).map(|r| r.0),
        Some(200)
    );
    assert_eq!(
        get(http, "/metrics", Some("YWRtaW46czNjcmV0")).map(|r| r.0),
        Some(200)
    );
}
