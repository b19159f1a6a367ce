//! Wire formats shared by the notifier and the subscriber: Contact, Call-IDs,
//! in-dialog request targets, responses.

use super::types::Env;
use crate::flow::Flow;
use crate::local::CALL_ID_HOST;
use crate::sip::{MessageBuilder, NameAddr, SipMessage, Transport};
use crate::util::Rng;
use bytes::Bytes;

/// Our Contact for dialogs the bridge terminates. The user part
/// ([`crate::local::CONTACT_USER`]) marks requests addressed to the bridge's own
/// UAS dialogs.
pub fn contact(env: &Env, transport: Transport) -> String {
    env.local.contact(transport)
}

/// A new Call-ID for a dialog the bridge starts.
pub fn call_id(rng: &mut Rng) -> String {
    format!("{}@{CALL_ID_HOST}", rng.token(20))
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

/// The 200 to a phone's SUBSCRIBE: our Contact (on the phone's transport) and
/// the granted expiry; `to_tag` for an initial SUBSCRIBE.
pub fn subscribe_ok(
    env: &Env,
    req: &SipMessage,
    flow: Flow,
    to_tag: Option<&str>,
    expires: u32,
) -> Bytes {
    let extra = [
        ("Contact", contact(env, flow.transport)),
        ("Expires", expires.to_string()),
    ];
    response(req, 200, "OK", to_tag, &extra)
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
