//! `[llm]`: extra LLM providers recognised (and intercepted) on top of the built-in ones, and
//! model prices.

use crate::ConfigError;
use portcullis_core::Usd;
use serde::{Deserialize, Serialize};

/// `[llm]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// Extra OpenAI- or Anthropic-compatible hosts (`[[llm.providers]]`), on top of the
    /// built-in api.openai.com and api.anthropic.com. Each host is also intercepted (HTTPS).
    pub providers: Vec<ProviderConfig>,
    /// Model prices (`[[llm.prices]]`) on top of the shipped table: they give each record its
    /// `cost_usd` and size dollar budgets.
    pub prices: Vec<PriceConfig>,
}

/// One `[[llm.providers]]` entry:
///
/// ```toml
/// [[llm.providers]]
/// name = "azure"                 # policy/audit/metric label
/// host = "*.openai.azure.com"   # "host", "host:port" or "*.suffix"
/// format = "openai"             # optional
/// ```
///
/// Name and host syntax are checked by the provider classifier the entry is mapped onto.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Provider name used in policy input, audit and metric labels
    /// (`^[a-z0-9][a-z0-9_.-]{0,63}$`).
    pub name: String,
    /// `host`, `host:port` (only that port) or `*.suffix` (any subdomain of
    /// `suffix`, optionally with `:port`). IPv6 literals in brackets.
    pub host: String,
    /// Wire format; default `anthropic` when `name` is `anthropic`, else `openai`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ProviderFormat>,
}

/// The wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderFormat {
    /// OpenAI and OpenAI-compatible APIs (Azure OpenAI, Groq, Mistral, vLLM, ...).
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic Messages API.
    Anthropic,
}

/// One `[[llm.prices]]` entry: what a provider's models cost, in US dollars per million
/// tokens.
///
/// ```toml
/// [[llm.prices]]
/// provider = "openai"            # the provider name of the record (`[[llm.providers]]` names too)
/// model = "gpt-4o*"              # the model, `*` matches any run of characters
/// input = 2.50                   # per million uncached prompt tokens
/// cached_input = 1.25            # per million prompt tokens read from cache (default: input)
/// output = 10.00                 # per million generated tokens (default for reasoning)
/// reasoning = 10.00              # per million reasoning tokens (default: output)
/// valid_from = "2025-01-01"      # UTC day from which this price applies (default: always)
/// ```
///
/// These entries override the shipped table (see `docs/spend.md` for the precedence).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// Provider name, exactly as in the audit record's `provider`.
    pub provider: String,
    /// Model name or glob (`*` matches any run of characters, including none).
    pub model: String,
    /// USD per million uncached prompt tokens.
    pub input: Usd,
    /// USD per million prompt tokens served from the provider's cache (default: `input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<Usd>,
    /// USD per million generated tokens other than reasoning tokens.
    pub output: Usd,
    /// USD per million reasoning tokens (default: `output`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Usd>,
    /// First UTC day (`"YYYY-MM-DD"`) the price applies to; absent: every day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
}

impl PriceConfig {
    /// `valid_from` as a date; `Err` names the problem.
    pub fn valid_from_date(&self) -> Result<Option<time::Date>, String> {
        let Some(text) = &self.valid_from else {
            return Ok(None);
        };
        let format = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(text, &format)
            .map(Some)
            .map_err(|_| format!("{text:?} is not a date: expected \"YYYY-MM-DD\""))
    }
}

/// The price table shipped with Portcullis (`crates/config/src/prices.toml`): list prices of
/// common OpenAI and Anthropic models as of `as_of`. `[[llm.prices]]` overrides it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShippedPrices {
    /// The day the prices were copied from the providers' pricing pages.
    pub as_of: String,
    /// The entries, in the `[[llm.prices]]` format.
    pub prices: Vec<PriceConfig>,
}

/// The embedded shipped price table, parsed and checked like `[[llm.prices]]`.
pub fn shipped_prices() -> Result<ShippedPrices, ConfigError> {
    let table: ShippedPrices = toml::from_str(include_str!("prices.toml"))
        .map_err(|e| ConfigError::new("shipped prices", e.message().to_owned()))?;
    validate_prices(&table.prices, "shipped prices")?;
    Ok(table)
}

impl LlmConfig {
    /// Checks `[[llm.prices]]`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_prices(&self.prices, "llm.prices")
    }
}

fn validate_prices(prices: &[PriceConfig], section: &str) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for (i, p) in prices.iter().enumerate() {
        let key = |k: &str| format!("{section}[{i}].{k}");
        if p.provider.is_empty() || p.provider.len() > 64 {
            return Err(ConfigError::new(
                key("provider"),
                "must be 1 to 64 characters",
            ));
        }
        if p.model.is_empty() || p.model.len() > 256 || p.model.chars().any(char::is_control) {
            return Err(ConfigError::new(
                key("model"),
                "must be a model name or glob of 1 to 256 printable characters",
            ));
        }
        let day = p
            .valid_from_date()
            .map_err(|e| ConfigError::new(key("valid_from"), e))?;
        if !seen.insert((p.provider.as_str(), p.model.as_str(), day)) {
            return Err(ConfigError::new(
                key("model"),
                format!(
                    "{}/{} is priced twice from the same day: keep one entry",
                    p.provider, p.model
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::Config;

    #[test]
    fn the_shipped_table_parses_and_is_dated() {
        let t = super::shipped_prices().unwrap();
        assert_eq!(t.as_of, "2025-08-01");
        assert!(t.prices.iter().any(|p| p.provider == "anthropic"));
        assert!(t.prices.iter().any(|p| p.model == "gpt-4o*"));
    }

    #[test]
    fn prices_parse_and_bad_entries_name_the_key() {
        let ok = "[[llm.prices]]\nprovider = \"openai\"\nmodel = \"gpt-4o*\"\ninput = 2.5\n\
                  output = 10\nvalid_from = \"2025-01-01\"\n";
        let c = Config::from_toml(ok).unwrap();
        c.validate().unwrap();
        assert_eq!(c.llm.prices[0].input.micros(), 2_500_000);
        assert_eq!(c.llm.prices[0].output.micros(), 10_000_000);
        assert_eq!(c.llm.prices[0].cached_input, None);
        for (bad, key) in [
            (
                ok.replace("2025-01-01", "2025-02-30"),
                "llm.prices[0].valid_from",
            ),
            (ok.replace("\"gpt-4o*\"", "\"\""), "llm.prices[0].model"),
            (ok.replace("\"openai\"", "\"\""), "llm.prices[0].provider"),
            (format!("{ok}{ok}"), "llm.prices[1].model"),
        ] {
            let err = Config::from_toml(&bad).unwrap().validate().unwrap_err();
            assert_eq!(err.key, key, "{bad}");
        }
        for bad in [
            ok.replace("2.5", "-2.5"),
            ok.replace("2.5", "\"2.5\""),
            ok.replace("output = 10\n", ""),
            format!("{ok}cost = 1\n"),
        ] {
            assert!(Config::from_toml(&bad).is_err(), "{bad}");
        }
    }
}
