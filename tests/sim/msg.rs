//! A builder for the SIP requests the simulated phones and upstream send, so that a
//! test states only what differs from a plain request:
//!
//! ```ignore
//! Req::new("INVITE", "sip:1002@pbx.test")
//!     .phone(5062, "z9hG4bKo1")          // Via from 127.0.0.1:5062, with rport
//!     .from("1001", "o1")                // <sip:1001@pbx.test>;tag=o1
//!     .to("1002")
//!     .call_id("out1@phone")
//!     .body("application/sdp", SDP)      // Content-Length computed
//! ```
//!
//! and derive the requests that belong to it: [`Req::cancel`], [`Req::ack`] (for a
//! non-2xx), [`Req::in_dialog`]. Headers come out in the usual order — Via, Route,
//! Record-Route, Max-Forwards, From, To, Call-ID, CSeq, Contact, the others as
//! added, Content-Type, Content-Length — with LF line ends, which `Sim::udp_from`
//! turns into CRLF ([`Req::crlf`] does it for a direct parse). A message whose exact
//! bytes are the point of a test (compact forms, odd spacing, a missing
//! Content-Length) stays a literal.

use std::fmt;

/// A SIP request under construction. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Req {
    method: String,
    ruri: String,
    transport: &'static str,
    sent_by: String,
    branch: String,
    rport: bool,
    /// Via values below ours, verbatim.
    lower_vias: Vec<String>,
    /// One `Route:` line, comma-separated.
    route: Vec<String>,
    /// One `Record-Route:` line each.
    record_route: Vec<String>,
    max_forwards: u32,
    from: String,
    from_tag: String,
    to: String,
    to_tag: Option<String>,
    call_id: String,
    cseq: u32,
    contact: Option<String>,
    headers: Vec<(String, String)>,
    body: Option<(String, String)>,
}

/// `<sip:user@pbx.test>` for a bare user, `<uri>` for anything with a scheme.
fn name_addr(user_or_uri: &str) -> String {
    if user_or_uri.contains(':') {
        format!("<{user_or_uri}>")
    } else {
        format!("<sip:{user_or_uri}@pbx.test>")
    }
}

impl Req {
    /// `METHOD ruri SIP/2.0`, Max-Forwards 70, CSeq 1, nothing else yet.
    pub fn new(method: &str, ruri: &str) -> Req {
        Req {
            method: method.into(),
            ruri: ruri.into(),
            transport: "UDP",
            sent_by: String::new(),
            branch: String::new(),
            rport: false,
            lower_vias: Vec::new(),
            route: Vec::new(),
            record_route: Vec::new(),
            max_forwards: 70,
            from: String::new(),
            from_tag: String::new(),
            to: String::new(),
            to_tag: None,
            call_id: String::new(),
            cseq: 1,
            contact: None,
            headers: Vec::new(),
            body: None,
        }
    }

    /// Sent by a phone at 127.0.0.1:`port`: `Via: SIP/2.0/UDP 127.0.0.1:port;branch=…;rport`.
    pub fn phone(self, port: u16, branch: &str) -> Req {
        self.top_via(&format!("127.0.0.1:{port}"), branch).rport()
    }

    /// Sent by the upstream (127.0.0.1:5070): `Via: SIP/2.0/UDP 127.0.0.1:5070;branch=…`.
    pub fn upstream(self, branch: &str) -> Req {
        self.top_via("127.0.0.1:5070", branch)
    }

    /// The top Via's sent-by and branch (no rport).
    pub fn top_via(mut self, sent_by: &str, branch: &str) -> Req {
        self.sent_by = sent_by.into();
        self.branch = branch.into();
        self.rport = false;
        self
    }

    /// `;rport` on the top Via.
    pub fn rport(mut self) -> Req {
        self.rport = true;
        self
    }

    /// The top Via over TCP.
    pub fn tcp(mut self) -> Req {
        self.transport = "TCP";
        self
    }

    /// Another Via (value verbatim) below the ones already there.
    pub fn via(mut self, value: &str) -> Req {
        self.lower_vias.push(value.into());
        self
    }

    pub fn ruri(mut self, ruri: &str) -> Req {
        self.ruri = ruri.into();
        self
    }

    /// Append a Route entry.
    pub fn route(mut self, value: &str) -> Req {
        self.route.push(value.into());
        self
    }

    /// Append a Record-Route header.
    pub fn record_route(mut self, value: &str) -> Req {
        self.record_route.push(value.into());
        self
    }

    pub fn max_forwards(mut self, n: u32) -> Req {
        self.max_forwards = n;
        self
    }

    /// `From: <sip:user@pbx.test>;tag=tag` (or `<uri>` when given a URI).
    pub fn from(mut self, user_or_uri: &str, tag: &str) -> Req {
        self.from = name_addr(user_or_uri);
        self.from_tag = tag.into();
        self
    }

