//! The in-memory agent registry: an immutable snapshot swapped atomically, so the
//! request path reads agents without locks or store round trips and every change
//! (suspension, rotation, revocation) applies to the very next request.

use crate::secret::parse_sha256_hex;
use arc_swap::ArcSwap;
use portcullis_core::{Agent, Principal};
use std::collections::HashMap;
use std::sync::Arc;

/// A registered agent with what the request path precomputes from it.
#[derive(Debug)]
pub struct Entry {
    /// The agent record.
    pub agent: Arc<Agent>,
    /// Decoded `secret_sha256`; `None` when absent or malformed (no secret can match).
    pub(crate) secret_digest: Option<[u8; 32]>,
    /// The principal for secret authentication (scopes = allowed scopes).
    pub(crate) principal: Principal,
}

impl Entry {
    /// The principal for secret authentication (scopes = the agent's allowed scopes).
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    fn new(agent: Agent) -> Self {
        let secret_digest = agent.secret_sha256.as_deref().and_then(parse_sha256_hex);
        let principal = Principal {
            agent_id: Arc::from(agent.id.as_str()),
            tenant: Arc::from(agent.tenant.as_str()),
            groups: Arc::from(agent.groups.clone()),
            risk_level: agent.risk_level,
            mode: agent.mode,
            attributes: Arc::new(agent.attributes.clone()),
            scopes: Arc::from(agent.allowed_scopes.clone()),
            token: None,
            generation: agent.generation,
        };
        Self {
            agent: Arc::new(agent),
            secret_digest,
            principal,
        }
    }
}

/// One immutable view of every registered agent.
#[derive(Debug, Default)]
pub struct Snapshot {
    agents: HashMap<String, Arc<Entry>>,
    subagents: HashMap<String, HashMap<String, Arc<Entry>>>,
    version: u64,
}

impl Snapshot {
    /// A top-level agent by id.
    pub fn get(&self, id: &str) -> Option<&Arc<Entry>> {
        self.agents.get(id)
    }

    /// A sub-agent by parent id and name.
    pub fn subagent(&self, parent: &str, name: &str) -> Option<&Arc<Entry>> {
        self.subagents.get(parent).and_then(|m| m.get(name))
    }

    /// Number of top-level agents (the banner's `agents=N`).
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Whether there is no top-level agent.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// Number of sub-agents.
    pub fn subagent_count(&self) -> usize {
        self.subagents.values().map(HashMap::len).sum()
    }

    /// Increases on every change; lets callers notice a new snapshot.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every agent, top-level first, each group in id order.
    pub fn agents(&self) -> Vec<Arc<Agent>> {
        let mut top: Vec<_> = self.agents.values().map(|e| e.agent.clone()).collect();
        top.sort_by(|a, b| a.id.cmp(&b.id));
        let mut subs: Vec<_> = self
            .subagents
            .values()
            .flat_map(|m| m.values().map(|e| e.agent.clone()))
            .collect();
        subs.sort_by(|a, b| (&a.parent, &a.id).cmp(&(&b.parent, &b.id)));
        top.extend(subs);
        top
    }

    fn build(agents: impl IntoIterator<Item = Agent>, version: u64) -> Self {
        let mut snap = Snapshot {
            version,
            ..Snapshot::default()
        };
        for agent in agents {
            snap.insert(agent);
        }
        snap
    }

    fn insert(&mut self, agent: Agent) {
        match agent.parent.clone() {
            None => {
                self.agents
                    .insert(agent.id.clone(), Arc::new(Entry::new(agent)));
            }
            Some(parent) => {
                self.subagents
                    .entry(parent)
                    .or_default()
                    .insert(agent.id.clone(), Arc::new(Entry::new(agent)));
            }
        }
    }
}

