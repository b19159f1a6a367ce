//! `CSeq` (RFC 3261 §20.16).

use crate::sip::grammar::{Cursor, Res, TypedError, parse_u32};

/// `CSeq: <number> <method>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    pub seq: u32,
    pub method: &'a [u8],
}

impl<'a> CSeq<'a> {
    pub fn parse(v: &'a [u8]) -> Res<CSeq<'a>> {
        let mut c = Cursor::new(v);
        c.skip_lws();
        let s = c.i;
        while c.peek().is_some_and(|d| d.is_ascii_digit()) {
            c.i += 1;
        }
        let seq = parse_u32(&c.b[s..c.i]).map_err(|_| TypedError("CSeq number out of range"))?;
        if seq >= 1 << 31 {
            return Err(TypedError("CSeq number out of range"));
        }
        c.skip_lws();
        let method = c.token().ok_or(TypedError("CSeq without method"))?;
        c.skip_lws();
        if !c.at_end() {
            return Err(TypedError("trailing characters in CSeq"));
        }
        Ok(CSeq { seq, method })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cseq_values() {
        let c = CSeq::parse(b"0009\r\n  INVITE").unwrap();
        assert_eq!((c.seq, c.method), (9, &b"INVITE"[..]));
        assert!(CSeq::parse(b"36893488147419103232 REGISTER").is_err());
        assert!(CSeq::parse(b"2147483648 REGISTER").is_err());
        assert!(CSeq::parse(b"1").is_err());
    }
}
