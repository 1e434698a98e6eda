//! GenAI client metrics under their semantic-convention names, aggregated from audit
//! records on the export task: `gen_ai.client.token.usage` (histogram of tokens per
//! request, `gen_ai.token.type` = `input` | `output`) and `gen_ai.client.operation.duration`
//! (histogram, seconds). Cumulative temporality, explicit buckets as the conventions advise.

use crate::attr::string;
use crate::span::operation;
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, AggregationTemporality, Histogram, HistogramDataPoint, Metric,
};
use portcullis_core::{AuditRecord, UsageSource};
use std::collections::HashMap;

/// Bucket bounds of `gen_ai.client.token.usage` (the conventions' advice).
const TOKEN_BOUNDS: [f64; 14] = [
    1.0,
    4.0,
    16.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// Bucket bounds of `gen_ai.client.operation.duration`, seconds (the conventions' advice).
const DURATION_BOUNDS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// Most distinct attribute sets per instrument; later ones are folded into
/// `gen_ai.request.model = "_other"` (models are named by clients).
pub(crate) const MAX_SERIES: usize = 1000;

/// The model label of series beyond [`MAX_SERIES`].
const OTHER_MODEL: &str = "_other";

/// Attributes of one series: operation, provider, model, and the token type or error.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    operation: &'static str,
    provider: String,
    model: String,
    /// `gen_ai.token.type` (token usage) or `error.type` (duration, when it failed).
    extra: Option<String>,
}

#[derive(Debug, Clone)]
struct Hist {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    buckets: Vec<u64>,
}

impl Hist {
    fn new(bounds: usize) -> Self {
        Self {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            buckets: vec![0; bounds + 1],
        }
    }

    fn observe(&mut self, bounds: &[f64], v: f64) {
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        // A value equal to a bound belongs to that bound's bucket (upper bound inclusive).
        let i = bounds.partition_point(|b| *b < v);
        if let Some(c) = self.buckets.get_mut(i) {
            *c += 1;
        }
    }
}

/// One histogram instrument's series.
#[derive(Debug)]
struct Instrument {
    bounds: &'static [f64],
    series: HashMap<Key, Hist>,
}

impl Instrument {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            series: HashMap::new(),
        }
    }

    fn observe(&mut self, mut key: Key, v: f64) {
        if !self.series.contains_key(&key) && self.series.len() >= MAX_SERIES {
            OTHER_MODEL.clone_into(&mut key.model);
        }
        let n = self.bounds.len();
        self.series
            .entry(key)
            .or_insert_with(|| Hist::new(n))
            .observe(self.bounds, v);
    }

    fn points(&self, extra_key: &str, start: u64, now: u64) -> Vec<HistogramDataPoint> {
        self.series
            .iter()
            .map(|(k, h)| {
                let mut attributes = vec![
                    string("gen_ai.operation.name", k.operation),
                    string("gen_ai.provider.name", &k.provider),
                    string("gen_ai.request.model", &k.model),
                ];
                if let Some(e) = &k.extra {
                    attributes.push(string(extra_key, e));
                }
                HistogramDataPoint {
                    attributes,
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    count: h.count,
                    sum: Some(h.sum),
                    bucket_counts: h.buckets.clone(),
                    explicit_bounds: self.bounds.to_vec(),
                    min: Some(h.min),
                    max: Some(h.max),
                    ..HistogramDataPoint::default()
                }
            })
            .collect()
    }
}

/// The two GenAI instruments, fed one record at a time.
#[derive(Debug)]
pub struct GenAiMetrics {
    start_unix_nano: u64,
    tokens: Instrument,
    duration: Instrument,
}

impl GenAiMetrics {
    /// Empty instruments whose cumulative series start at `start_unix_nano`.
    pub fn new(start_unix_nano: u64) -> Self {
        Self {
            start_unix_nano,
            tokens: Instrument::new(&TOKEN_BOUNDS),
            duration: Instrument::new(&DURATION_BOUNDS),
        }
    }

    /// Adds one finished request: its duration when it was a model call, its token counts
    /// when the provider reported them (the record's counts exactly).
    pub fn observe(&mut self, r: &AuditRecord) {
        let Some(op) = operation(r).filter(|o| *o != "execute_tool") else {
            return;
        };
        let key = |extra: Option<String>| Key {
            operation: op,
            provider: r.provider.clone().unwrap_or_default(),
            model: r.model.clone().unwrap_or_default(),
            extra,
        };
        // Milliseconds to seconds: f64 holds every u64 below 2^53 exactly.
        #[allow(clippy::cast_precision_loss)]
        let secs = r.latency_ms as f64 / 1000.0;
        self.duration.observe(key(r.error.clone()), secs);
        if let Some(u) = r.usage.filter(|u| u.source == UsageSource::Provider) {
            #[allow(clippy::cast_precision_loss)]
            for (kind, n) in [("input", u.input_tokens), ("output", u.output_tokens)] {
                self.tokens.observe(key(Some(kind.to_owned())), n as f64);
            }
        }
    }

    /// Data points held (both instruments).
    pub fn points(&self) -> usize {
        self.tokens.series.len() + self.duration.series.len()
    }