    /// `To: <sip:user@pbx.test>` (or `<uri>` when given a URI), no tag.
    pub fn to(mut self, user_or_uri: &str) -> Req {
        self.to = name_addr(user_or_uri);
        self.to_tag = None;
        self
    }

    pub fn with_to_tag(mut self, tag: &str) -> Req {
        self.to_tag = Some(tag.into());
        self
    }

    pub fn call_id(mut self, id: &str) -> Req {
        self.call_id = id.into();
        self
    }

    /// CSeq number (the method is the request's).
    pub fn cseq(mut self, n: u32) -> Req {
        self.cseq = n;
        self
    }

    /// `Contact:` value verbatim (`<sip:…>`).
    pub fn contact(mut self, value: &str) -> Req {
        self.contact = Some(value.into());
        self
    }

    /// Append any other header.
    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Append header lines given as text (`"Name: value\n…"`; "" adds nothing).
    pub fn headers(mut self, lines: &str) -> Req {
        for line in lines.lines().filter(|l| !l.trim().is_empty()) {
            let (n, v) = line.split_once(':').expect("header line `Name: value`");
            self.headers.push((n.trim().into(), v.trim().into()));
        }
        self
    }

    /// Replace the value of an other header added before (or add it).
    pub fn set(mut self, name: &str, value: &str) -> Req {
        match self
            .headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(h) => h.1 = value.into(),
            None => self.headers.push((name.into(), value.into())),
        }
        self
    }

    /// A body with its Content-Type; Content-Length is computed.
    pub fn body(mut self, content_type: &str, body: &str) -> Req {
        self.body = Some((content_type.into(), body.into()));
        self
    }

    /// The CANCEL for this request (RFC 3261 §9.1): same Request-URI, top Via,
    /// Route, From, To, Call-ID and CSeq number, Max-Forwards 70; no Contact,
    /// other headers or body.
    pub fn cancel(&self) -> Req {
        self.stripped("CANCEL").max_forwards(70)
    }

    /// The ACK for a non-2xx final response with To-tag `to_tag` (§17.1.1.3): like
    /// [`Req::cancel`], with the response's To-tag.
    pub fn ack(&self, to_tag: &str) -> Req {
        self.stripped("ACK").max_forwards(70).with_to_tag(to_tag)
    }

    /// A request in the dialog this one started, from the same side: same From,
    /// To, Call-ID and sender (Via sent-by, Max-Forwards), a new branch and CSeq;
    /// no Route, Record-Route, Contact, other headers or body. Set the remote
    /// target (`ruri`), the To-tag and the route set as needed.
    pub fn in_dialog(&self, method: &str, cseq: u32, branch: &str) -> Req {
        let mut r = self.stripped(method);
        r.route.clear();
        r.branch = branch.into();
        r.cseq = cseq;
        r
    }

    fn stripped(&self, method: &str) -> Req {
        Req {
            method: method.into(),
            lower_vias: Vec::new(),
            record_route: Vec::new(),
            contact: None,
            headers: Vec::new(),
            body: None,
            ..self.clone()
        }
    }

    /// The request with CRLF line ends, as a phone puts it on the wire.
    pub fn crlf(&self) -> String {
        super::crlf(&self.to_string())
    }
}

impl fmt::Display for Req {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} {} SIP/2.0", self.method, self.ruri)?;
        if !self.sent_by.is_empty() {
            writeln!(
                f,
                "Via: SIP/2.0/{} {};branch={}{}",
                self.transport,
                self.sent_by,
                self.branch,
                if self.rport { ";rport" } else { "" }
            )?;
        }
        for v in &self.lower_vias {
            writeln!(f, "Via: {v}")?;
        }
        if !self.route.is_empty() {
            writeln!(f, "Route: {}", self.route.join(", "))?;
        }
        for rr in &self.record_route {
            writeln!(f, "Record-Route: {rr}")?;
        }
        writeln!(f, "Max-Forwards: {}", self.max_forwards)?;
        writeln!(f, "From: {};tag={}", self.from, self.from_tag)?;
        match &self.to_tag {
            Some(t) => writeln!(f, "To: {};tag={t}", self.to)?,
            None => writeln!(f, "To: {}", self.to)?,
        }
        writeln!(f, "Call-ID: {}", self.call_id)?;
        writeln!(f, "CSeq: {} {}", self.cseq, self.method)?;
        if let Some(c) = &self.contact {
            writeln!(f, "Contact: {c}")?;
        }
        for (n, v) in &self.headers {
            writeln!(f, "{n}: {v}")?;
        }
        let body = match &self.body {
            Some((ct, b)) => {
                writeln!(f, "Content-Type: {ct}")?;
                b.as_str()
            }
            None => "",
        };
        write!(f, "Content-Length: {}\n\n{body}", body.len())
    }
}
