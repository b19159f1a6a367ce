//! Shared, defensive XML walking for the upstream NOTIFY bodies.
//!
//! Both documents (dialog-info and PIDF) come from a PBX we do not control and are
//! full of vendor quirks: varying namespace prefixes (`d:`, `dm:`, `rpid:`, `ep:`),
//! explicit `xmlns` on inner elements, TABs and mixed line ends, single quotes,
//! ISO-8859-1 declarations. So elements are matched on their *local* name (the
//! prefix is ignored), text is collected and trimmed by the caller, and the walk is
//! bounded: bodies over [`MAX_BODY`] bytes or nested deeper than [`MAX_DEPTH`] are
//! rejected before anything is built from them. Nothing here panics on any input.

use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use std::borrow::Cow;
use std::fmt;

/// Largest body accepted (a real dialog-info/PIDF document is well under 4 KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// Deepest element nesting accepted (real documents use 5 levels).
pub const MAX_DEPTH: usize = 32;

/// Why an upstream document was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceError {
    /// The body is larger than [`MAX_BODY`].
    TooLarge(usize),
    /// Elements are nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// The document ends before its root element is closed.
    Truncated,
    /// The body contains no element at all.
    NoRoot,
    /// The root element is not the one the event package carries (local name given).
    WrongRoot(String),
    /// Malformed XML (quick-xml's description, for the log).
    Xml(String),
}

impl fmt::Display for PresenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PresenceError::TooLarge(n) => write!(f, "document of {n} bytes exceeds {MAX_BODY}"),
            PresenceError::TooDeep => write!(f, "document nested deeper than {MAX_DEPTH} elements"),
            PresenceError::Truncated => {
                f.write_str("document ends before its root element is closed")
            }
            PresenceError::NoRoot => f.write_str("document has no root element"),
            PresenceError::WrongRoot(r) => write!(f, "unexpected root element <{r}>"),
            PresenceError::Xml(e) => write!(f, "malformed XML: {e}"),
        }
    }
}

impl std::error::Error for PresenceError {}

/// True when a body is absent for our purposes (no bytes, or only whitespace).
pub(crate) fn is_blank(body: &[u8]) -> bool {
    body.iter().all(|b| b.is_ascii_whitespace())
}

/// Bytes to text: UTF-8 (BOM stripped), else ISO-8859-1 (which FreeSWITCH and
/// Asterisk declare, and which maps every byte to a char, so this cannot fail).
pub(crate) fn decode(body: &[u8]) -> Result<Cow<'_, str>, PresenceError> {
    if body.len() > MAX_BODY {
        return Err(PresenceError::TooLarge(body.len()));
    }
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    match std::str::from_utf8(body) {
        Ok(s) => Ok(Cow::Borrowed(s)),
        Err(_) => Ok(Cow::Owned(body.iter().map(|&b| char::from(b)).collect())),
    }
}

/// Local part of a (possibly prefixed) XML name: `rpid:on-the-phone` → `on-the-phone`.
pub(crate) fn local(name: &str) -> &str {
    match name.rfind(':') {
        Some(i) => name.get(i + 1..).unwrap_or(""),
        None => name,
    }
}

/// Value of the attribute whose local name is `name` (ASCII case-insensitive;
/// namespace declarations are never matched), entity references resolved.
/// Malformed attribute lists are read up to the first defect.
pub(crate) fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    let mut attrs = e.attributes();
    attrs.with_checks(false);
    for a in attrs {
        let Ok(a) = a else { break };
        let key = a.key.0;
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        if local(key).eq_ignore_ascii_case(name) {
            return Some(match a.normalized_value(XmlVersion::Implicit1_0) {
                Ok(v) => v.into_owned(),
                // An unknown entity: keep the raw text rather than losing the value.
                Err(_) => a.value.into_owned(),
            });
        }
    }
    None
}

