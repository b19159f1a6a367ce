//! The bridge with `[upstream] transport = "tls"` through the sans-IO
//! `Endpoint` (tests/sim, simulated clock): what goes up names TLS (Via with
//! `;alias`, Record-Route with `;transport=tls`, the flow), what comes down on
//! the TLS connection reaches the phone over UDP, and clear text from the
//! upstream's address is not the upstream.

mod sim;

use blf_bridge::sip::{HeaderName, Method, SipMessage, Transport};
use sim::msg::Req;
use sim::*;

const P1001: &str = "127.0.0.1:5062";

fn tls_sim() -> Sim {
    let cfg = base_config("").replace(
        "transport = \"udp\"",
        "transport = \"tls\"\ntls_name = \"pbx.test\"",
    );
    Sim::with_config(cfg)
}

fn values(m: &SipMessage, name: HeaderName) -> Vec<String> {
    m.values(name)
        .map(|s| String::from_utf8_lossy(m.slice(s)).into_owned())
        .collect()
}

fn invite() -> Req {
    Req::new("INVITE", "sip:1002@pbx.test")
        .phone(5062, "z9hG4bKt1")
        .from("1001", "o1")
        .to("1002")
        .call_id("tls1@phone")
        .cseq(1)
        .contact("<sip:1001@127.0.0.1:5062>")
}

fn bye(route: &[String], branch: &str) -> Req {
    let mut r = Req::new("BYE", "sip:1001@127.0.0.1:5062")
        .upstream(branch)
        .max_forwards(69)
        .from("1002", "callee")
        .to("1001")
        .with_to_tag("o1")
        .call_id("tls1@phone")
        .cseq(7);
    for v in route {
        r = r.route(v);
    }
    r
}

#[test]
fn a_call_goes_up_over_tls_and_the_upstreams_bye_comes_down_on_it() {
    let mut sim = tls_sim();
    sim.udp_from(P1001, &invite());
    let ups = sim.take_flows_to(UPSTREAM);
    let (flow, inv) = ups
        .into_iter()
        .find(|(_, m)| m.method() == Some(&Method::Invite))
        .expect("the INVITE goes upstream");
    assert_eq!(flow.transport, Transport::Tls);
    let via = values(&inv, HeaderName::Via).remove(0);
    assert!(
        via.starts_with("SIP/2.0/TLS 127.0.0.1:5060;branch=") && via.ends_with(";rport;alias"),
        "{via}"
    );
    // double record-routing: towards the upstream over TLS, towards the phone over UDP
    let rr = values(&inv, HeaderName::RecordRoute);
    assert_eq!(rr.len(), 2, "{rr:?}");
    assert!(
        rr[0].starts_with("<sip:f-") && rr[0].ends_with("@127.0.0.1:5060;transport=tls;lr>"),
        "{rr:?}"
    );
    assert!(
        rr[1].starts_with("<sip:f-") && rr[1].ends_with("@127.0.0.1:5060;lr>"),
        "{rr:?}"
    );
    assert!(
        inv.header(HeaderName::ContentLength).is_some(),
        "a stream needs Content-Length"
    );

    // the upstream's BYE on the TLS connection, with the route set it got
    sim.take_to(P1001);
    sim.tls_from(UPSTREAM, 1, &bye(&rr, "z9hG4bKkbye"));
    let down = sim.take_flows_to(P1001);
    assert_eq!(down.len(), 1, "{down:?}");
    let (flow, b) = &down[0];
    assert_eq!(flow.transport, Transport::Udp);
    assert_eq!(b.method(), Some(&Method::Bye));
    assert!(
        b.header(HeaderName::Route).is_none(),
        "both entries were ours"
    );

    // the same BYE in clear text from the upstream's address is not the upstream's
    sim.udp_from(UPSTREAM, &bye(&rr, "z9hG4bKclear"));
    assert!(
        sim.take_to(P1001).is_empty(),
        "clear text claiming to be the TLS upstream reached the phone"
    );
}
