//! Which parts of the input document a policy can read, as a bit set: decides
//! what goes into the decision-cache key.

/// Bit set over the fields of the input document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub(crate) struct FieldMask(pub(crate) u32);

impl FieldMask {
    pub(crate) const KIND: u32 = 1 << 0;
    pub(crate) const AGENT: u32 = 1 << 1;
    pub(crate) const SUBAGENT: u32 = 1 << 2;
    pub(crate) const TOKEN: u32 = 1 << 3;
    pub(crate) const METHOD: u32 = 1 << 4;
    pub(crate) const SCHEME: u32 = 1 << 5;
    pub(crate) const HOST: u32 = 1 << 6;
    pub(crate) const PORT: u32 = 1 << 7;
    pub(crate) const PATH: u32 = 1 << 8;
    pub(crate) const QUERY: u32 = 1 << 9;
    pub(crate) const HEADERS: u32 = 1 << 10;
    pub(crate) const BODY: u32 = 1 << 11;
    pub(crate) const LLM: u32 = 1 << 12;
    pub(crate) const USAGE: u32 = 1 << 13;
    pub(crate) const CREDENTIAL: u32 = 1 << 14;
    /// `input.now`: never part of a cache key, so a policy reading it is not cacheable.
    pub(crate) const NOW: u32 = 1 << 15;
    pub(crate) const METHOD_OVERRIDE: u32 = 1 << 16;
    pub(crate) const MCP: u32 = 1 << 17;
    const REQUEST: u32 = Self::METHOD
        | Self::METHOD_OVERRIDE
        | Self::SCHEME
        | Self::HOST
        | Self::PORT
        | Self::PATH
        | Self::QUERY
        | Self::HEADERS
        | Self::BODY;
    /// Every field.
    pub(crate) const ALL: FieldMask = FieldMask(u32::MAX);

    /// Whether `bit` is set.
    pub(crate) fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }

    /// Union.
    pub(crate) fn union(self, other: FieldMask) -> FieldMask {
        FieldMask(self.0 | other.0)
    }

    /// The bits an `input.<field>` (or `request.<field>`) reference selects.
    /// Unknown fields select nothing: they are undefined in every input.
    pub(crate) fn for_field(field: &str) -> u32 {
        match field {
            "kind" => Self::KIND,
            "agent" => Self::AGENT,
            "subagent" => Self::SUBAGENT,
            "token" => Self::TOKEN,
            "request" => Self::REQUEST,
            "request.method" => Self::METHOD,
            "request.method_override" => Self::METHOD_OVERRIDE,
            "request.scheme" => Self::SCHEME,
            "request.host" => Self::HOST,
            "request.port" => Self::PORT,
            "request.path" => Self::PATH,
            "request.query" => Self::QUERY,
            "request.headers" => Self::HEADERS,
            "request.body" => Self::BODY,
            "llm" => Self::LLM,
            "usage" => Self::USAGE,
            "credential" => Self::CREDENTIAL,
            "mcp" => Self::MCP,
            "now" => Self::NOW,
            _ if field.starts_with("request.") => 0,
            _ => 0,
        }
    }
}
