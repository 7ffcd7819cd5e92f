//! Prometheus text exposition (and OpenMetrics text, whose `# EOF` and
//! `# UNIT` lines it accepts) parsed into samples, strictly: a line that is
//! not valid exposition format fails the test, so a malformed `/metrics`
//! cannot pass for a missing sample.

/// One sample: metric name, labels (in the order written, values
/// unescaped), value.
pub type Sample = (String, Vec<(String, String)>, f64);

/// Parses exposition text into samples. Panics on a line that is not valid
/// exposition format. A sample's optional timestamp is accepted and
/// dropped.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start();
            assert!(
                rest.starts_with("HELP ")
                    || rest.starts_with("TYPE ")
                    || rest.starts_with("UNIT ")
                    || rest == "EOF",
                "bad comment line: {line}"
            );
            continue;
        }
        let (name, labels, rest) = split_series(line);
        let mut fields = rest.split_whitespace();
        let value: f64 = match fields.next() {
            Some("+Inf") => f64::INFINITY,
            Some("-Inf") => f64::NEG_INFINITY,
            Some(v) => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
            None => panic!("no value: {line}"),
        };
        if let Some(ts) = fields.next() {
            assert!(ts.parse::<f64>().is_ok(), "bad timestamp: {line}");
        }
        assert!(fields.next().is_none(), "trailing text: {line}");
        out.push((name, labels, value));
    }
    out
}

/// `name{labels} rest` (or `name rest`) split into the name, the parsed
/// labels and what follows them.
fn split_series(line: &str) -> (String, Vec<(String, String)>, &str) {
    let end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value: {line}"));
    let name = &line[..end];
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name: {line}"
    );
    let rest = &line[end..];
    let Some(inner) = rest.strip_prefix('{') else {
        return (name.to_owned(), Vec::new(), rest);
    };
    let (mut labels, mut key, mut value) = (Vec::new(), String::new(), String::new());
    let (mut in_value, mut escaped) = (false, false);
    for (i, c) in inner.char_indices() {
        if in_value {
            match c {
                _ if escaped => {
                    escaped = false;
                    value.push(match c {
                        'n' => '\n',
                        other => other,
                    });
                }
                '\\' => escaped = true,
                '"' => {
                    in_value = false;
                    labels.push((std::mem::take(&mut key), std::mem::take(&mut value)));
                }
                _ => value.push(c),
            }
            continue;
        }
        match c {
            '}' => {
                assert!(key.trim().is_empty(), "bad label: {line}");
                return (name.to_owned(), labels, &inner[i + 1..]);
            }
            ',' if key.trim().is_empty() => {}
            '=' => {
                let k = key.trim();
                assert!(
                    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "bad label: {line}"
                );
                key = k.to_owned();
                assert!(inner[i + 1..].starts_with('"'), "unquoted label: {line}");
            }
            '"' => in_value = true,
            _ => key.push(c),
        }
    }
    panic!("unclosed labels: {line}")
}

/// The value of a sample with all of `labels` (summed if several match).
pub fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

/// The value of one series written as it appears in the text: `name` for
/// the un-labelled sample, `name{a="x",b="y"}` for exactly those labels
/// (in any order); `None` when absent.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    let (name, labels, _) = split_series(&format!("{series} "));
    let mut want = labels;
    want.sort();
    parse_metrics(text).into_iter().find_map(|(n, mut l, v)| {
        l.sort();
        (n == name && l == want).then_some(v)
    })
}

/// The sum of every sample of `name`, labelled or not (`name 1`,
/// `name{a="x"} 2`); `None` when there is none. For a counter whose labels
/// a test does not care about.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    parse_metrics(text)
        .into_iter()
        .filter(|(n, _, _)| n == name)
        .fold(None, |sum, (_, _, v)| Some(sum.unwrap_or(0.0) + v))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP a_total Things.\n# TYPE a_total counter\n\
        a_total{reason=\"x y\",q=\"a\\\"b,}\"} 3\na_total{reason=\"z\"} 4 1700000000\n\
        up 1\nh_bucket{le=\"+Inf\"} +Inf\n# EOF\n";

    #[test]
    fn parses_labels_values_and_timestamps() {
        let s = parse_metrics(TEXT);
        assert_eq!(s.len(), 4);
        assert_eq!(
            s[0].1,
            vec![
                ("reason".to_owned(), "x y".to_owned()),
                ("q".to_owned(), "a\"b,}".to_owned())
            ]
        );
        assert_eq!(sample(&s, "a_total", &[]), 7.0);
        assert_eq!(metric(TEXT, "up"), Some(1.0));
        assert_eq!(metric(TEXT, "a_total"), None);
        assert_eq!(metric(TEXT, r#"a_total{reason="z"}"#), Some(4.0));
        assert_eq!(metric_sum(TEXT, "a_total"), Some(7.0));
        assert_eq!(metric_sum(TEXT, "missing"), None);
        assert_eq!(metric(TEXT, r#"h_bucket{le="+Inf"}"#), Some(f64::INFINITY));
    }

    #[test]
    #[should_panic(expected = "bad value")]
    fn rejects_a_bad_value() {
        parse_metrics("a 1x\n");
    }
}
