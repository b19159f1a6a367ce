//! Wire formats of the requests and responses the translator originates.

use super::manager::Env;
use super::types::{PhoneSub, Target, Upstream};
use crate::sip::{MessageBuilder, Method, NameAddr, SipMessage, Transport};
use bytes::Bytes;

/// Our Contact for dialogs the bridge terminates. The user part
/// ([`crate::local::CONTACT_USER`]) marks requests addressed to the bridge's own
/// UAS dialogs.
pub fn contact(env: &Env, transport: Transport) -> String {
    env.local.contact(transport)
}

/// Request-URI and Route values for an in-dialog request (RFC 3261 §12.2.1.1):
/// loose routing when the first route has `lr`, else the strict-routing form.
pub fn in_dialog_target(remote_target: &str, route_set: &[String]) -> (String, Vec<String>) {
    let Some(first) = route_set.first() else {
        return (remote_target.to_string(), Vec::new());
    };
    let first_uri = NameAddr::parse(first.as_bytes())
        .ok()
        .and_then(|n| n.parsed_uri().ok().map(|u| (u.has_lr(), n.uri.to_vec())));
    match first_uri {
        Some((false, uri)) => {
            // strict router: it becomes the Request-URI, the remote target goes last
            let mut routes: Vec<String> = route_set[1..].to_vec();
            routes.push(format!("<{remote_target}>"));
            (String::from_utf8_lossy(&uri).into_owned(), routes)
        }
        _ => (remote_target.to_string(), route_set.to_vec()),
    }
}

/// A NOTIFY for a phone subscription.
pub fn notify(
    env: &Env,
    sub: &PhoneSub,
    branch: &str,
    subscription_state: &str,
    body: Option<&[u8]>,
) -> Bytes {
    let (ruri, routes) = in_dialog_target(&sub.remote_target, &sub.route_set);
    let mut b = MessageBuilder::request(&Method::Notify, &ruri);
    b.header("Via", env.local.via(sub.flow.transport, branch))
        .header("Max-Forwards", 70);
    for r in &routes {
        b.header("Route", r);
    }
    b.header("From", &sub.local_header)
        .header("To", &sub.remote_header)
        .header("Call-ID", &sub.call_id)
        .header("CSeq", format_args!("{} NOTIFY", sub.local_cseq))
        .header("Contact", contact(env, sub.flow.transport));
    match &sub.event_id {
        Some(id) => b.header("Event", format_args!("dialog;id={id}")),
        None => b.header("Event", "dialog"),
    };
    b.header("Subscription-State", subscription_state)
        .header("User-Agent", env.user_agent);
    match body {
        Some(body) => b.finish_with_body("application/dialog-info+xml", body),
        None => b.finish(),
    }
}

/// A SUBSCRIBE towards the upstream: initial (no remote tag yet) or in-dialog.
pub fn subscribe(
    env: &Env,
    target: &Target,
    up: &Upstream,
    branch: &str,
    expires: u32,
    auth: &[(&'static str, String)],
) -> (Bytes, String) {
    let domain = &env.cfg.upstream.domain;
    let transport = env.upstream.transport;
    let (ruri, routes) = match (&up.remote_tag, &up.remote_target) {
        (Some(_), Some(rt)) => in_dialog_target(rt, &up.route_set),
        _ => (target.aor.clone(), Vec::new()),
    };
    let mut b = MessageBuilder::request(&Method::Subscribe, &ruri);
    b.header("Via", env.local.via(transport, branch))
        .header("Max-Forwards", 70);
    for r in &routes {
        b.header("Route", r);
    }
    b.header(
        "From",
        format_args!("<sip:{}@{}>;tag={}", target.account, domain, up.local_tag),
    );
    match &up.remote_tag {
        Some(t) => b.header("To", format_args!("<{}>;tag={t}", target.aor)),
        None => b.header("To", format_args!("<{}>", target.aor)),
    };
    b.header("Call-ID", &up.call_id)
        .header("CSeq", format_args!("{} SUBSCRIBE", up.cseq))
        .header("Contact", contact(env, transport))
        .header("Event", up.package.event())
        .header("Accept", up.package.accept())
        .header("Expires", expires);
    for (name, value) in auth {
        b.header(name, value);
    }
    b.header("User-Agent", env.user_agent);
    (b.finish(), ruri)
}

/// A response to a phone's SUBSCRIBE (or other request on its dialog).
pub fn response(
    req: &SipMessage,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(&str, String)],
) -> Bytes {
    let mut b = MessageBuilder::response_to(req, code, reason, to_tag);
    for (n, v) in extra {
        b.header(n, v);
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_and_strict_routing() {
        let (r, routes) = in_dialog_target("sip:a@10.0.0.5", &[]);
        assert_eq!(r, "sip:a@10.0.0.5");
        assert!(routes.is_empty());
        let rs = vec!["<sip:p1;lr>".to_string(), "<sip:p2;lr>".to_string()];
        let (r, routes) = in_dialog_target("sip:a@10.0.0.5", &rs);
        assert_eq!(r, "sip:a@10.0.0.5");
        assert_eq!(routes, rs);
        let rs = vec!["<sip:p1>".to_string(), "<sip:p2;lr>".to_string()];
        let (r, routes) = in_dialog_target("sip:a@10.0.0.5", &rs);
        assert_eq!(r, "sip:p1");
        assert_eq!(
            routes,
            vec!["<sip:p2;lr>".to_string(), "<sip:a@10.0.0.5>".to_string()]
        );
    }
}
