//! Typed views of a [`SipMessage`]: [`Request`] and [`Response`], whose method,
//! Request-URI and status are not optional, and the accessors that find a header
//! and read it with its typed view from [`header`](super::header) (top Via and
//! branch, Call-ID, CSeq, From/To and their tags, Contact, Event, Expires,
//! Subscription-State, Content-Type, Accept, option tags).
//!
//! Everything is computed on demand from the original bytes; framing a message
//! only indexes its headers (see [`message`](super::message)).

use super::grammar::{Res, parse_delta, trim};
use super::header::{CSeq, Event, HeaderName, NameAddr, SubState, Via};
use super::message::{Method, SipMessage, Span, StartLine, split_list};

/// A request: a [`SipMessage`] whose start line is a Request-Line. Dereferences
/// to the message for everything else.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    msg: &'a SipMessage,
    method: &'a Method,
    uri: Span,
}

impl<'a> Request<'a> {
    #[inline]
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The Request-URI as written.
    #[inline]
    pub fn uri(&self) -> &'a [u8] {
        self.msg.slice(self.uri)
    }

    #[inline]
    pub fn uri_span(&self) -> Span {
        self.uri
    }

    #[inline]
    pub fn message(&self) -> &'a SipMessage {
        self.msg
    }
}

impl std::ops::Deref for Request<'_> {
    type Target = SipMessage;
    fn deref(&self) -> &SipMessage {
        self.msg
    }
}

/// A response: a [`SipMessage`] whose start line is a Status-Line. Dereferences
/// to the message for everything else.
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    msg: &'a SipMessage,
    status: u16,
    reason: Span,
}

impl<'a> Response<'a> {
    #[inline]
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase as written.
    #[inline]
    pub fn reason(&self) -> &'a [u8] {
        self.msg.slice(self.reason)
    }

    #[inline]
    pub fn message(&self) -> &'a SipMessage {
        self.msg
    }
}

impl std::ops::Deref for Response<'_> {
    type Target = SipMessage;
    fn deref(&self) -> &SipMessage {
        self.msg
    }
}

impl SipMessage {
    /// This message as a [`Request`], if it is one.
    #[inline]
    pub fn as_request(&self) -> Option<Request<'_>> {
        match self.start() {
            StartLine::Request { method, uri } => Some(Request {
                msg: self,
                method,
                uri: *uri,
            }),
            StartLine::Response { .. } => None,
        }
    }

    /// This message as a [`Response`], if it is one.
    #[inline]
    pub fn as_response(&self) -> Option<Response<'_>> {
        match self.start() {
            StartLine::Response { code, reason } => Some(Response {
                msg: self,
                status: *code,
                reason: *reason,
            }),
            StartLine::Request { .. } => None,
        }
    }
}