/// The shared registry. Readers call [`Registry::snapshot`] or [`Registry::get`];
/// the store watcher calls [`Registry::replace`] with the full agent list.
#[derive(Debug, Default)]
pub struct Registry {
    current: ArcSwap<Snapshot>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding `agents`.
    pub fn from_agents(agents: Vec<Agent>) -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot::build(agents, 1)),
        }
    }

    /// Replaces every agent at once; readers see either the old or the new set.
    /// Sub-agents (`parent` set) are kept apart from top-level agents, so a
    /// sub-agent name never shadows an agent id.
    pub fn replace(&self, agents: Vec<Agent>) {
        let version = self.current.load().version.wrapping_add(1);
        self.current
            .store(Arc::new(Snapshot::build(agents, version)));
    }

    /// Adds or updates one agent (e.g. a sub-agent registered on first use).
    /// Persist it in the store first: a later [`Registry::replace`] from the store
    /// is the source of truth and drops anything the store does not hold.
    pub fn upsert(&self, agent: Agent) {
        self.current.rcu(|cur| {
            let mut agents: Vec<Agent> = cur
                .agents()
                .iter()
                .filter(|a| !(a.id == agent.id && a.parent == agent.parent))
                .map(|a| Agent::clone(a))
                .collect();
            agents.push(agent.clone());
            Snapshot::build(agents, cur.version.wrapping_add(1))
        });
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// A top-level agent by id from the current snapshot.
    pub fn get(&self, id: &str) -> Option<Arc<Agent>> {
        self.current.load().get(id).map(|e| e.agent.clone())
    }

    /// A sub-agent by parent and name from the current snapshot.
    pub fn subagent(&self, parent: &str, name: &str) -> Option<Arc<Agent>> {
        self.current
            .load()
            .subagent(parent, name)
            .map(|e| e.agent.clone())
    }

    /// Number of top-level agents.
    pub fn len(&self) -> usize {
        self.current.load().len()
    }

    /// Whether no top-level agent is registered.
    pub fn is_empty(&self) -> bool {
        self.current.load().is_empty()
    }

    pub(crate) fn entry(&self, id: &str) -> Option<Arc<Entry>> {
        self.current.load().get(id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::AgentStatus;

    fn agent(id: &str) -> Agent {
        Agent::new(id, "acme", 0)
    }

    fn sub(parent: &str, id: &str) -> Agent {
        let mut a = Agent::new(id, "acme", 0);
        a.parent = Some(parent.to_owned());
        a
    }

    #[test]
    fn replace_swaps_everything() {
        let r = Registry::from_agents(vec![agent("alpha"), agent("beta")]);
        assert_eq!(r.len(), 2);
        assert!(r.get("alpha").is_some());
        let before = r.snapshot();
        let mut b = agent("beta");
        b.status = AgentStatus::Suspended;
        r.replace(vec![b, agent("gamma")]);
        assert!(r.get("alpha").is_none());
        assert_eq!(r.get("beta").unwrap().status, AgentStatus::Suspended);
        assert!(r.get("gamma").is_some());
        assert!(r.snapshot().version() > before.version());
        // An old snapshot held by an in-flight request is unchanged.
        assert!(before.get("alpha").is_some());
        assert_eq!(
            before.get("beta").unwrap().agent.status,
            AgentStatus::Active
        );
    }

    #[test]
    fn subagents_do_not_shadow_agents() {
        let r = Registry::from_agents(vec![
            agent("alpha"),
            sub("beta", "alpha"),
            sub("beta", "helper"),
        ]);
        assert_eq!(r.len(), 1);
        assert!(r.get("alpha").unwrap().parent.is_none());
        assert!(r.get("helper").is_none());
        assert_eq!(
            r.subagent("beta", "alpha").unwrap().parent.as_deref(),
            Some("beta")
        );
        assert_eq!(r.snapshot().subagent_count(), 2);
        let ids: Vec<_> = r.snapshot().agents().iter().map(|a| a.id.clone()).collect();
        assert_eq!(ids, ["alpha", "alpha", "helper"]);
    }

    #[test]
    fn upsert_adds_and_updates() {
        let r = Registry::from_agents(vec![agent("alpha")]);
        r.upsert(sub("alpha", "helper"));
        assert!(r.subagent("alpha", "helper").is_some());
        let mut a = agent("alpha");
        a.generation = 7;
        r.upsert(a);
        assert_eq!(r.get("alpha").unwrap().generation, 7);
        assert_eq!(r.len(), 1);
        assert!(r.subagent("alpha", "helper").is_some());
    }

    #[test]
    fn malformed_stored_hash_decodes_to_none() {
        let mut a = agent("alpha");
        a.secret_sha256 = Some("zz".into());
        let r = Registry::from_agents(vec![a]);
        assert!(r.entry("alpha").unwrap().secret_digest.is_none());
        let mut a = agent("alpha");
        a.secret_sha256 = Some(crate::hash_secret("s"));
        r.replace(vec![a]);
        assert!(r.entry("alpha").unwrap().secret_digest.is_some());
    }
}
