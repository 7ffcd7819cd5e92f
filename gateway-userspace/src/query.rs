//! Splitting a query string the way the frameworks behind the gateway
//! may: shared by credential stripping (`auth`) and access-log redaction
//! (`observe`), so the two never disagree on where a parameter ends.

#![forbid(unsafe_code)]

/// The query's `name=value` pieces with the separator before each. Both
/// `&` and `;` separate: the W3C once recommended `;`, and Python before
/// 3.9.2 (and frameworks built on it), Rack and some Java servlet setups
/// still split on it, so a credential after a `;` must be found and
/// stripped like any other.
pub fn segments(query: &str) -> impl Iterator<Item = (Option<char>, &str)> {
    let mut rest = Some(query);
    let mut sep = None;
    std::iter::from_fn(move || {
        let q = rest?;
        let this_sep = sep;
        match q.find(['&', ';']) {
            Some(i) => {
                sep = q[i..].chars().next();
                rest = Some(&q[i + 1..]);
                Some((this_sep, &q[..i]))
            }
            None => {
                rest = None;
                Some((this_sep, q))
            }
        }
    })
}
