//! One entry of an upstream's `targets`: a literal `ip:port`, a DNS
//! `name:port` (its A/AAAA records, each at that port) or
//! `srv:_service._proto.name` (SRV records give the names, ports, weights
//! and priorities, RFC 2782). Parsed while the config is read, so a missing
//! port or a malformed name is reported at the file, line and column of the
//! entry; the names are resolved later, in the background
//! (`proxy/upstream/dns.rs`).

#![forbid(unsafe_code)]

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

/// A parsed `targets` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TargetSpec {
    /// A literal address: `10.0.0.1:8080`, `[2001:db8::1]:8080`.
    Addr(SocketAddr),
    /// `name:port`: every address the name resolves to, at `port`. The
    /// name as written in lowercase ASCII; a trailing dot makes it
    /// absolute (no resolv.conf search domains are tried).
    Name {
        /// The name, lowercase ASCII as written (a trailing dot kept).
        host: Arc<str>,
        /// The port every resolved address is used with.
        port: u16,
    },
    /// `srv:_service._proto.name`: the SRV records of `name` (as written in
    /// lowercase, without `srv:`).
    Srv {
        /// The SRV owner name (`_service._proto.name`), lowercase.
        name: Arc<str>,
    },
}

impl TargetSpec {
    /// The literal address, for `Addr` entries.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Addr(a) => Some(*a),
            _ => None,
        }
    }

    /// Whether the entry needs DNS.
    pub fn is_dns(&self) -> bool {
        !matches!(self, Self::Addr(_))
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(a) => write!(f, "{a}"),
            Self::Name { host, port } => write!(f, "{host}:{port}"),
            Self::Srv { name } => write!(f, "srv:{name}"),
        }
    }
}

/// An upstream `targets` entry that does not parse: the config's to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("target '{target}': {problem}")]
pub struct TargetError {
    /// The entry as written.
    pub target: String,
    /// What is wrong and how to write it.
    pub problem: TargetProblem,
}

/// What is wrong with a target ([`TargetError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetProblem {
    /// `SRV:` in another case.
    #[error("write the SRV prefix in lowercase: srv:_service._proto.name")]
    SrvPrefixCase,
    /// A URL instead of `host:port`.
    #[error("a target has no scheme: write host:port")]
    Scheme,
    /// An IP address without a port (the hint shows how to add one).
    #[error("missing port: write {0}")]
    MissingPortAfterIp(String),
    /// A name without a port.
    #[error("missing port: write {0}:<port>")]
    MissingPort(String),
    /// An IPv6 address with a port but no brackets.
    #[error("not an IPv6 address with a port: write [2001:db8::1]:8080")]
    UnbracketedIpv6,
    /// Port 0.
    #[error("port 0 is not a port a target can listen on")]
    PortZero,
    /// `host:` with nothing after the colon.
    #[error("missing port after '{0}:'")]
    EmptyPort(String),
    /// A port that is not a number 1-65535.
    #[error("'{0}' is not a port (1-65535)")]
    Port(String),
    /// An SRV target with a port.
    #[error("an SRV target takes its ports from the SRV records: remove ':{0}'")]
    SrvPort(String),
    /// An SRV name not of the form `_service._proto.name`.
    #[error("an SRV name is _service._proto.name (RFC 2782), e.g. srv:_http._tcp.api.internal")]
    SrvName,
    /// An empty name.
    #[error("empty name")]
    EmptyName,
    /// A name over 253 characters.
    #[error("a DNS name is at most 253 characters")]
    NameTooLong,
    /// Two dots in a row (the name as written).
    #[error("'{0}' has an empty label (two dots in a row)")]
    EmptyLabel(String),
    /// A label over 63 characters.
    #[error("label '{0}' is longer than 63 characters")]
    LabelTooLong(String),
    /// A character DNS names do not have.
    #[error("'{0}' is not allowed in a DNS name (letters, digits, '-' and '_' only)")]
    Char(char),
    /// A label that starts or ends with `-`.
    #[error("label '{0}' starts or ends with '-'")]
    LabelHyphen(String),
    /// An all-digit last label: a mistyped IPv4 address, most often.
    #[error("'{name}' is not a valid {what}")]
    Numeric {
        /// The name.
        name: String,
        /// `SRV name` or `IP address or DNS name`.
        what: &'static str,
    },
}

impl TryFrom<String> for TargetSpec {
    type Error = TargetError;

    fn try_from(s: String) -> Result<Self, TargetError> {
        parse(&s).map_err(|problem| TargetError { target: s, problem })
    }
}

/// Parses one entry; the error says what is wrong and how to write it.
fn parse(s: &str) -> Result<TargetSpec, TargetProblem> {
    if let Some(name) = s.strip_prefix("srv:") {
        return parse_srv(name);
    }
    if s.len() >= 4 && s[..4].eq_ignore_ascii_case("srv:") {
        return Err(TargetProblem::SrvPrefixCase);
    }
    if s.contains("://") {
        return Err(TargetProblem::Scheme);
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(TargetSpec::Addr(a));
    }
    if s.parse::<IpAddr>().is_ok() {
        return Err(TargetProblem::MissingPortAfterIp(with_port_hint(s)));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(TargetProblem::MissingPort(s.to_owned()));
    };
    if host.contains(':') || host.starts_with('[') {
        return Err(TargetProblem::UnbracketedIpv6);
    }
    let port = match port.parse::<u16>() {
        Ok(0) => return Err(TargetProblem::PortZero),
        Ok(p) => p,
        Err(_) if port.is_empty() => return Err(TargetProblem::EmptyPort(host.to_owned())),
        Err(_) => return Err(TargetProblem::Port(port.to_owned())),
    };
    let host = dns_name(host, false)?;
    Ok(TargetSpec::Name { host, port })
}