impl SipMessage {
    /// The topmost Via value.
    pub fn top_via(&self) -> Option<Res<Via<'_>>> {
        let h = self.header(HeaderName::Via)?;
        let first = split_list(self.buffer(), h.value).next()?;
        Some(Via::parse(self.slice(first)))
    }

    /// Span of the topmost Via value (first element of the first Via header).
    pub fn top_via_span(&self) -> Option<Span> {
        let h = self.header(HeaderName::Via)?;
        split_list(self.buffer(), h.value).next()
    }

    /// Every Via value, top first.
    pub fn vias(&self) -> impl Iterator<Item = Res<Via<'_>>> + '_ {
        self.values(HeaderName::Via)
            .map(|s| Via::parse(self.slice(s)))
    }

    /// Branch of the top Via, the transaction key on the hot path.
    pub fn branch(&self) -> Option<&[u8]> {
        self.top_via()?.ok()?.branch()
    }

    pub fn call_id(&self) -> Option<&[u8]> {
        self.header_value(HeaderName::CallId).map(trim)
    }

    pub fn cseq(&self) -> Option<Res<CSeq<'_>>> {
        self.header_value(HeaderName::CSeq).map(CSeq::parse)
    }

    pub fn from(&self) -> Option<Res<NameAddr<'_>>> {
        self.header_value(HeaderName::From).map(NameAddr::parse)
    }

    pub fn to(&self) -> Option<Res<NameAddr<'_>>> {
        self.header_value(HeaderName::To).map(NameAddr::parse)
    }

    pub fn from_tag(&self) -> Option<&[u8]> {
        self.from()?.ok()?.tag()
    }

    pub fn to_tag(&self) -> Option<&[u8]> {
        self.to()?.ok()?.tag()
    }

    /// Every Contact value (a `*` Contact is returned as an error-free `None` URI by
    /// the caller checking [`SipMessage::is_wildcard_contact`]).
    pub fn contacts(&self) -> impl Iterator<Item = (Span, Res<NameAddr<'_>>)> + '_ {
        self.values(HeaderName::Contact)
            .map(|s| (s, NameAddr::parse(self.slice(s))))
    }

    /// `Contact: *` (REGISTER remove-all).
    pub fn is_wildcard_contact(&self) -> bool {
        self.values(HeaderName::Contact)
            .next()
            .is_some_and(|s| self.slice(s) == b"*")
    }

    pub fn event(&self) -> Option<Res<Event<'_>>> {
        self.header_value(HeaderName::Event).map(Event::parse)
    }

    pub fn expires(&self) -> Option<Res<u32>> {
        self.header_value(HeaderName::Expires).map(parse_delta)
    }

    pub fn max_forwards(&self) -> Option<Res<u32>> {
        self.header_value(HeaderName::MaxForwards).map(parse_delta)
    }

    /// The Subscription-State header (first one), see [`SubState::parse`].
    pub fn subscription_state(&self) -> Option<Res<SubState<'_>>> {
        self.header_value(HeaderName::SubscriptionState)
            .map(SubState::parse)
    }

    /// Content-Type media type without parameters, lower-cased comparison helper.
    pub fn content_type(&self) -> Option<&[u8]> {
        let v = self.header_value(HeaderName::ContentType)?;
        let e = memchr::memchr(b';', v).unwrap_or(v.len());
        Some(trim(&v[..e]))
    }

    pub fn user_agent(&self) -> Option<&[u8]> {
        self.header_value(HeaderName::UserAgent)
    }

    /// Does any Accept header list `media` (or a matching wildcard)? `None` when the
    /// request has no Accept header at all.
    pub fn accepts(&self, media: &str) -> Option<bool> {
        self.header(HeaderName::Accept)?;
        let (ty, _sub) = media.split_once('/').unwrap_or((media, ""));
        Some(self.values(HeaderName::Accept).any(|s| {
            let v = self.slice(s);
            let e = memchr::memchr(b';', v).unwrap_or(v.len());
            let m = trim(&v[..e]);
            m.eq_ignore_ascii_case(media.as_bytes())
                || m == b"*/*"
                || (m.len() == ty.len() + 2
                    && m[..ty.len()].eq_ignore_ascii_case(ty.as_bytes())
                    && &m[ty.len()..] == b"/*")
        }))
    }

    /// Option tags listed in all headers of `name` (Supported, Require, Proxy-Require).
    pub fn option_tags(&self, name: HeaderName) -> impl Iterator<Item = &[u8]> + '_ {
        self.values(name).map(|s| trim(self.slice(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::header::SubStateKind;
    use bytes::Bytes;

    #[test]
    fn message_subscription_state_uses_sub_state() {
        let m = SipMessage::parse(Bytes::from_static(
            b"NOTIFY sip:a@b SIP/2.0\r\nSubscription-State: terminated;reason=deactivated\r\nl: 0\r\n\r\n",
        ))
        .unwrap();
        let s = m.subscription_state().unwrap().unwrap();
        assert_eq!(s.state, SubStateKind::Terminated);
        assert!(s.reason_is("deactivated"));
        let m = SipMessage::parse(Bytes::from_static(
            b"NOTIFY sip:a@b SIP/2.0\r\nl: 0\r\n\r\n",
        ))
        .unwrap();
        assert!(m.subscription_state().is_none());
    }

    #[test]
    fn accept_matching() {
        let m = SipMessage::parse(Bytes::from_static(
            b"SUBSCRIBE sip:a@b SIP/2.0\r\nAccept: application/dialog-info+xml, multipart/related, application/rlmi+xml\r\nl: 0\r\n\r\n",
        ))
        .unwrap();
        assert_eq!(m.accepts("application/dialog-info+xml"), Some(true));
        assert_eq!(m.accepts("application/pidf+xml"), Some(false));
        let m = SipMessage::parse(Bytes::from_static(
            b"SUBSCRIBE sip:a@b SIP/2.0\r\nAccept: application/*\r\nl: 0\r\n\r\n",
        ))
        .unwrap();
        assert_eq!(m.accepts("application/pidf+xml"), Some(true));
        let m = SipMessage::parse(Bytes::from_static(
            b"SUBSCRIBE sip:a@b SIP/2.0\r\nl: 0\r\n\r\n",
        ))
        .unwrap();
        assert_eq!(m.accepts("application/pidf+xml"), None);
    }

    #[test]
    fn request_and_response_views() {
        let m = SipMessage::parse(Bytes::from_static(
            b"SUBSCRIBE sip:1001@pbx.example.com SIP/2.0\r\nl: 0\r\n\r\n",
        ))
        .unwrap();
        let r = m.as_request().unwrap();
        assert_eq!(r.method(), &Method::Subscribe);
        assert_eq!(r.uri(), b"sip:1001@pbx.example.com");
        assert_eq!(r.uri(), m.request_uri().unwrap());
        assert_eq!(r.uri_span(), m.request_uri_span().unwrap());
        assert!(m.as_response().is_none());
        let m = SipMessage::parse(Bytes::from_static(
            b"SIP/2.0 481 Call/Transaction Does Not Exist\r\nl: 0\r\n\r\n",
        ))
        .unwrap();
        let r = m.as_response().unwrap();
        assert_eq!(r.status(), 481);
        assert_eq!(r.reason(), b"Call/Transaction Does Not Exist");
        assert_eq!(Some(r.status()), m.status());
        assert!(m.as_request().is_none());
    }
}
