//! XML character data for every document the services write (VOTables, UWS job documents,
//! VOSI): one escaper, so markup and the characters XML 1.0 cannot carry at all (most
//! control characters, which user input may hold) are treated alike everywhere; the latter
//! become U+FFFD.
use std::borrow::Cow;

/// Characters XML 1.0 cannot carry at all, even as character references.
fn xml_illegal(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{B}' | '\u{C}' | '\u{E}'..='\u{1F}' | '\u{FFFE}' | '\u{FFFF}')
}

/// Appends `s` escaped as element text.
pub(crate) fn escape_text(s: &str, out: &mut Vec<u8>) {
    escape_into(s, out, false);
}

/// Appends `s` escaped as an attribute value; also encodes whitespace that attribute-value
/// normalization would otherwise turn into spaces.
pub(crate) fn escape_attr(s: &str, out: &mut Vec<u8>) {
    escape_into(s, out, true);
}

/// `s` escaped for use as element text or a double-quoted attribute value; borrowed when
/// nothing needs escaping.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s
        .chars()
        .any(|c| matches!(c, '&' | '<' | '>' | '"' | '\n' | '\r' | '\t') || xml_illegal(c))
    {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len() + 16);
    escape_into(s, &mut out, true);
    // Only whole characters of `s` and ASCII references were written.
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn escape_into(s: &str, out: &mut Vec<u8>, attr: bool) {
    let mut last = 0;
    for (i, c) in s.char_indices() {
        let replacement: &[u8] = match c {
            '&' => b"&amp;",
            '<' => b"&lt;",
            '>' => b"&gt;",
            '"' if attr => b"&quot;",
            '\n' if attr => b"&#10;",
            '\r' => b"&#13;",
            '\t' if attr => b"&#9;",
            c if xml_illegal(c) => "\u{FFFD}".as_bytes(),
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[last..i]);
        out.extend_from_slice(replacement);
        last = i + c.len_utf8();
    }
    out.extend_from_slice(&s.as_bytes()[last..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_illegal_characters_are_escaped() {
        assert!(matches!(escape("plain text"), Cow::Borrowed(_)));
        assert_eq!(
            escape("a < b & \"c\"\u{1}"),
            "a &lt; b &amp; &quot;c&quot;\u{FFFD}"
        );
        let mut out = Vec::new();
        escape_text("x\ny\t\u{B}", &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "x\ny\t\u{FFFD}");
    }
}