/// One step of the simplified walk.
pub(crate) enum Step<'a, 'e> {
    /// An element opens (empty elements produce `Open` then `Close`). `depth` is
    /// 0 for the root.
    Open {
        name: &'a str,
        depth: usize,
        elem: &'a BytesStart<'e>,
    },
    /// Character data (text, CDATA or a resolved reference) inside the innermost
    /// open element; may arrive in several pieces.
    Text(&'a str),
    /// The innermost open element closes.
    Close,
}

/// Walks the document element by element, calling `f` for each [`Step`]. Stops
/// after the root element closes (trailing junk is ignored). Enforces
/// [`MAX_DEPTH`] and reports truncation.
pub(crate) fn walk<F>(text: &str, mut f: F) -> Result<(), PresenceError>
where
    F: FnMut(Step<'_, '_>),
{
    let mut reader = quick_xml::Reader::from_str(text);
    {
        let cfg = reader.config_mut();
        cfg.check_end_names = true;
        cfg.expand_empty_elements = false;
        cfg.allow_dangling_amp = true;
    }
    let mut depth = 0usize;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| PresenceError::Xml(e.to_string()))?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if depth >= MAX_DEPTH {
                    return Err(PresenceError::TooDeep);
                }
                f(Step::Open {
                    name: local(e.name().0),
                    depth,
                    elem: e,
                });
                if matches!(ev, Event::Start(_)) {
                    depth += 1;
                } else {
                    f(Step::Close);
                    if depth == 0 {
                        return Ok(());
                    }
                }
            }
            Event::End(_) => {
                if depth == 0 {
                    return Err(PresenceError::Xml("unmatched end tag".into()));
                }
                depth -= 1;
                f(Step::Close);
                if depth == 0 {
                    return Ok(());
                }
            }
            Event::Text(t) if depth > 0 => f(Step::Text(&t.xml10_content())),
            Event::CData(t) if depth > 0 => f(Step::Text(&t.xml10_content())),
            Event::GeneralRef(r) if depth > 0 => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    let mut buf = [0u8; 4];
                    f(Step::Text(c.encode_utf8(&mut buf)));
                } else {
                    match &*r {
                        "amp" => f(Step::Text("&")),
                        "lt" => f(Step::Text("<")),
                        "gt" => f(Step::Text(">")),
                        "quot" => f(Step::Text("\"")),
                        "apos" => f(Step::Text("'")),
                        // Unknown (DTD-declared) entities are never expanded; keep
                        // them literally, as attribute values do.
                        other => {
                            f(Step::Text("&"));
                            f(Step::Text(other));
                            f(Step::Text(";"));
                        }
                    }
                }
            }
            Event::Eof => {
                return Err(if depth > 0 {
                    PresenceError::Truncated
                } else {
                    PresenceError::NoRoot
                });
            }
            _ => {}
        }
    }
}

/// Trimmed, non-empty copy of collected text.
pub(crate) fn take_trimmed(buf: &mut String) -> Option<String> {
    let t = buf.trim();
    let out = if t.is_empty() {
        None
    } else {
        Some(t.to_owned())
    };
    buf.clear();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(doc: &str) -> Result<Vec<String>, PresenceError> {
        let mut out = Vec::new();
        walk(doc, |s| {
            out.push(match s {
                Step::Open { name, depth, .. } => format!("<{name}@{depth}"),
                Step::Text(t) => format!("'{t}'"),
                Step::Close => ">".to_owned(),
            })
        })?;
        Ok(out)
    }

    #[test]
    fn local_names_ignore_prefixes() {
        assert_eq!(local("rpid:on-the-phone"), "on-the-phone");
        assert_eq!(local("basic"), "basic");
        assert_eq!(local("a:"), "");
    }

    #[test]
    fn walk_reports_elements_text_and_references() {
        let s =
            steps("<?xml version='1.0'?><a:r x='1'><b/>x&amp;y&#65;<![CDATA[<z>]]></a:r>").unwrap();
        assert_eq!(
            s,
            [
                "<r@0", "<b@1", ">", "'x'", "'&'", "'y'", "'A'", "'<z>'", ">"
            ]
        );
    }

    #[test]
    fn walk_rejects_truncation_depth_and_mismatch() {
        assert_eq!(steps("<a><b>"), Err(PresenceError::Truncated));
        assert_eq!(steps("  "), Err(PresenceError::NoRoot));
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert_eq!(steps(&deep), Err(PresenceError::TooDeep));
        let ok = "<a>".repeat(MAX_DEPTH) + &"</a>".repeat(MAX_DEPTH);
        assert!(steps(&ok).is_ok());
        assert!(matches!(steps("<a></b>"), Err(PresenceError::Xml(_))));
    }

    #[test]
    fn walk_stops_after_the_root() {
        assert_eq!(steps("<a/><b>").unwrap(), ["<a@0", ">"]);
        assert_eq!(steps("<a></a><b/>").unwrap(), ["<a@0", ">"]);
    }

    #[test]
    fn decode_handles_bom_latin1_and_size() {
        assert_eq!(decode(b"\xEF\xBB\xBF<a/>").unwrap(), "<a/>");
        assert_eq!(decode(b"<a>J\xFCrgen</a>").unwrap(), "<a>Jürgen</a>");
        let big = vec![b' '; MAX_BODY + 1];
        assert_eq!(decode(&big), Err(PresenceError::TooLarge(MAX_BODY + 1)));
    }

    #[test]
    fn attributes_match_local_names_and_skip_namespace_declarations() {
        let doc = "<r xmlns:id='ns' p:id='v1' Version='3' d='a&amp;b'/>";
        let mut got = Vec::new();
        walk(doc, |s| {
            if let Step::Open { elem, .. } = s {
                got.push(attr(elem, "id"));
                got.push(attr(elem, "version"));
                got.push(attr(elem, "d"));
                got.push(attr(elem, "missing"));
            }
        })
        .unwrap();
        assert_eq!(
            got,
            [
                Some("v1".to_owned()),
                Some("3".to_owned()),
                Some("a&b".to_owned()),
                None
            ]
        );
    }
}
