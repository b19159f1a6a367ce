//! Header names: the headers the bridge acts on get a variant, everything else is
//! [`HeaderName::Other`] and is only ever carried through byte for byte.
//!
//! Compact forms (RFC 3261 §7.3.3 and the IANA registry) map to the same variant as
//! their long names, so `v:` is a [`HeaderName::Via`].

/// A header name the bridge knows. Comparison is case-insensitive at parse time;
/// the original spelling stays in the message bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    MaxForwards,
    Expires,
    MinExpires,
    Event,
    AllowEvents,
    SubscriptionState,
    Accept,
    Allow,
    Route,
    RecordRoute,
    Path,
    WwwAuthenticate,
    ProxyAuthenticate,
    Authorization,
    ProxyAuthorization,
    UserAgent,
    Server,
    ContentType,
    ContentLength,
    ContentEncoding,
    Supported,
    Require,
    ProxyRequire,
    Unsupported,
    RetryAfter,
    Subject,
    ReferTo,
    ReferredBy,
    SessionExpires,
    Identity,
    AcceptContact,
    RejectContact,
    RequestDisposition,
    Date,
    Warning,
    /// Any other header. The name is available from the message as raw bytes.
    Other,
}

impl HeaderName {
    /// Recognise a header name (long or compact form, any case).
    #[inline]
    pub fn parse(name: &[u8]) -> HeaderName {
        use HeaderName::*;
        if name.len() == 1 {
            return match name[0].to_ascii_lowercase() {
                b'v' => Via,
                b'f' => From,
                b't' => To,
                b'i' => CallId,
                b'm' => Contact,
                b'l' => ContentLength,
                b'c' => ContentType,
                b'e' => ContentEncoding,
                b'k' => Supported,
                b'o' => Event,
                b'u' => AllowEvents,
                b's' => Subject,
                b'r' => ReferTo,
                b'b' => ReferredBy,
                b'x' => SessionExpires,
                b'y' => Identity,
                b'a' => AcceptContact,
                b'j' => RejectContact,
                b'd' => RequestDisposition,
                _ => Other,
            };
        }
        // Dispatch on length and first letter, so that a name costs at most one or
        // two full comparisons (this runs for every header of every message). A
        // non-letter first byte may alias a letter under `| 0x20`; the full
        // comparison below rejects it.
        let Some(&first) = name.first() else {
            return Other;
        };
        let candidates: &[(&[u8], HeaderName)] = match (name.len(), first | 0x20) {
            (2, b't') => &[(b"to", To)],
            (3, b'v') => &[(b"via", Via)],
            (4, b'f') => &[(b"from", From)],
            (4, b'c') => &[(b"cseq", CSeq)],
            (4, b'p') => &[(b"path", Path)],
            (4, b'd') => &[(b"date", Date)],
            (5, b'e') => &[(b"event", Event)],
            (5, b'r') => &[(b"route", Route)],
            (5, b'a') => &[(b"allow", Allow)],
            (6, b'a') => &[(b"accept", Accept)],
            (6, b's') => &[(b"server", Server)],
            (7, b'c') => &[(b"call-id", CallId), (b"contact", Contact)],
            (7, b'e') => &[(b"expires", Expires)],
            (7, b'r') => &[(b"require", Require)],
            (7, b's') => &[(b"subject", Subject)],
            (7, b'w') => &[(b"warning", Warning)],
            (8, b'r') => &[(b"refer-to", ReferTo)],
            (8, b'i') => &[(b"identity", Identity)],
            (9, b's') => &[(b"supported", Supported)],
            (10, b'u') => &[(b"user-agent", UserAgent)],
            (11, b'm') => &[(b"min-expires", MinExpires)],
            (11, b'r') => &[(b"retry-after", RetryAfter), (b"referred-by", ReferredBy)],
            (11, b'u') => &[(b"unsupported", Unsupported)],
            (12, b'm') => &[(b"max-forwards", MaxForwards)],
            (12, b'a') => &[(b"allow-events", AllowEvents)],
            (12, b'c') => &[(b"content-type", ContentType)],
            (12, b'r') => &[(b"record-route", RecordRoute)],
            (13, b'a') => &[(b"authorization", Authorization)],
            (13, b'p') => &[(b"proxy-require", ProxyRequire)],
            (14, b'c') => &[(b"content-length", ContentLength)],
            (14, b'a') => &[(b"accept-contact", AcceptContact)],
            (14, b'r') => &[(b"reject-contact", RejectContact)],
            (15, b's') => &[(b"session-expires", SessionExpires)],
            (16, b'w') => &[(b"www-authenticate", WwwAuthenticate)],
            (16, b'c') => &[(b"content-encoding", ContentEncoding)],
            (18, b's') => &[(b"subscription-state", SubscriptionState)],
            (18, b'p') => &[(b"proxy-authenticate", ProxyAuthenticate)],
            (19, b'p') => &[(b"proxy-authorization", ProxyAuthorization)],
            (19, b'r') => &[(b"request-disposition", RequestDisposition)],
            _ => &[],
        };
        for (n, h) in candidates {
            // most senders write the canonical spelling: one memcmp
            if name == h.as_str().as_bytes() || name.eq_ignore_ascii_case(n) {
                return *h;
            }
        }
        Other
    }

