//! The shape of `/v1` paths: which resource a path names and which methods it takes.
//! Pure string matching; anything unrecognised is `None` (404), never a panic.

use http::Method;

pub(crate) use crate::agents::Action;

/// A recognised `/v1` resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// `/v1/agents`
    Agents,
    /// `/v1/agents/{id}`
    Agent(&'a str),
    /// `/v1/agents/{id}/config`
    Config(&'a str),
    /// `/v1/agents/{id}/{rotate|suspend|activate|revoke}`
    Action(&'a str, Action),
    /// `/v1/policies`
    Policies,
    /// `/v1/policies/validate`
    Validate,
    /// `/v1/policies/simulate`
    Simulate,
    /// `/v1/policies/{name}/mode`
    PolicyMode(&'a str),
    /// `/v1/decisions`
    Decisions,
    /// `/v1/decisions/{id}`
    Decision(&'a str),
    /// `/v1/spend`
    Spend,
    /// `/v1/credentials`
    Credentials,
    /// `/v1/credentials/{name}`
    Credential(&'a str),
}

impl Route<'_> {
    /// Parses a request path (without query).
    pub(crate) fn parse(path: &str) -> Option<Route<'_>> {
        let rest = path.strip_prefix("/v1/")?;
        let mut parts = rest.split('/');
        match parts.next()? {
            "agents" => {}
            "policies" => return Self::parse_policies(parts),
            "decisions" => {
                return match (parts.next(), parts.next()) {
                    (None, _) => Some(Route::Decisions),
                    (Some(id), None) if !id.is_empty() => Some(Route::Decision(id)),
                    _ => None,
                }
            }
            "spend" => return parts.next().is_none().then_some(Route::Spend),
            "credentials" => {
                return match (parts.next(), parts.next()) {
                    (None, _) => Some(Route::Credentials),
                    (Some(name), None) if !name.is_empty() => Some(Route::Credential(name)),
                    _ => None,
                }
            }
            _ => return None,
        }
        let id = match parts.next() {
            None => return Some(Route::Agents),
            Some("") => return None,
            Some(id) => id,
        };
        let route = match parts.next() {
            None => Route::Agent(id),
            Some("config") => Route::Config(id),
            Some("rotate") => Route::Action(id, Action::Rotate),
            Some("suspend") => Route::Action(id, Action::Suspend),
            Some("activate") => Route::Action(id, Action::Activate),
            Some("revoke") => Route::Action(id, Action::Revoke),
            Some(_) => return None,
        };
        match parts.next() {
            None => Some(route),
            Some(_) => None,
        }
    }

    /// The `/v1/policies...` routes (`parts` follows `policies`). A policy named
    /// `validate` or `simulate` is still reachable as `/v1/policies/{name}/mode`.
    fn parse_policies<'p>(mut parts: std::str::Split<'p, char>) -> Option<Route<'p>> {
        let route = match (parts.next(), parts.next()) {
            (None, _) => Route::Policies,
            (Some("validate"), None) => Route::Validate,
            (Some("simulate"), None) => Route::Simulate,
            (Some(name), Some("mode")) if !name.is_empty() => Route::PolicyMode(name),
            _ => return None,
        };
        match parts.next() {
            None => Some(route),
            Some(_) => None,
        }
    }

    /// Whether `method` changes state on this resource (role `admin` only). Validation
    /// and simulation are `POST`s that change nothing, so viewers may call them.
    pub(crate) fn is_write(&self, method: &Method) -> bool {
        match self {
            Route::Validate | Route::Simulate => false,
            _ => method != Method::GET,
        }
    }

    /// Whether this is a `/v1/policies...` route.
    pub(crate) fn is_policy(&self) -> bool {
        matches!(
            self,
            Route::Policies | Route::Validate | Route::Simulate | Route::PolicyMode(_)
        )
    }

    /// Methods the resource answers, for `405` and its `Allow` header.
    pub(crate) fn allowed(&self) -> &'static [Method] {
        const GET_POST: &[Method] = &[Method::GET, Method::POST];
        const GET: &[Method] = &[Method::GET];
        const PUT: &[Method] = &[Method::PUT];
        const POST: &[Method] = &[Method::POST];
        const GET_PUT_DELETE: &[Method] = &[Method::GET, Method::PUT, Method::DELETE];
        match self {
            Route::Agents => GET_POST,
            Route::Credential(_) => GET_PUT_DELETE,
            Route::Agent(_)
            | Route::Policies
            | Route::Decisions
            | Route::Decision(_)
            | Route::Spend
            | Route::Credentials => GET,
            Route::Config(_) | Route::PolicyMode(_) => PUT,
            Route::Action(..) | Route::Validate | Route::Simulate => POST,
        }
    }

    /// The `Allow` header value.
    pub(crate) fn allow_header(&self) -> &'static str {
        match self {
            Route::Agents => "GET, POST",
            Route::Credential(_) => "GET, PUT, DELETE",
            Route::Agent(_)
            | Route::Policies
            | Route::Decisions
            | Route::Decision(_)
            | Route::Spend
            | Route::Credentials => "GET",
            Route::Config(_) | Route::PolicyMode(_) => "PUT",
            Route::Action(..) | Route::Validate | Route::Simulate => "POST",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_paths() {
        assert_eq!(Route::parse("/v1/agents"), Some(Route::Agents));
        assert_eq!(Route::parse("/v1/agents/bot"), Some(Route::Agent("bot")));
        assert_eq!(
            Route::parse("/v1/agents/bot/config"),
            Some(Route::Config("bot"))
        );
        assert_eq!(
            Route::parse("/v1/agents/bot/revoke"),
            Some(Route::Action("bot", Action::Revoke))
        );
        assert_eq!(
            Route::parse("/v1/agents/b/rotate"),
            Some(Route::Action("b", Action::Rotate))
        );
    }

    #[test]
    fn rejects_everything_else() {
        for p in [
            "",
            "/",
            "/v1",
            "/v1/",
            "/v1/agents/",
            "/v1/agents//config",
            "/v1/agents/bot/",
            "/v1/agents/bot/config/x",
            "/v1/agents/bot/delete",
            "/v1/agentsx",
            "/v2/agents",
            "/v1/policies/",
            "/v1/policies/x",
            "/v1/policies//mode",
            "/v1/policies/x/mode/",
            "/v1/policies/x/mode/y",
            "/v1/policies/validate/",
            "/v1/policies/simulate/x",
            "/v1/policiesx",
            "//v1/agents",
            "/v1/agents/bot/rotate/",
            "/v1/decisions/",
            "/v1/decisions/x/",
            "/v1/decisions/x/y",
            "/v1/decisionsx",
            "/v1/credentials/",
            "/v1/credentials/x/",
            "/v1/credentials/x/y",
            "/v1/credentialsx",
        ] {
            assert_eq!(Route::parse(p), None, "{p:?}");
        }
    }

    #[test]
    fn parses_policy_paths() {
        assert_eq!(Route::parse("/v1/policies"), Some(Route::Policies));
        assert_eq!(Route::parse("/v1/policies/validate"), Some(Route::Validate));
        assert_eq!(Route::parse("/v1/policies/simulate"), Some(Route::Simulate));
        assert_eq!(
            Route::parse("/v1/policies/baseline/mode"),
            Some(Route::PolicyMode("baseline"))
        );
        assert_eq!(
            Route::parse("/v1/policies/validate/mode"),
            Some(Route::PolicyMode("validate"))
        );
    }

    #[test]
    fn parses_decision_paths() {
        assert_eq!(Route::parse("/v1/decisions"), Some(Route::Decisions));
        assert_eq!(Route::parse("/v1/spend"), Some(Route::Spend));
        assert_eq!(Route::parse("/v1/spend/x"), None);
        assert_eq!(Route::parse("/v1/spendx"), None);
        assert_eq!(
            Route::parse("/v1/decisions/01J"),
            Some(Route::Decision("01J"))
        );
        assert!(!Route::Decisions.is_write(&Method::GET));
        assert_eq!(Route::Decision("x").allowed(), &[Method::GET]);
    }

    #[test]
    fn parses_credential_paths() {
        assert_eq!(Route::parse("/v1/credentials"), Some(Route::Credentials));
        assert_eq!(
            Route::parse("/v1/credentials/openai_prod"),
            Some(Route::Credential("openai_prod"))
        );
        assert_eq!(Route::Credentials.allowed(), &[Method::GET]);
        let one = Route::Credential("x");
        assert_eq!(one.allowed(), &[Method::GET, Method::PUT, Method::DELETE]);
        assert_eq!(one.allow_header(), "GET, PUT, DELETE");
        assert!(!one.is_write(&Method::GET));
        assert!(one.is_write(&Method::PUT) && one.is_write(&Method::DELETE));
    }

    #[test]
    fn reads_and_writes() {
        assert!(!Route::Simulate.is_write(&Method::POST));
        assert!(!Route::Validate.is_write(&Method::POST));
        assert!(!Route::Policies.is_write(&Method::GET));
        assert!(Route::PolicyMode("x").is_write(&Method::PUT));
        assert!(Route::Agents.is_write(&Method::POST));
        assert!(!Route::Agents.is_write(&Method::GET));
        assert!(Route::Simulate.is_policy() && !Route::Agents.is_policy());
    }

    #[test]
    fn allowed_methods() {
        assert!(Route::Agents.allowed().contains(&Method::POST));
        assert!(!Route::Agent("x").allowed().contains(&Method::PUT));
        assert_eq!(Route::Config("x").allowed(), &[Method::PUT]);
    }
}
