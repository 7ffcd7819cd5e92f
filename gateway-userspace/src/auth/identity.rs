//! What an identity may look like. Every method that establishes one (a
//! JWT's `sub`, an introspection answer's `sub`/`username`/`client_id`, an
//! API key's name, a Basic user name) goes through [`check_subject`]: the
//! subject is what the upstream receives in identity headers (`x-user-id`)
//! and what `key = "identity"` / `claim:sub` rate limits count by, so an
//! empty or blank subject would be one shared, unlimited identity.

#![forbid(unsafe_code)]

/// Longest accepted subject, in bytes (RFC 7519 sets none; 1 KiB is far
/// above real user ids and keeps rate-limit keys small).
pub const MAX_SUBJECT_BYTES: usize = 1024;

/// Why a subject is not an identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// `""`.
    #[error("the subject is empty")]
    Empty,
    /// Only whitespace, or whitespace at either end (a header value loses
    /// it on the way upstream, RFC 9110 §5.5, so `" alice"` would reach
    /// the backend as `alice` while being counted apart from it).
    #[error("the subject is blank or has leading or trailing whitespace")]
    Blank,
    /// A control character (C0, DEL, C1) or an invisible format character
    /// (zero-width spaces and joiners, bidi overrides, BOM).
    #[error("the subject contains a control or invisible character")]
    Control,
    /// Longer than [`MAX_SUBJECT_BYTES`].
    #[error("the subject is too long")]
    TooLong,
}

/// Invisible format characters that make two subjects look the same.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}')
}

/// Checks that `subject` can stand for a caller: not empty, not blank, no
/// whitespace at either end, no control or invisible characters, at most
/// [`MAX_SUBJECT_BYTES`].
pub fn check_subject(subject: &str) -> Result<(), SubjectError> {
    if subject.is_empty() {
        return Err(SubjectError::Empty);
    }
    if subject.len() > MAX_SUBJECT_BYTES {
        return Err(SubjectError::TooLong);
    }
    if subject.chars().any(|c| c.is_control() || is_invisible(c)) {
        return Err(SubjectError::Control);
    }
    if subject.trim() != subject {
        return Err(SubjectError::Blank);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        for ok in ["alice", "user-42", "a b", "jörg", "1", "client@example.com"] {
            assert_eq!(check_subject(ok), Ok(()), "{ok:?}");
        }
        let cases = [
            ("", SubjectError::Empty),
            (" ", SubjectError::Blank),
            ("\u{3000}", SubjectError::Blank),
            ("\u{a0}", SubjectError::Blank),
            (" alice", SubjectError::Blank),
            ("alice ", SubjectError::Blank),
            ("\t", SubjectError::Control),
            ("a\r\nb", SubjectError::Control),
            ("a\0", SubjectError::Control),
            ("\u{7f}", SubjectError::Control),
            ("\u{85}", SubjectError::Control),
            ("\u{200b}", SubjectError::Control),
            ("admin\u{202e}", SubjectError::Control),
            ("\u{feff}alice", SubjectError::Control),
        ];
        for (s, want) in cases {
            assert_eq!(check_subject(s), Err(want), "{s:?}");
        }
        assert_eq!(
            check_subject(&"a".repeat(MAX_SUBJECT_BYTES + 1)),
            Err(SubjectError::TooLong)
        );
        assert!(check_subject(&"a".repeat(MAX_SUBJECT_BYTES)).is_ok());
    }
}