    /// The instruments as OTLP metrics at `now_unix_nano` (none before the first record).
    pub fn export(&self, now_unix_nano: u64) -> Vec<Metric> {
        let mut out = Vec::with_capacity(2);
        let start = self.start_unix_nano;
        for (inst, name, description, unit, extra) in [
            (
                &self.tokens,
                "gen_ai.client.token.usage",
                "Number of input and output tokens used.",
                "{token}",
                "gen_ai.token.type",
            ),
            (
                &self.duration,
                "gen_ai.client.operation.duration",
                "GenAI operation duration.",
                "s",
                "error.type",
            ),
        ] {
            if inst.series.is_empty() {
                continue;
            }
            out.push(Metric {
                name: name.to_owned(),
                description: description.to_owned(),
                unit: unit.to_owned(),
                data: Some(Data::Histogram(Histogram {
                    data_points: inst.points(extra, start, now_unix_nano),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                })),
                ..Metric::default()
            });
        }
        out
    }
}

/// Attributes as a sorted `key=value` list (tests).
#[cfg(test)]
fn labels(attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> Vec<String> {
    let mut v: Vec<String> = crate::attr::tests::as_map(attrs)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::{RequestKind, Usage, Verdict};

    fn rec(model: &str, latency_ms: u64, usage: Option<Usage>) -> AuditRecord {
        let mut r = AuditRecord::new("r", 0, "t", "a", RequestKind::Http, Verdict::Allow);
        r.provider = Some("openai".into());
        r.api = Some("chat.completions".into());
        r.model = Some(model.into());
        r.latency_ms = latency_ms;
        r.usage = usage;
        r
    }

    fn histogram(m: &Metric) -> &Histogram {
        match &m.data {
            Some(Data::Histogram(h)) => h,
            other => panic!("not a histogram: {other:?}"),
        }
    }

    #[test]
    fn token_counts_and_durations_are_exact() {
        let mut g = GenAiMetrics::new(5);
        g.observe(&rec("gpt-4o", 1500, Some(Usage::provider(1200, 16, 0, 0))));
        g.observe(&rec("gpt-4o", 20, Some(Usage::provider(4, 1, 0, 0))));
        g.observe(&rec("gpt-4o", 30, Some(Usage::missing(false))));
        let mut plain = rec("x", 1, None);
        plain.provider = None;
        g.observe(&plain);
        let out = g.export(9);
        assert_eq!(out.len(), 2);
        let tokens = histogram(&out[0]);
        assert_eq!(out[0].name, "gen_ai.client.token.usage");
        assert_eq!(out[0].unit, "{token}");
        assert_eq!(tokens.aggregation_temporality, 2);
        let mut by_type: Vec<(Vec<String>, u64, f64, Vec<u64>)> = tokens
            .data_points
            .iter()
            .map(|p| {
                (
                    labels(&p.attributes),
                    p.count,
                    p.sum.unwrap(),
                    p.bucket_counts.clone(),
                )
            })
            .collect();
        by_type.sort_by(|a, b| a.0.cmp(&b.0));
        let base = |t: &str| {
            let mut v = vec![
                "gen_ai.operation.name=chat".to_owned(),
                "gen_ai.provider.name=openai".to_owned(),
                "gen_ai.request.model=gpt-4o".to_owned(),
                format!("gen_ai.token.type={t}"),
            ];
            v.sort();
            v
        };
        assert_eq!(by_type[0].0, base("input"));
        assert_eq!((by_type[0].1, by_type[0].2), (2, 1204.0));
        // 4 falls in (1, 4], 1200 in (1024, 4096].
        assert_eq!(by_type[0].3[1], 1);
        assert_eq!(by_type[0].3[6], 1);
        assert_eq!(by_type[1].0, base("output"));
        assert_eq!((by_type[1].1, by_type[1].2), (2, 17.0));
        let dur = histogram(&out[1]);
        assert_eq!(out[1].name, "gen_ai.client.operation.duration");
        assert_eq!(out[1].unit, "s");
        assert_eq!(dur.data_points.len(), 1);
        let p = &dur.data_points[0];
        assert_eq!(p.count, 3);
        assert!((p.sum.unwrap() - 1.55).abs() < 1e-9);
        assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (5, 9));
        assert_eq!(p.bucket_counts.iter().sum::<u64>(), 3);
    }

    #[test]
    fn failures_carry_the_error_type_and_series_are_bounded() {
        let mut g = GenAiMetrics::new(0);
        let mut failed = rec("m", 5, None);
        failed.error = Some("upstream_timeout".into());
        g.observe(&failed);
        let out = g.export(1);
        let p = &histogram(&out[0]).data_points[0];
        assert!(labels(&p.attributes).contains(&"error.type=upstream_timeout".to_owned()));
        for i in 0..(MAX_SERIES + 50) {
            g.observe(&rec(&format!("model-{i}"), 1, None));
        }
        assert_eq!(g.duration.series.len(), MAX_SERIES + 1);
        assert!(g.duration.series.keys().any(|k| k.model == OTHER_MODEL));
    }
}
