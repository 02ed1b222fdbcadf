//! Names and text made safe for every output: one encoding of job names, one XML text rule.
//!
//! Rules (every renderer follows them; tests feed hostile names through each output):
//!
//! 1. **Job names** appear in outputs through [`job_display_name`] only: in the text tables,
//!    folded stacks and flamegraphs (root frames), pprof labels and pseudo-frames, DHAT job
//!    frames and SVG titles. A *plain* name is shown as it is. Any other name is shown as a
//!    double-quoted string with escapes, so two distinct names never look alike and the
//!    original is recovered by [`job_name_from_display`]. A name is plain when it is not empty,
//!    does not start with `"` or `(`, does not start or end with whitespace, and has no
//!    control character (C0, DEL, C1), Unicode non-character (U+FFFE, U+FFFF, U+FDD0–U+FDEF,
//!    …), line or paragraph separator, and neither of the separators `;` (folded stacks) and
//!    `>` (scope paths `outer > inner`). Inside quotes, `\` and `"` are backslash-escaped,
//!    `\n`, `\r`, `\t` are written so, and the other characters above are written `\u{hex}`,
//!    including `;` (`\u{3b}`) and `>` (`\u{3e}`): a quoted name never contains a separator.
//! 2. Names in parentheses are reserved for allocscope's own pseudo-frames: `(unscoped)`
//!    (memory allocated outside any scope) and `(no frames)`. A job named `(unscoped)` is
//!    shown as `"(unscoped)"`, so it never merges with real unscoped memory. The registry's
//!    overflow job [`OTHER_JOBS_NAME`](crate::JobReport::OTHER_JOBS_NAME) is shown as it is: it *is* one
//!    job in the registry, whoever names it.
//! 3. **XML** (SVG, HTML): [`xml_escape`] escapes `& < > " '` and writes every character XML 1.0
//!    forbids or discourages (C0 controls but tab, newline and carriage return; DEL and C1
//!    controls; non-characters) as the visible text `\u{hex}`: a character reference would
//!    not do, as `&#1;` is itself ill-formed XML 1.0. (Rust strings hold no surrogates.)
//!    [`xml_safe`] does the replacement only, for text handed to a writer that escapes
//!    entities itself (inferno).

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::registry::OTHER_JOBS_NAME;

/// The pseudo-frame, label and name standing for memory allocated outside any scope.
pub(crate) const UNSCOPED: &str = "(unscoped)";
/// The pseudo-frame of a callsite with neither job root nor frames.
pub(crate) const NO_FRAMES: &str = "(no frames)";

/// Whether `c` is a Unicode non-character (U+FDD0–U+FDEF, and the last two code points of
/// every plane).
fn is_noncharacter(c: char) -> bool {
    let v = c as u32;
    (0xFDD0..=0xFDEF).contains(&v) || v & 0xFFFE == 0xFFFE
}

/// Characters that never appear raw in a displayed job name.
fn needs_escape(c: char) -> bool {
    c.is_control() || is_noncharacter(c) || matches!(c, ';' | '>' | '\u{2028}' | '\u{2029}')
}

fn is_plain(name: &str) -> bool {
    let (Some(first), Some(last)) = (name.chars().next(), name.chars().last()) else {
        return false;
    };
    name == OTHER_JOBS_NAME
        || !(matches!(first, '"' | '(')
            || first.is_whitespace()
            || last.is_whitespace()
            || name.chars().any(needs_escape))
}

/// A job name as every output shows it: as it is when plain, else quoted with escapes (see
/// the rules of this module). Distinct names always give distinct results, which never
/// contain control characters or the separators `;` and `>`.
///
/// ```
/// use allocscope::job_display_name;
/// assert_eq!(job_display_name("import_users"), "import_users");
/// assert_eq!(job_display_name(""), r#""""#);
/// assert_eq!(job_display_name("(unscoped)"), r#""(unscoped)""#);
/// assert_eq!(job_display_name("semi;colon"), r#""semi\u{3b}colon""#);
/// assert_eq!(job_display_name("two\nlines"), r#""two\nlines""#);
/// ```
pub fn job_display_name(name: &str) -> Cow<'_, str> {
    if is_plain(name) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    Cow::Owned(out)
}

