//! Text another user controls, made safe to print for an operator: control bytes shown as
//! escapes, as `ls` and `systemctl` do, so that a newline cannot forge a line of output and an
//! escape sequence cannot drive the terminal.

use std::borrow::Cow;
use std::fmt::Write;

/// `text` with every control character (C0, DEL, C1) and backslash escaped: `\n`, `\t`, `\\`,
/// `\x1b`, `\u{9b}`. Text without them is returned as it is.
///
/// ```ignore
/// assert_eq!(escape_control("a\nb\x1b[2J"), "a\\nb\\x1b[2J");
/// ```
pub(crate) fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() || c == '\\') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x80 && c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::escape_control;

    #[test]
    fn control_bytes_are_escaped_and_plain_text_is_kept() {
        assert!(matches!(
            escape_control("node --store /var/cache/x"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_control("sleep\n lock: free\x1b[2J\u{9b}31m\\"),
            "sleep\\n lock: free\\x1b[2J\\u{9b}31m\\\\"
        );
        assert_eq!(escape_control("ünïcode ok"), "ünïcode ok");
    }
}