    /// The canonical long name, used when the bridge writes a header itself.
    pub fn as_str(self) -> &'static str {
        use HeaderName::*;
        match self {
            Via => "Via",
            From => "From",
            To => "To",
            CallId => "Call-ID",
            CSeq => "CSeq",
            Contact => "Contact",
            MaxForwards => "Max-Forwards",
            Expires => "Expires",
            MinExpires => "Min-Expires",
            Event => "Event",
            AllowEvents => "Allow-Events",
            SubscriptionState => "Subscription-State",
            Accept => "Accept",
            Allow => "Allow",
            Route => "Route",
            RecordRoute => "Record-Route",
            Path => "Path",
            WwwAuthenticate => "WWW-Authenticate",
            ProxyAuthenticate => "Proxy-Authenticate",
            Authorization => "Authorization",
            ProxyAuthorization => "Proxy-Authorization",
            UserAgent => "User-Agent",
            Server => "Server",
            ContentType => "Content-Type",
            ContentLength => "Content-Length",
            ContentEncoding => "Content-Encoding",
            Supported => "Supported",
            Require => "Require",
            ProxyRequire => "Proxy-Require",
            Unsupported => "Unsupported",
            RetryAfter => "Retry-After",
            Subject => "Subject",
            ReferTo => "Refer-To",
            ReferredBy => "Referred-By",
            SessionExpires => "Session-Expires",
            Identity => "Identity",
            AcceptContact => "Accept-Contact",
            RejectContact => "Reject-Contact",
            RequestDisposition => "Request-Disposition",
            Date => "Date",
            Warning => "Warning",
            Other => "",
        }
    }

    /// Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1), so that
    /// several values may share one header line. Authentication headers and
    /// single-valued headers are not lists even though their values contain commas.
    pub fn is_list(self) -> bool {
        use HeaderName::*;
        matches!(
            self,
            Via | Contact
                | Route
                | RecordRoute
                | Path
                | Accept
                | Allow
                | AllowEvents
                | Supported
                | Require
                | ProxyRequire
                | Unsupported
                | ContentEncoding
                | AcceptContact
                | RejectContact
                | RequestDisposition
                | Warning
        )
    }

    /// Headers that may appear at most once in a message (RFC 3261 §20 and
    /// RFC 4475 §3.3.9). A second occurrence makes a request malformed.
    pub fn is_single(self) -> bool {
        use HeaderName::*;
        matches!(
            self,
            From | To
                | CallId
                | CSeq
                | MaxForwards
                | Expires
                | MinExpires
                | ContentLength
                | ContentType
                | Event
                | SubscriptionState
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_long_forms_map_to_the_same_name() {
        for (c, l) in [
            ("v", "Via"),
            ("f", "From"),
            ("t", "To"),
            ("i", "Call-ID"),
            ("m", "Contact"),
            ("l", "Content-Length"),
            ("c", "Content-Type"),
            ("k", "Supported"),
            ("o", "Event"),
            ("u", "Allow-Events"),
            ("e", "Content-Encoding"),
            ("s", "Subject"),
            ("r", "Refer-To"),
            ("b", "Referred-By"),
        ] {
            let a = HeaderName::parse(c.as_bytes());
            let b = HeaderName::parse(l.as_bytes());
            assert_eq!(a, b, "{c} vs {l}");
            assert_ne!(a, HeaderName::Other, "{c}");
            assert_eq!(a.as_str(), l);
            // upper-case compact forms too
            assert_eq!(HeaderName::parse(c.to_ascii_uppercase().as_bytes()), a);
        }
    }

    #[test]
    fn every_named_header_round_trips_through_its_canonical_name() {
        use HeaderName::*;
        for h in [
            Via,
            From,
            To,
            CallId,
            CSeq,
            Contact,
            MaxForwards,
            Expires,
            MinExpires,
            Event,
            AllowEvents,
            SubscriptionState,
            Accept,
            Allow,
            Route,
            RecordRoute,
            Path,
            WwwAuthenticate,
            ProxyAuthenticate,
            Authorization,
            ProxyAuthorization,
            UserAgent,
            Server,
            ContentType,
            ContentLength,
            ContentEncoding,
            Supported,
            Require,
            ProxyRequire,
            Unsupported,
            RetryAfter,
            Subject,
            ReferTo,
            ReferredBy,
            SessionExpires,
            Identity,
            AcceptContact,
            RejectContact,
            RequestDisposition,
            Date,
            Warning,
        ] {
            assert_eq!(HeaderName::parse(h.as_str().as_bytes()), h, "{h:?}");
            assert_eq!(
                HeaderName::parse(h.as_str().to_ascii_lowercase().as_bytes()),
                h
            );
            assert_eq!(
                HeaderName::parse(h.as_str().to_ascii_uppercase().as_bytes()),
                h
            );
        }
    }

    #[test]
    fn unknown_names_are_other() {
        // including names whose first byte aliases a letter under `| 0x20`
        for n in [
            "X-GS-Vendor-Tag",
            "NewFangledHeader",
            "z",
            "",
            "Viaa",
            "Tos",
            "\x16ia",
            "Vi@",
            "C%6Fntact",
        ] {
            assert_eq!(HeaderName::parse(n.as_bytes()), HeaderName::Other, "{n}");
        }
    }
}
