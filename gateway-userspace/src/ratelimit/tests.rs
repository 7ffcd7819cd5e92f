#![forbid(unsafe_code)]

use super::*;

fn limiter(rate: &str, burst: u32, mode: Mode) -> Limiter {
    Limiter::new(
        LimitConfig {
            name: "t".into(),
            rate: Some(rate.parse().unwrap()),
            quota: None,
            burst,
            mode,
            key: KeySpec::ClientIp,
            ipv6_prefix_len: 64,
            max_keys: 1000,
            shared: false,
        },
        rate.parse().unwrap(),
    )
}

const S: u64 = 1_000_000_000;

#[test]
fn nodelay_serves_rate_plus_burst_then_rejects_like_nginx() {
    let l = limiter("10r/s", 5, Mode::NoDelay);
    let now = 100 * S;
    // NGINX: burst=5 nodelay serves 1 + 5 at once.
    for i in 0..6 {
        assert!(
            matches!(l.check_key("a", now), Decision::Allow { .. }),
            "request {i}"
        );
    }
    match l.check_key("a", now) {
        Decision::Reject { retry_after, .. } => assert_eq!(retry_after, Duration::from_millis(100)),
        d => panic!("expected reject, got {d:?}"),
    }
    // A rejected request does not consume budget: 100 ms later one passes.
    assert!(matches!(
        l.check_key("a", now + S / 10),
        Decision::Allow { remaining: 0, .. }
    ));
    assert!(
        matches!(l.check_key("b", now), Decision::Allow { remaining: 5, .. }),
        "other key untouched"
    );
}

#[test]
fn delay_mode_throttles_within_burst() {
    let l = limiter("10r/s", 4, Mode::Delay { after: 1 });
    let now = 100 * S;
    assert!(matches!(l.check_key("a", now), Decision::Allow { .. }));
    assert!(
        matches!(l.check_key("a", now), Decision::Allow { .. }),
        "first excess is free (after = 1)"
    );
    match l.check_key("a", now) {
        Decision::Delay { wait, .. } => assert_eq!(wait, Duration::from_millis(100)),
        d => panic!("expected delay, got {d:?}"),
    }
    match l.check_key("a", now) {
        Decision::Delay { wait, .. } => assert_eq!(wait, Duration::from_millis(200)),
        d => panic!("expected delay, got {d:?}"),
    }
    assert!(matches!(l.check_key("a", now), Decision::Delay { .. }));
    assert!(
        matches!(l.check_key("a", now), Decision::Reject { .. }),
        "beyond the burst"
    );
}

#[test]
fn per_minute_rates_are_exact() {
    let l = limiter("6r/m", 0, Mode::NoDelay);
    let now = 100 * S;
    assert!(matches!(l.check_key("a", now), Decision::Allow { .. }));
    assert!(matches!(
        l.check_key("a", now + 9 * S),
        Decision::Reject { .. }
    ));
    assert!(matches!(
        l.check_key("a", now + 10 * S),
        Decision::Allow { .. }
    ));
}

#[test]
fn memory_is_bounded_under_a_flood_of_distinct_keys() {
    let l = Limiter::new(
        LimitConfig {
            max_keys: 640,
            shared: false,
            ..limiter("1r/s", 0, Mode::NoDelay).config
        },
        Rate::per_second(1),
    );
    for i in 0..100_000u32 {
        l.check_key(&format!("k{i}"), 100 * S);
    }
    assert!(l.tracked_keys() <= 640, "tracked {}", l.tracked_keys());
}

#[test]
fn ipv6_clients_are_grouped_by_prefix() {
    let l = limiter("1r/s", 0, Mode::NoDelay);
    let ctx = |ip: &str| KeyContext {
        client_ip: Some(ip.parse().unwrap()),
        ..Default::default()
    };
    assert!(matches!(
        l.check(&ctx("2001:db8::1"), 100 * S),
        Decision::Allow { .. }
    ));
    assert!(
        matches!(
            l.check(&ctx("2001:db8::ffff"), 100 * S),
            Decision::Reject { .. }
        ),
        "same /64"
    );
    assert!(matches!(
        l.check(&ctx("2001:db8:0:1::1"), 100 * S),
        Decision::Allow { .. }
    ));
    assert!(matches!(
        l.check(&KeyContext::default(), 100 * S),
        Decision::NotApplicable
    ));
}