/// The job name a [`job_display_name`] result stands for; `None` for text that no name
/// displays as (a reserved pseudo-name such as `(unscoped)`, or a malformed quoted form).
///
/// ```
/// use allocscope::{job_display_name, job_name_from_display};
/// for name in ["plain", "", "(unscoped)", "a;b", "tab\there", "\u{1b}[31m"] {
///     assert_eq!(job_name_from_display(&job_display_name(name)).as_deref(), Some(name));
/// }
/// assert_eq!(job_name_from_display("(unscoped)"), None);
/// ```
pub fn job_name_from_display(shown: &str) -> Option<String> {
    let Some(inner) = shown
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .filter(|_| shown.len() >= 2)
    else {
        return is_plain(shown).then(|| shown.to_string());
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '"' || needs_escape(c) {
            return None;
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '\\' => out.push('\\'),
            '"' => out.push('"'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let rest = chars.as_str().strip_prefix('{')?;
                let end = rest.find('}')?;
                let v = u32::from_str_radix(&rest[..end], 16).ok()?;
                out.push(char::from_u32(v)?);
                chars = rest[end + 1..].chars();
            }
            _ => return None,
        }
    }
    // Only the canonical form: a plain name written in quotes is not a display name.
    (job_display_name(&out) == shown).then_some(out)
}

/// Whether XML 1.0 forbids `c` (or discourages it: DEL, C1 controls, non-characters).
fn xml_unfit(c: char) -> bool {
    match c {
        '\t' | '\n' | '\r' => false,
        c => c.is_control() || is_noncharacter(c),
    }
}

/// `s` with every character XML 1.0 forbids or discourages written as the text `\u{hex}`
/// (entities are left alone: for writers that escape them).
pub(crate) fn xml_safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(xml_unfit) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if xml_unfit(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `s` as XML 1.0 text or attribute value: entities escaped, unfit characters replaced.
pub(crate) fn xml_escape(s: &str) -> String {
    let safe = xml_safe(s);
    let mut out = String::with_capacity(safe.len() + 8);
    for c in safe.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A function name (or any text that need not stay distinct) for one frame of a folded stack
/// or a text line: `;` becomes `:`, line breaks become spaces, and other control characters
/// and non-characters become `\u{hex}`.
pub(crate) fn frame_text(name: &str) -> Cow<'_, str> {
    if !name
        .chars()
        .any(|c| c == ';' || needs_escape(c) && c != '>')
    {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            ';' => out.push(':'),
            '\n' | '\r' => out.push(' '),
            '>' => out.push('>'),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &[&str] = &[
        "",
        " ",
        "plain",
        "(unscoped)",
        "(no frames)",
        "\"quoted\"",
        "\"",
        "semi;colon",
        "semi:colon",
        "a > b",
        "a\nb",
        "a\\nb",
        "nul\0",
        "bell\x07",
        "esc\x1b[31m",
        "\u{fffe}",
        "\u{ffff}",
        "\u{fdd0}",
        "\u{1fffe}",
        "\u{85}next-line",
        "sep\u{2028}",
        "trailing ",
        " leading",
        "tab\t",
        "\\u{3b}",
        "\"\\u{3b}\"",
        "<script>&amp;",
        "résumé",
        "\u{fffd}",
    ];

    #[test]
    fn display_names_are_distinct_reversible_and_separator_free() {
        let mut seen = std::collections::HashSet::new();
        for name in HOSTILE {
            let shown = job_display_name(name);
            assert!(
                seen.insert(shown.to_string()),
                "{name:?} collides as {shown}"
            );
            assert_eq!(
                job_name_from_display(&shown).as_deref(),
                Some(*name),
                "{shown}"
            );
            assert!(!shown.contains(';') && !shown.contains('>') || **name == *shown);
            assert!(!shown.chars().any(|c| c.is_control() || is_noncharacter(c)));
            assert!(!shown.is_empty());
        }
        assert_eq!(job_name_from_display(UNSCOPED), None);
        assert_eq!(job_name_from_display(NO_FRAMES), None);
        assert_eq!(job_name_from_display("\"plain\""), None);
        assert_eq!(job_display_name(OTHER_JOBS_NAME), OTHER_JOBS_NAME);
    }

    #[test]
    fn xml_text_has_only_xml_chars() {
        for name in HOSTILE {
            let x = xml_escape(name);
            assert!(x.chars().all(
                |c| matches!(c, '\t' | '\n' | '\r') || !(c.is_control() || is_noncharacter(c))
            ));
            assert!(!x.contains('<') && !x.contains('"'));
        }
        assert_eq!(xml_escape("a\0b<"), "a\\u{0}b&lt;");
        assert_eq!(xml_safe("ok"), "ok");
    }

    #[test]
    fn frame_text_has_no_separators_or_controls() {
        assert_eq!(frame_text("<[u8; 4] as Foo>::bar"), "<[u8: 4] as Foo>::bar");
        assert_eq!(frame_text("a\nb\x1b"), "a b\\u{1b}");
    }
}
