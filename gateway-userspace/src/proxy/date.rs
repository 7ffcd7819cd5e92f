//! The `Date` field of responses the gateway sends over HTTP/2 (RFC 9110
//! §6.6.1: an origin server with a clock sends it), formatted once per
//! second per thread as hyper does for HTTP/1.

#![forbid(unsafe_code)]

use std::{
    cell::RefCell,
    time::{SystemTime, UNIX_EPOCH},
};

use http::HeaderValue;

thread_local! {
    static CACHED: RefCell<(u64, HeaderValue)> =
        const { RefCell::new((u64::MAX, HeaderValue::from_static(""))) };
}

/// The current time as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn now() -> HeaderValue {
    let time = SystemTime::now();
    let second = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != second {
            let text = httpdate::fmt_http_date(time);
            c.1 = HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""));
            c.0 = second;
        }
        c.1.clone()
    })
}
