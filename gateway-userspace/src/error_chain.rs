//! One way to print an error with its causes, for logs and admin answers.

#![forbid(unsafe_code)]

/// `e` and its sources joined by `": "` (`outer: inner: ...`), as anyhow's
/// `{:#}` prints them; the typed errors of the library keep their cause
/// chains through `source()`, and this is where they are read back.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_follow_the_error() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(super::chain(&e), "outer: inner");
    }
}
