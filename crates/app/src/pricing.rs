//! Model prices: the shipped table with the config's `[[llm.prices]]` on top, and the lookup
//! that gives a record its `cost_usd` and a dollar budget its reservation.
//!
//! # Precedence
//!
//! 1. A config entry replaces every shipped entry with the same `provider` and `model`
//!    pattern (all of its dates).
//! 2. Of the remaining entries, those whose provider equals the request's, whose `model`
//!    pattern matches the model and whose `valid_from` is on or before the request's UTC day
//!    apply. The most specific pattern wins (more literal characters; an exact name beats any
//!    glob), then the latest `valid_from` (an entry without one counts as oldest), then a
//!    config entry over a shipped one, then the later entry in its file.
//! 3. No entry applies: the price is unknown, the record's `cost_usd` is `null`, and a dollar
//!    budget refuses the request (it cannot be sized).

use portcullis_config::{Config, ConfigError, PriceConfig};
use portcullis_core::{AuditRecord, TokenPrice, Usd};
use portcullis_proxy::ProxyMetrics;
use prometheus::{CounterVec, Opts, Registry};
use std::sync::Arc;
use time::Date;

/// Prices every LLM record before it reaches the sinks: its `cost_usd` and
/// `portcullis_llm_cost_usd_total{agent,provider,model}`.
#[derive(Clone)]
pub struct Pricing {
    table: Arc<PriceTable>,
    cost_total: CounterVec,
    labels: ProxyMetrics,
}

impl Pricing {
    /// Registers the cost metric in `registry`; model labels are bounded like the token
    /// metric's (`labels`, the data plane's metrics).
    pub fn new(
        table: Arc<PriceTable>,
        registry: &Registry,
        labels: ProxyMetrics,
    ) -> prometheus::Result<Self> {
        let cost_total = CounterVec::new(
            Opts::new(
                "portcullis_llm_cost_usd_total",
                "Cost of LLM calls in US dollars (reported usage priced with [[llm.prices]] \
                 over the shipped table), by agent, provider and model.",
            ),
            &["agent", "provider", "model"],
        )?;
        registry.register(Box::new(cost_total.clone()))?;
        Ok(Self {
            table,
            cost_total,
            labels,
        })
    }

    /// The price table.
    pub fn table(&self) -> &Arc<PriceTable> {
        &self.table
    }

    /// What `r` cost: its usage priced on its UTC day; `None` when it is not an LLM call, its
    /// usage is missing or no price applies.
    pub fn cost(&self, r: &AuditRecord) -> Option<Usd> {
        let usage = r.usage.as_ref()?;
        let (provider, model) = (r.provider.as_deref()?, r.model.as_deref()?);
        let price = self
            .table
            .lookup_at(provider, model, r.ts.div_euclid(1000))?;
        price.cost(usage)
    }

    /// Sets `r.cost_usd` (unless already set) and counts it in the cost metric.
    pub fn apply(&self, r: &mut AuditRecord) {
        if r.cost_usd.is_none() {
            r.cost_usd = self.cost(r);
        }
        let Some(cost) = r.cost_usd else { return };
        let model = self.labels.model_label(r.model.as_deref());
        self.cost_total
            .with_label_values(&[
                r.agent_id.as_str(),
                r.provider.as_deref().unwrap_or("unknown"),
                model.as_str(),
            ])
            .inc_by(cost.dollars());
    }
}

/// The price table: shipped entries and the config's, resolved with the precedence above.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    entries: Vec<Entry>,
    as_of: String,
}

#[derive(Debug, Clone)]
struct Entry {
    provider: String,
    pattern: String,
    literal: usize,
    valid_from: Option<Date>,
    from_config: bool,
    price: TokenPrice,
}

impl PriceTable {
    /// The shipped table with `cfg`'s `[[llm.prices]]` on top.
    pub fn from_config(cfg: &Config) -> Result<Self, ConfigError> {
        let shipped = portcullis_config::shipped_prices()?;
        Self::new(&shipped.prices, &cfg.llm.prices, shipped.as_of)
    }

    /// A table of `shipped` entries overridden by `configured` ones (precedence rule 1).
    pub fn new(
        shipped: &[PriceConfig],
        configured: &[PriceConfig],
        as_of: String,
    ) -> Result<Self, ConfigError> {
        let mut entries = Vec::with_capacity(shipped.len() + configured.len());
        let overridden = |s: &PriceConfig| {
            configured
                .iter()
                .any(|c| c.provider == s.provider && c.model == s.model)
        };
        for s in shipped.iter().filter(|s| !overridden(s)) {
            entries.push(entry(s, false, "shipped prices")?);
        }
        for c in configured {
            entries.push(entry(c, true, "llm.prices")?);
        }
        Ok(Self { entries, as_of })
    }

    /// The date of the shipped prices.
    pub fn as_of(&self) -> &str {
        &self.as_of
    }

