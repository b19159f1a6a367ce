//! `Event` (RFC 6665 §8.2.1): the event package and its parameters.

use crate::sip::grammar::{Cursor, Params, Res, TypedError, strict_params};

/// `Event: package[.template] *(;param)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    pub package: &'a [u8],
    pub params: Params<'a>,
}

impl<'a> Event<'a> {
    pub fn parse(v: &'a [u8]) -> Res<Event<'a>> {
        let mut c = Cursor::new(v);
        c.skip_lws();
        let package = c.token().ok_or(TypedError("Event: missing package"))?;
        let params = strict_params(&mut c, false)?;
        Ok(Event { package, params })
    }
    pub fn id(&self) -> Option<&'a [u8]> {
        self.params.value("id")
    }
    pub fn is(&self, package: &str) -> bool {
        self.package.eq_ignore_ascii_case(package.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_with_id() {
        let e = Event::parse(b"presence;id=7").unwrap();
        assert!(e.is("presence"));
        assert_eq!(e.id(), Some(&b"7"[..]));
        let e = Event::parse(b"dialog").unwrap();
        assert_eq!(e.id(), None);
    }
}