#[test]
fn headers_follow_the_ietf_draft() {
    let l = limiter("10r/s", 5, Mode::NoDelay);
    assert_eq!(headers::policy_item(&l), "\"t\";q=15;w=1");
    let d = l.check_key("a", 100 * S);
    assert_eq!(headers::state_item(&l, &d).unwrap(), "\"t\";r=5;t=1");
    assert_eq!(headers::retry_after(Duration::from_millis(100)), "1");
}

#[test]
fn parses_from_toml() {
    let s: RateLimitSection = toml::from_str(
        "global = [\"ip\"]\n[[limits]]\nname = \"ip\"\nrate = \"600r/m\"\nburst = 20\nmode = \"delay=5\"\nkey = \"claim:sub\"\n",
    )
    .unwrap();
    assert_eq!(s.limits[0].mode, Mode::Delay { after: 5 });
    assert_eq!(s.limits[0].key, KeySpec::Claim("sub".into()));
    assert_eq!(s.limits[0].rate.unwrap().interval_ns(), 100_000_000);
    assert_eq!("7r/m".parse::<Rate>().unwrap().to_string(), "7r/m");
    s.validate().unwrap();
}

#[test]
fn config_errors_are_clear() {
    assert!(
        "10r/h"
            .parse::<Rate>()
            .unwrap_err()
            .to_string()
            .contains("10r/s or 600r/m")
    );
    assert!("0r/s".parse::<Rate>().is_err());
    assert!("cookie:x".parse::<KeySpec>().is_err());
    assert_eq!(
        "header:X-Api-Tenant".parse::<KeySpec>().unwrap(),
        KeySpec::Header("x-api-tenant".into())
    );
    let s = RateLimitSection {
        limits: vec![],
        global: vec!["nope".into()],
        ..RateLimitSection::default()
    };
    assert!(
        s.validate()
            .unwrap_err()
            .to_string()
            .contains("unknown limit 'nope'")
    );
}

fn section(toml_text: &str) -> Result<RateLimitSection, String> {
    #[derive(serde::Deserialize)]
    struct W {
        rate_limit: RateLimitSection,
    }
    let w: W = toml::from_str(toml_text).map_err(|e| e.to_string())?;
    w.rate_limit.validate().map_err(|e| e.to_string())?;
    Ok(w.rate_limit)
}

#[test]
fn quotas_and_plans_parse_and_bad_ones_are_refused() {
    let s = section(
        r#"
[rate_limit]
time_zone = "+02:00"
quota_state = "state/quota.json"
[[rate_limit.limits]]
name = "daily"
quota = "1000/day"
key = "identity"
[[rate_limit.limits]]
name = "both"
rate = "10r/s"
quota = "50/hour"
[[rate_limit.plans]]
name = "gold"
rate = "100r/s"
burst = 10
quota = "10000/month"
[[rate_limit.plans]]
name = "free"
quota = "5/day"
"#,
    )
    .unwrap();
    assert_eq!(s.limits[0].rate, None);
    assert_eq!(s.limits[0].quota.unwrap().to_string(), "1000/day");
    assert_eq!(s.plans[0].quota.unwrap().count, 10_000);
    assert_eq!(s.time_zone.0, 7200);
    for (bad, needle) in [
        (
            "[[rate_limit.limits]]\nname = \"x\"\nkey = \"ip\"",
            "neither rate nor quota",
        ),
        (
            "[[rate_limit.limits]]\nname = \"x\"\nquota = \"5/day\"\nburst = 3",
            "burst and mode need a rate",
        ),
        (
            "[[rate_limit.limits]]\nname = \"x\"\nquota = \"5/week\"",
            "must look like 10000/day",
        ),
        (
            "[[rate_limit.plans]]\nname = \"p\"",
            "neither rate nor quota",
        ),
        (
            "[[rate_limit.plans]]\nname = \"p\"\nquota = \"1/day\"\n[[rate_limit.plans]]\nname = \"p\"\nquota = \"2/day\"",
            "used twice",
        ),
        ("[rate_limit]\ntime_zone = \"Europe/Paris\"", "IANA names"),
        (
            "[[rate_limit.plans]]\nname = \"p\"\nquota = \"1/day\"\ncolour = 1",
            "unknown field",
        ),
    ] {
        let e = section(bad).unwrap_err();
        assert!(e.contains(needle), "{bad}: {e}");
    }
}
