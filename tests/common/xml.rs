//! Minimal XML scanning of NOTIFY bodies (start tags and element texts).
#![allow(dead_code)] // used only through `Notify` accessors some crates do not call

/// Start tags `<[prefix:]name ...>` in an XML text.
pub(super) fn xml_open_tags(xml: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..end];
        let tag_name = tag
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("");
        let local = tag_name.rsplit(':').next().unwrap_or("");
        if local == name && !tag.starts_with('/') {
            out.push(format!("<{tag}>"));
        }
        rest = &rest[end..];
    }
    out
}

/// Texts of the elements `<[prefix:]name ...>text</[prefix:]name>`, trimmed.
pub(super) fn xml_texts(xml: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..end];
        let tag_name = tag
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("");
        let local = tag_name.rsplit(':').next().unwrap_or("");
        rest = rest.get(end + 1..).unwrap_or("");
        if local == name && !tag.ends_with('/') {
            let close = format!("</{tag_name}>");
            if let Some(j) = rest.find(&close) {
                out.push(rest[..j].trim().to_string());
                rest = &rest[j + close.len()..];
            }
        }
    }
    out
}
