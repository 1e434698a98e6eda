//! What a settled request of a budgeted agent pays for alerts on the request path:
//! [`Alerts::observe`] below every threshold (the common case: a lock and a comparison) and
//! above one already fired (a lookup in the state), with 10 000 budgets remembered.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::future::BoxFuture;
use http::{HeaderMap, Uri};
use portcullis_alerts::{
    AlertDeps, AlertMetrics, AlertSettings, Alerts, BudgetUse, Period, Scope, Transport,
};
use portcullis_core::{SystemClock, UtcOffset};
use std::hint::black_box;
use std::sync::Arc;

struct Nowhere;

impl Transport for Nowhere {
    fn post(&self, _: &Uri, _: HeaderMap, _: Bytes) -> BoxFuture<'static, Result<u16, String>> {
        Box::pin(async { Ok(204) })
    }
}

fn observe(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let alerts = Alerts::start(
        AlertSettings {
            thresholds: vec![0.5, 0.8, 1.0],
            queue: 1 << 20,
            webhooks: Vec::new(),
            max_tracked: 100_000,
            shared: None,
        },
        AlertDeps {
            transport: Arc::new(Nowhere),
            audit: Arc::new(|_| {}),
            clock: Arc::new(SystemClock),
            new_id: || "bench".to_owned(),
            metrics: AlertMetrics::unregistered().expect("metrics"),
        },
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let period = Period::day(now, UtcOffset::UTC);
    let ids: Vec<String> = (0..10_000).map(|i| format!("agent_{i}")).collect();
    for id in &ids {
        alerts.observe(&budget(id, 900_000.0, period));
    }
    c.bench_function("alerts_observe_below_thresholds", |b| {
        b.iter(|| black_box(alerts.observe(black_box(&budget("agent_7", 1_000.0, period)))))
    });
    c.bench_function("alerts_observe_already_fired", |b| {
        b.iter(|| black_box(alerts.observe(black_box(&budget("agent_7", 900_000.0, period)))))
    });
}

fn budget(id: &str, spent: f64, period: Period) -> BudgetUse<'_> {
    BudgetUse {
        scope: Scope::Agent,
        id,
        tenant: "acme",
        budget: "tokens_per_day",
        spent,
        limit: 1_000_000.0,
        period,
    }
}

criterion_group!(benches, observe);
criterion_main!(benches);
