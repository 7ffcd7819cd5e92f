//! The application log (not the access log) in ECS-style JSON for
//! `gateway run --log-format json`: `@timestamp`, `log.level`,
//! `log.logger` (the tracing target), `message`, and the event's fields
//! under their own names. `--log-format text` (the default) is tracing's
//! human-readable format. Both go to stderr; stdout is for the access log.

#![forbid(unsafe_code)]

use std::fmt;

use serde_json::{Map, Value};
use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
};
use tracing_subscriber::{
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// An ECS JSON line per event.
pub struct EcsJson;

struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.insert(f.name().to_owned(), Value::from(v));
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.0.insert(f.name().to_owned(), Value::from(v));
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.0.insert(f.name().to_owned(), Value::from(v));
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.0.insert(f.name().to_owned(), Value::from(v));
    }
    fn record_debug(&mut self, f: &Field, v: &dyn fmt::Debug) {
        self.0
            .insert(f.name().to_owned(), Value::from(format!("{v:?}")));
    }
}

impl<S, N> FormatEvent<S, N> for EcsJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let mut m = Map::new();
        m.insert(
            "@timestamp".into(),
            Value::from(humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()),
        );
        let meta = event.metadata();
        m.insert(
            "log.level".into(),
            Value::from(meta.level().as_str().to_ascii_lowercase()),
        );
        m.insert("log.logger".into(), Value::from(meta.target()));
        if let Some(msg) = fields.0.remove("message") {
            m.insert("message".into(), msg);
        }
        for (k, v) in fields.0 {
            // ECS reserves the top-level names above; event fields that
            // clash go under `gateway.`.
            let k = if m.contains_key(&k) {
                format!("gateway.{k}")
            } else {
                k
            };
            m.insert(k, v);
        }
        writeln!(w, "{}", Value::Object(m))
    }
}
