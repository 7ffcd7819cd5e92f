//! Header names as CGI-style backends read them: `_` and `-` are one byte
//! (`X_User_Id` is `X-User-Id`). Used where a client-sent header must not
//! alias one the gateway owns (`headers`, `auth`).

#![forbid(unsafe_code)]

/// Whether header names `name` and `want` (lowercase) are equal when `_`
/// and `-` are read as the same byte, as CGI, WSGI and PHP backends read names
/// (`X_User_Id` and `X-User-Id` are both `HTTP_X_USER_ID`). `HeaderName`s
/// are already lowercase. No allocation.
pub fn same_name(name: &str, want: &str) -> bool {
    name.len() == want.len() && starts_with_name(name, want)
}

/// [`same_name`] for a prefix.
pub fn starts_with_name(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name
            .bytes()
            .zip(prefix.bytes())
            .all(|(a, b)| a == b || (matches!(a, b'_' | b'-') && matches!(b, b'_' | b'-')))
}