    /// The price of `model` at `provider` on UTC day `day`; `None` when no entry applies.
    pub fn lookup(&self, provider: &str, model: &str, day: Date) -> Option<TokenPrice> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                e.provider == provider
                    && e.valid_from.is_none_or(|from| from <= day)
                    && glob_matches(&e.pattern, model)
            })
            .max_by_key(|(i, e)| (e.literal, e.valid_from, e.from_config, *i))
            .map(|(_, e)| e.price)
    }

    /// [`PriceTable::lookup`] on the UTC day of Unix second `unix_secs`.
    pub fn lookup_at(&self, provider: &str, model: &str, unix_secs: i64) -> Option<TokenPrice> {
        let day = time::OffsetDateTime::from_unix_timestamp(unix_secs)
            .ok()?
            .date();
        self.lookup(provider, model, day)
    }
}

fn entry(p: &PriceConfig, from_config: bool, section: &str) -> Result<Entry, ConfigError> {
    let valid_from = p
        .valid_from_date()
        .map_err(|e| ConfigError::new(format!("{section}.valid_from"), e))?;
    let input = p.input.micros();
    let output = p.output.micros();
    Ok(Entry {
        provider: p.provider.clone(),
        pattern: p.model.clone(),
        literal: p.model.chars().filter(|&c| c != '*').count()
            + usize::from(!p.model.contains('*')),
        valid_from,
        from_config,
        price: TokenPrice {
            input,
            cached_input: p.cached_input.map_or(input, |c| c.micros()),
            output,
            reasoning: p.reasoning.map_or(output, |r| r.micros()),
        },
    })
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters (including none)
/// and every other character matches itself. Linear backtracking on the last `*`: no
/// exponential blow-up whatever the pattern.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::{Usage, Usd};
    use time::macros::date;

    fn price(provider: &str, model: &str, input: f64, output: f64) -> PriceConfig {
        PriceConfig {
            provider: provider.into(),
            model: model.into(),
            input: Usd::from_dollars(input).unwrap(),
            cached_input: None,
            output: Usd::from_dollars(output).unwrap(),
            reasoning: None,
            valid_from: None,
        }
    }

    fn shipped() -> PriceTable {
        PriceTable::from_config(&Config::default()).unwrap()
    }

    #[test]
    fn globs_match_star_runs_only() {
        for (p, t, yes) in [
            ("gpt-4o*", "gpt-4o", true),
            ("gpt-4o*", "gpt-4o-2024-08-06", true),
            ("gpt-4o*", "gpt-4", false),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("*mini", "o4-mini", true),
            ("o?", "o1", false),
            ("claude-*-sonnet*", "claude-3-5-sonnet-latest", true),
            ("gpt-4o", "GPT-4O", false),
        ] {
            assert_eq!(glob_matches(p, t), yes, "{p} ~ {t}");
        }
        // Adversarial: many stars against a long non-matching text stays linear-ish.
        let p = "*a".repeat(50);
        let t = "a".repeat(49) + &"b".repeat(10_000);
        assert!(!glob_matches(&p, &t));
    }

    #[test]
    fn the_most_specific_pattern_wins() {
        let t = shipped();
        let day = date!(2025 - 08 - 01);
        let mini = t.lookup("openai", "gpt-4o-mini-2024-07-18", day).unwrap();
        assert_eq!(
            (mini.input, mini.cached_input, mini.output),
            (150_000, 75_000, 600_000)
        );
        let four_o = t.lookup("openai", "gpt-4o-2024-08-06", day).unwrap();
        assert_eq!((four_o.input, four_o.output), (2_500_000, 10_000_000));
        assert_eq!(four_o.reasoning, 10_000_000, "reasoning defaults to output");
        let nano = t.lookup("openai", "gpt-4.1-nano", day).unwrap();
        assert_eq!(nano.cached_input, 25_000);
        let o3mini = t.lookup("openai", "o3-mini", day).unwrap();
        assert_eq!(o3mini.input, 1_100_000);
        let emb = t.lookup("openai", "text-embedding-3-small", day).unwrap();
        assert_eq!((emb.input, emb.output), (20_000, 0));
        let sonnet = t
            .lookup("anthropic", "claude-sonnet-4-20250514", day)
            .unwrap();
        assert_eq!((sonnet.input, sonnet.cached_input), (3_000_000, 300_000));
        let haiku = t
            .lookup("anthropic", "claude-3-5-haiku-latest", day)
            .unwrap();
        assert_eq!(haiku.output, 4_000_000);
    }

    #[test]
    fn the_latest_valid_from_on_or_before_the_day_wins() {
        let t = shipped();
        let before = t.lookup("openai", "o3", date!(2025 - 06 - 09)).unwrap();
        let after = t
            .lookup("openai", "o3-2025-04-16", date!(2025 - 06 - 10))
            .unwrap();
        assert_eq!((before.input, after.input), (10_000_000, 2_000_000));
        // A price whose only entry starts later does not apply before then.
        let mut late = price("acme", "m", 1.0, 1.0);
        late.valid_from = Some("2030-01-01".into());
        let t = PriceTable::new(&[], &[late], String::new()).unwrap();
        assert!(t.lookup("acme", "m", date!(2029 - 12 - 31)).is_none());
        assert!(t.lookup("acme", "m", date!(2030 - 01 - 01)).is_some());
    }

    #[test]
    fn unknown_models_and_providers_have_no_price() {
        let t = shipped();
        let day = date!(2025 - 08 - 01);
        assert!(t.lookup("openai", "llama-3-70b", day).is_none());
        assert!(
            t.lookup("azure", "gpt-4o", day).is_none(),
            "provider must match"
        );
        assert!(t.lookup("anthropic", "gpt-4o", day).is_none());
        assert!(t.lookup("openai", "", day).is_none());
    }

    #[test]
    fn config_entries_override_the_shipped_ones() {
        // Same pattern: the config replaces the shipped entry, even its later-dated ones.
        let cfg = Config {
            llm: portcullis_config::LlmConfig {
                prices: vec![
                    price("openai", "o3*", 1.0, 2.0),
                    price("azure", "gpt-4o*", 3.0, 4.0),
                ],
                ..Default::default()
            },
            ..Config::default()
        };
        let t = PriceTable::from_config(&cfg).unwrap();
        let day = date!(2025 - 08 - 01);
        assert_eq!(t.lookup("openai", "o3", day).unwrap().input, 1_000_000);
        assert_eq!(t.lookup("azure", "gpt-4o", day).unwrap().output, 4_000_000);
        // A broader config pattern does not hide a more specific shipped one.
        assert_eq!(t.lookup("openai", "o3-mini", day).unwrap().input, 1_100_000);
        // Equal specificity: config over shipped.
        let t = PriceTable::new(
            &[price("p", "a*", 1.0, 1.0)],
            &[price("p", "*a", 2.0, 2.0)],
            String::new(),
        )
        .unwrap();
        assert_eq!(t.lookup("p", "a", day).unwrap().input, 2_000_000);
    }

    #[test]
    fn a_priced_usage_costs_exactly_what_the_table_says() {
        let t = shipped();
        let p = t.lookup_at("openai", "o4-mini", 1_754_000_000).unwrap();
        // 2000 input of which 1000 cached, 800 output of which 500 reasoning:
        // 1000 × 1.10 + 1000 × 0.275 + 300 × 4.40 + 500 × 4.40 = 1100 + 275 + 1320 + 2200 µ$.
        let cost = p.cost(&Usage::provider(2000, 800, 1000, 500)).unwrap();
        assert_eq!(cost.micros(), 4_895);
        assert_eq!(p.cost(&Usage::missing(false)), None);
    }

    #[test]
    fn records_are_priced_on_their_day_and_counted() {
        let registry = Registry::new();
        let pricing = Pricing::new(
            Arc::new(shipped()),
            &registry,
            ProxyMetrics::new(&Registry::new()).unwrap(),
        )
        .unwrap();
        let ts_ms = 1_754_000_000_000; // 2025-07-31
        let mut r = AuditRecord::new(
            "id",
            ts_ms,
            "t",
            "bot",
            portcullis_core::RequestKind::Http,
            portcullis_core::Verdict::Allow,
        );
        r.provider = Some("openai".into());
        r.model = Some("gpt-4o".into());
        r.usage = Some(Usage::provider(1000, 100, 0, 0));
        pricing.apply(&mut r);
        // 1000 × 2.50 + 100 × 10 = 3500 µ$.
        assert_eq!(r.cost_usd, Some(Usd::from_micros(3_500)));
        let mut missing = r.clone();
        missing.cost_usd = None;
        missing.usage = Some(Usage::missing(false));
        pricing.apply(&mut missing);
        assert_eq!(missing.cost_usd, None, "missing usage is not free");
        let mut unknown = r.clone();
        unknown.cost_usd = None;
        unknown.model = Some("mystery".into());
        pricing.apply(&mut unknown);
        assert_eq!(unknown.cost_usd, None, "an unknown model is not free");
        let got = registry
            .gather()
            .into_iter()
            .find(|f| f.name() == "portcullis_llm_cost_usd_total")
            .unwrap();
        let m = &got.get_metric()[0];
        assert_eq!(m.get_counter().get_value(), 0.0035);
        assert_eq!(got.get_metric().len(), 1, "only priced records are counted");
    }

    #[test]
    fn bad_dates_are_refused() {
        let mut p = price("openai", "x", 1.0, 1.0);
        p.valid_from = Some("2025-13-01".into());
        let err = PriceTable::new(&[], &[p], String::new()).unwrap_err();
        assert!(err.to_string().contains("valid_from"), "{err}");
    }
}
