//! Reads back the text exposition of [`Metrics::encode_events`]
//! (OpenMetrics text, RFC-like grammar of prometheus-client's encoder):
//! one sample per line, `name{label="value",...} number`. The dashboard
//! reports the same numbers `/metrics` does, without a second set of
//! counters on the request path.
//!
//! [`Metrics::encode_events`]: crate::observe::Metrics::encode_events

#![forbid(unsafe_code)]

/// One sample: metric name, labels in exposition order, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The metric name as exposed, with its `_total`/`_bucket`/... suffix.
    pub name: String,
    /// Label names and unescaped values.
    pub labels: Vec<(String, String)>,
    /// The sample value (`+Inf`, `-Inf` and `NaN` included).
    pub value: f64,
}

impl Sample {
    /// The value of label `key` ("" when absent).
    pub fn label(&self, key: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

/// Every sample of `text`; comment lines and lines that do not parse are
/// skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let mut key = String::new();
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    rest = &r[i + 1..];
                    break;
                }
                ',' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The `q` quantile (0..1) of a cumulative histogram (`(le, count)` pairs
/// in ascending `le`, the last `+Inf`), interpolated linearly inside the
/// bucket as Prometheus's `histogram_quantile` does. `None` without
/// observations; the highest finite bound when it falls in `+Inf`.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let inside = count - below;
            if inside <= 0.0 {
                return Some(le);
            }
            return Some(lower + (le - lower) * (rank - below) / inside);
        }
        (lower, below) = (le, count);
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_escapes_and_values() {
        let s = parse(
            "# HELP x y\n\
             gateway_http_requests_total{route=\"a\\\"b\",method=\"GET\",status=\"2xx\"} 3\n\
             gateway_rejections_total{reason=\"x,y}\"} 1\n\
             gateway_http_request_duration_seconds_bucket{le=\"+Inf\",route=\"a\"} 7\n\
             gateway_up 1.5\n# EOF\n",
        );
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].label("route"), "a\"b");
        assert_eq!(s[0].label("status"), "2xx");
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[1].label("reason"), "x,y}");
        assert_eq!(s[2].label("le"), "+Inf");
        assert_eq!((s[3].name.as_str(), s[3].value), ("gateway_up", 1.5));
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let b = [(0.1, 50.0), (0.2, 100.0), (f64::INFINITY, 100.0)];
        assert!((quantile(0.5, &b).unwrap() - 0.1).abs() < 1e-9);
        assert!((quantile(0.75, &b).unwrap() - 0.15).abs() < 1e-9);
        assert_eq!(quantile(0.5, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None);
        // Everything above the last finite bound: that bound.
        assert_eq!(
            quantile(0.99, &[(0.1, 0.0), (f64::INFINITY, 4.0)]),
            Some(0.1)
        );
    }
}
