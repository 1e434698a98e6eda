//! Command line.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Portcullis: a forward HTTP proxy gateway that governs AI agents.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (proxy and admin listeners).
    Serve {
        /// Config file (TOML). Without one, embedded defaults are used.
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check a config file.
    CheckConfig {
        /// Config file (TOML).
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
    },
    /// Manage agents in the store (the running gateway picks changes up within 1 s).
    Agent {
        /// Config file (for `store.url`); embedded defaults without one.
        #[arg(long, short, env = "PORTCULLIS_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// What to do.
        #[command(subcommand)]
        action: AgentAction,
    },
    /// Print an access token for an agent (testing; signs with the gateway key).
    Token {
        /// Config file (for `store.url` and `identity.signing_key`).
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: Option<PathBuf>,
        /// Agent id.
        #[arg(long)]
        agent: String,
        /// Scopes (default: all the agent's allowed scopes).
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// Check, evaluate and test Rego policies.
    Policy {
        /// What to do.
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Manage the gateway certificate authority (TLS interception).
    Ca {
        /// What to do.
        #[command(subcommand)]
        action: CaAction,
    },
    /// Manage operator API keys for the admin API.
    Apikey {
        /// Config file (for `store.url`).
        #[arg(long, short, env = "PORTCULLIS_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// What to do.
        #[command(subcommand)]
        action: ApikeyAction,
    },
    /// Manage provider credentials the gateway injects (sealed in the store; the running
    /// gateway picks changes up within 1 s).
    Credential {
        /// Config file (for `store.url` and `store.credentials_key`).
        #[arg(long, short, env = "PORTCULLIS_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// What to do.
        #[command(subcommand)]
        action: CredentialAction,
    },
    /// Query and follow the audit trail in the store.
    Audit {
        /// Config file (for `store.url`).
        #[arg(long, short, env = "PORTCULLIS_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// What to do.
        #[command(subcommand)]
        action: AuditAction,
    },
}

/// `portcullis ca ...`.
#[derive(Debug, Subcommand)]
pub enum CaAction {
    /// Generate a gateway CA (`ca.pem`, `ca.key` mode 0600, `ca-bundle.pem`) and print
    /// how to trust it. Refuses to overwrite an existing CA.
    Init {
        /// Directory to write into (created if needed).
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
}

/// Fields `agent create` and `agent set` accept.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AgentFields {
    /// Policy mode: active, shadow or disabled.
    #[arg(long)]
    pub mode: Option<String>,
    /// Risk level: LOW, MEDIUM, HIGH or CRITICAL.
    #[arg(long)]
    pub risk: Option<String>,
    /// Allowed scopes, comma separated (replaces the list).
    #[arg(long, value_delimiter = ',')]
    pub scopes: Option<Vec<String>>,
    /// Groups, comma separated (replaces the list).
    #[arg(long, value_delimiter = ',')]
    pub groups: Option<Vec<String>>,
    /// Token lifetime, e.g. 600s or 10m.
    #[arg(long)]
    pub ttl: Option<String>,
    /// Requests per minute (`default`: back to the `[limits]` default).
    #[arg(long, value_name = "N|default")]
    pub rpm: Option<String>,
    /// LLM tokens per minute (`default`: back to the `[limits]` default).
    #[arg(long, value_name = "N|default")]
    pub tpm: Option<String>,
    /// LLM tokens per day (`default`: back to the `[limits]` default).
    #[arg(long, value_name = "N|default")]
    pub tokens_per_day: Option<String>,
    /// Concurrent in-flight requests (`default`: back to the `[limits]` default).
    #[arg(long, value_name = "N|default")]
    pub max_concurrent: Option<String>,
    /// MCP tool calls per minute (`default`: back to `[mcp] calls_per_minute`).
    #[arg(long, value_name = "N|default")]
    pub mcp_calls_per_minute: Option<String>,
    /// LLM spend per day in US dollars, e.g. 25 or 2.50 (`default`: back to the `[limits]`
    /// default).
    #[arg(long, value_name = "USD|default")]
    pub usd_per_day: Option<String>,
    /// LLM spend per calendar month in US dollars (`default`: back to the `[limits]`
    /// default).
    #[arg(long, value_name = "USD|default")]
    pub usd_per_month: Option<String>,
}

/// `portcullis agent ...`.
#[derive(Debug, Subcommand)]
pub enum AgentAction {
    /// Create an agent; prints its secret once.
    Create {
        /// Agent id (^[a-z][a-z0-9_]{1,63}$).
        id: String,
        /// Tenant.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Fields.
        #[command(flatten)]
        fields: AgentFields,
    },
    /// List agents.
    List {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show one agent as JSON.
    Show {
        /// Agent id.
        id: String,
    },
    /// New secret and generation: the old secret and every issued token stop working.
    Rotate {
        /// Agent id.
        id: String,
    },
    /// Refuse the agent until activated again.
    Suspend {
        /// Agent id.
        id: String,
    },
    /// Re-activate a suspended agent.
    Activate {
        /// Agent id.
        id: String,
    },
    /// Refuse the agent for good.
    Revoke {
        /// Agent id.
        id: String,
    },
    /// Change mode, risk level, scopes, groups, token lifetime or limits.
    Set {
        /// Agent id.
        id: String,
        /// Fields.
        #[command(flatten)]
        fields: AgentFields,
    },
}

/// `portcullis credential ...`.
#[derive(Debug, Subcommand)]
pub enum CredentialAction {
    /// Create or replace a credential. The secret is read from a variable, a file or stdin,
    /// never from the command line; on a replace without one the stored secret is kept.
    Set {
        /// Name (^[a-z][a-z0-9_]{1,63}$).
        name: String,
        /// Tenant that owns it; it applies to that tenant's agents only.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Host globs it is injected for, comma separated (e.g. api.openai.com).
        #[arg(long = "hosts", value_delimiter = ',', required = true)]
        hosts: Vec<String>,
        /// Header to set.
        #[arg(long, default_value = "authorization")]
        header: String,
        /// Header value; {secret} is replaced by the secret.
        #[arg(long, default_value = "Bearer {secret}")]
        format: String,
        /// Agents that may use it, comma separated.
        #[arg(long, value_delimiter = ',')]
        agents: Vec<String>,
        /// Groups whose agents may use it, comma separated.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// replace (drop the agent's value) or if_absent.
        #[arg(long, default_value = "replace", value_parser = ["replace", "if_absent"])]
        mode: String,
        /// Read the secret from this environment variable.
        #[arg(long, conflicts_with_all = ["secret_file", "secret_stdin"])]
        secret_env: Option<String>,
        /// Read the secret from this file.
        #[arg(long, conflicts_with = "secret_stdin")]
        secret_file: Option<PathBuf>,
        /// Read the secret from standard input.
        #[arg(long)]
        secret_stdin: bool,
    },
    /// List credentials (never their secrets).
    List {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Remove a credential.
    Remove {
        /// Name.
        name: String,
        /// Tenant that owns it.
        #[arg(long, default_value = "default")]
        tenant: String,
    },
}

/// `portcullis apikey ...`.
#[derive(Debug, Subcommand)]
pub enum ApikeyAction {
    /// Create an operator API key; prints it once.
    Create {
        /// Tenant the key is bound to.
        #[arg(long)]
        tenant: String,
        /// admin or viewer.
        #[arg(long)]
        role: String,
        /// A label.
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// List keys (never the key itself).
    List {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by id.
    Revoke {
        /// Key id.
        id: String,
    },
}

/// `portcullis policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyAction {
    /// Parse and compile every policy; errors as file:row:col (exit 1 on errors).
    Check {
        /// Policy directory.
        #[arg(default_value = "config/policies")]
        dir: PathBuf,
        /// Output: text or json.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Decide one request as the gateway would (exit 0 allowed, 1 denied, 2 error).
    ///
    /// Prints the decision, every policy's result and the input. The file describes a request as `POST /v1/policies/simulate` takes it, body included,
    /// e.g. config/examples/eval-request.json: `{"agent": "demo", "request": {"method",
    /// "host", "path", "headers", "body"}}`. It is classified with the gateway's classifier
    /// (`[[llm.providers]]`, `proxy.max_inspect_body`) and built into the input with the
    /// gateway's own builder, so the decision is the one the gateway would make. A file with
    /// a top-level `kind` (or an `agent` object) is a raw input document, evaluated as given.
    ///
    /// Exit status: 0 when the decision allows (`would_deny` included), 1 when it denies,
    /// 2 when the request cannot be evaluated (unreadable or invalid file, unknown agent).
    #[command(verbatim_doc_comment)]
    Eval {
        /// JSON file: a request description, or a raw input document.
        #[arg(long)]
        input: PathBuf,
        /// Decide as this registered agent (reads the store); overrides `agent` in the file.
        #[arg(long)]
        agent: Option<String>,
        /// Config file (policy dir, bindings, default, llm.providers, proxy.max_inspect_body;
        /// the store the agent is read from).
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run `test_*` rules and the decision fixtures in DIR/tests/*.yaml|json (exit 1 on failures).
    Test {
        /// Policy directory.
        #[arg(default_value = "config/policies")]
        dir: PathBuf,
    },
}

/// Filters of `audit query` (as the admin API's `GET /v1/decisions` parameters).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuditFilters {
    /// Only this agent.
    #[arg(long)]
    pub agent_id: Option<String>,
    /// Only this sub-agent.
    #[arg(long)]
    pub subagent: Option<String>,
    /// Only this verdict: allow, deny, would_deny, rate_limited or error.
    #[arg(long)]
    pub verdict: Option<String>,
    /// Only decisions of this policy.
    #[arg(long)]
    pub policy: Option<String>,
    /// Only this LLM provider.
    #[arg(long)]
    pub provider: Option<String>,
    /// Only this LLM model.
    #[arg(long)]
    pub model: Option<String>,
    /// From: RFC 3339 or relative (30m, 1h, 7d ago); default 24 h ago.
    #[arg(long)]
    pub since: Option<String>,
    /// Until: RFC 3339 or relative.
    #[arg(long)]
    pub until: Option<String>,
    /// Page size, 1–200 (default 50).
    #[arg(long, allow_hyphen_values = true)]
    pub limit: Option<String>,
    /// Records to skip (default 0).
    #[arg(long, allow_hyphen_values = true)]
    pub offset: Option<String>,
}

/// `portcullis audit ...`.
// Parsed once per process: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Query stored decisions, newest first.
    Query {
        /// Only this tenant (default: every tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// Filters.
        #[command(flatten)]
        filters: AuditFilters,
        /// Output: table or json (`{"decisions", "total", "limit", "offset"}`).
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// Follow new decisions as they are stored (polls every 500 ms; Ctrl-C stops).
    Tail {
        /// Only this tenant (default: every tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// Print each record as one JSON line.
        #[arg(long)]
        json: bool,
        /// Show this many existing records first (at most 200).
        #[arg(long, short = 'n', default_value_t = 10)]
        lines: u32,
    },
}