/// `_service._proto.name` after `srv:`.
fn parse_srv(name: &str) -> Result<TargetSpec, TargetProblem> {
    if let Some((_, port)) = name.rsplit_once(':') {
        return Err(TargetProblem::SrvPort(port.to_owned()));
    }
    let name = dns_name(name, true)?;
    let mut labels = name.strip_suffix('.').unwrap_or(&name).split('.');
    let (service, proto) = (labels.next(), labels.next());
    let rest = labels.count();
    if !service.is_some_and(|l| l.len() > 1 && l.starts_with('_'))
        || !proto.is_some_and(|l| l.len() > 1 && l.starts_with('_'))
        || rest == 0
    {
        return Err(TargetProblem::SrvName);
    }
    Ok(TargetSpec::Srv { name })
}

/// Checks a DNS name (RFC 1035 §2.3.1 labels, with `_` allowed as in SRV
/// and service names) and returns it lowercase (with its trailing dot, if
/// any). A
/// name whose last label is all digits is refused (RFC 3696 §2: no
/// top-level domain is numeric), which catches IPv4 typos such as
/// `10.0.0.300`.
fn dns_name(s: &str, srv: bool) -> Result<Arc<str>, TargetProblem> {
    let name = s.strip_suffix('.').unwrap_or(s);
    if name.is_empty() {
        return Err(TargetProblem::EmptyName);
    }
    if name.len() > 253 {
        return Err(TargetProblem::NameTooLong);
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(TargetProblem::EmptyLabel(s.to_owned()));
        }
        if label.len() > 63 {
            return Err(TargetProblem::LabelTooLong(label.to_owned()));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(TargetProblem::Char(c));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(TargetProblem::LabelHyphen(label.to_owned()));
        }
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().all(|b| b.is_ascii_digit()) {
        let what = if srv {
            "SRV name"
        } else {
            "IP address or DNS name"
        };
        return Err(TargetProblem::Numeric {
            name: name.to_owned(),
            what,
        });
    }
    Ok(s.to_ascii_lowercase().into())
}

/// `10.0.0.1:<port>` or `[2001:db8::1]:<port>`.
fn with_port_hint(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]:<port>")
    } else {
        format!("{ip}:<port>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> TargetSpec {
        TargetSpec::try_from(s.to_owned()).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        TargetSpec::try_from(s.to_owned()).unwrap_err().to_string()
    }

    #[test]
    fn literal_addresses() {
        assert_eq!(
            ok("10.0.0.1:80"),
            TargetSpec::Addr("10.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            ok("[::1]:8080"),
            TargetSpec::Addr("[::1]:8080".parse().unwrap())
        );
    }

    #[test]
    fn names_and_srv() {
        assert_eq!(
            ok("API.Internal.:8080"),
            TargetSpec::Name {
                host: "api.internal.".into(),
                port: 8080
            }
        );
        assert_eq!(
            ok("localhost:1"),
            TargetSpec::Name {
                host: "localhost".into(),
                port: 1
            }
        );
        assert_eq!(
            ok("srv:_http._tcp.api.internal"),
            TargetSpec::Srv {
                name: "_http._tcp.api.internal".into()
            }
        );
        assert_eq!(
            ok("srv:_http._tcp.api.internal").to_string(),
            "srv:_http._tcp.api.internal"
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (input, expected) in [
            ("10.0.0.1", "missing port: write 10.0.0.1:<port>"),
            ("::1", "missing port: write [::1]:<port>"),
            ("api.internal", "missing port: write api.internal:<port>"),
            ("api.internal:", "missing port after 'api.internal:'"),
            ("api.internal:http", "'http' is not a port"),
            ("api.internal:70000", "'70000' is not a port"),
            ("api.internal:0", "port 0"),
            ("::1:80", "missing port: write [::1:80]:<port>"),
            ("[::1]", "not an IPv6 address with a port"),
            ("10.0.0.300:80", "not a valid IP address or DNS name"),
            ("api..internal:80", "empty label"),
            ("-api.internal:80", "starts or ends with '-'"),
            ("api internal:80", "' ' is not allowed"),
            ("http://api:80", "has no scheme"),
            ("api/v1:80", "'/' is not allowed"),
            (":80", "empty name"),
            (
                "srv:_http._tcp.api:80",
                "takes its ports from the SRV records",
            ),
            ("srv:api.internal", "_service._proto.name"),
            ("srv:_http._tcp", "_service._proto.name"),
            ("SRV:_http._tcp.api", "lowercase"),
        ] {
            let e = err(input);
            assert!(e.contains(expected), "{input}: {e}");
            assert!(e.starts_with(&format!("target '{input}': ")), "{e}");
        }
        let long = format!("{}.internal:80", "a".repeat(64));
        assert!(err(&long).contains("longer than 63"));
    }
}
