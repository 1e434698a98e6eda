//! Budget alerts: when an agent's or a tenant's spending reaches a configured fraction of a
//! budget (`[alerts] thresholds`, default 50 %, 80 %, 100 %) for the first time in the
//! budget's period, one alert per threshold goes to every `[[alerts.webhooks]]` and into the
//! audit trail.
//!
//! - **Generic over budgets.** The engine sees [`BudgetUse`]s: a scope (agent or tenant), a
//!   budget name (`tokens_per_day`, and any other: `usd_per_day`, `usd_per_month`), what is
//!   spent, the limit and the period. Whoever knows a budget feeds it to [`Alerts::observe`].
//! - **Once per (scope, budget, period, threshold).** [`Tracker`] remembers, per budget, the
//!   thresholds fired in its current period (bounded; ended periods are forgotten). A request
//!   that jumps over several thresholds fires each of them, lowest first. A new period
//!   re-arms them. With the shared Redis limits backend the first replica to
//!   `SET <prefix>alert:... NX PX <until the period ends>` fires; the others count a
//!   deduplication, so N replicas fire once.
//! - **Never on the request path.** [`Alerts::observe`] takes a lock, compares and at most
//!   `try_send`s into a bounded queue (full: dropped and counted). A dispatcher task claims,
//!   audits and hands the alert to each webhook's own bounded queue; each webhook has its
//!   own task POSTing with a per-attempt timeout and bounded retries with exponential backoff
//!   and jitter, so a slow or dead webhook delays nothing but its own alerts.
//! - **Signed.** `X-Portcullis-Signature: sha256=<hex HMAC-SHA256 of the body>` with the
//!   webhook's secret; the signed body carries `ts` and `id` for replay checks.
#![warn(missing_docs)]

mod alert;
mod budget;
mod delivery;
mod engine;
mod metrics;
mod shared;
mod tracker;

pub use alert::{sign, slack_escape, Alert, SIGNATURE_HEADER};
pub use budget::{BudgetUse, Period, Scope};
pub use delivery::{Format, Transport, Webhook, MAX_BACKOFF};
pub use engine::{AlertDeps, AlertSettings, Alerts, AuditSink, DEFAULT_MAX_TRACKED};
pub use metrics::{AlertMetrics, Dropped, Outcome};
pub use shared::SharedDedupe;
pub use tracker::{Full, Tracker};
