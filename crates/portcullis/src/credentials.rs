//! Credential injection: provider keys held by the gateway (`[[credentials]]` in the config,
//! or managed through `/v1/credentials` and `portcullis credential`, sealed in the store) and
//! added to requests that policy allowed, so agents only ever hold a placeholder.
//!
//! Config credentials come first; a stored credential applies only to agents of the tenant
//! that manages it, and is reloaded with the agent registry (at start, after admin writes,
//! and when the store revision changes).
//!
//! A credential is bound to host globs and to who may use it (agents, groups, tenants;
//! nobody by default). The secret comes from an environment variable (read at start) or a
//! file (e.g. a mounted Kubernetes Secret), which is re-read whenever its size, modification
//! time or inode changes, so rotation needs no restart. If a file becomes unreadable the
//! last good value keeps serving (logged, never the value).

use anyhow::{anyhow, bail};
use http::{HeaderName, HeaderValue};
use portcullis_config::{CredentialConfig, CredentialMode};
use portcullis_core::{ApiError, ErrorSource, Principal, Status};
use portcullis_proxy::pipeline::{CredentialInjector, Injection};
use portcullis_store::{SealKey, Store};
use portcullis_tls::HostMatcher;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;
use tracing::{info, warn};

/// The credentials, config ones first (the first binding that matches wins).
pub(crate) struct Credentials {
    config: Vec<Entry>,
    stored: RwLock<Arc<Vec<Entry>>>,
    key: Option<Arc<SealKey>>,
}

struct Entry {
    name: Arc<str>,
    /// Tenant of a stored credential: it applies to that tenant's agents only.
    owner: Option<String>,
    hosts: HostMatcher,
    header: HeaderName,
    format: String,
    replace: bool,
    agents: Vec<String>,
    groups: Vec<String>,
    tenants: Vec<String>,
    secret: Secret,
}

enum Secret {
    /// From an environment variable, read once at start.
    Fixed(String),
    /// From a file, re-read when it changes.
    File(FileSecret),
}

struct FileSecret {
    path: PathBuf,
    cache: Mutex<(Stamp, String)>,
}

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Stamp {
    fn of(path: &std::path::Path) -> std::io::Result<Self> {
        let m = std::fs::metadata(path)?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let inode = 0;
        Ok(Self {
            len: m.len(),
            modified: m.modified().ok(),
            inode,
        })
    }
}

fn read_secret(path: &std::path::Path) -> anyhow::Result<(Stamp, String)> {
    let stamp = Stamp::of(path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let text = std::fs::read_to_string(path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        bail!("{} is empty", path.display());
    }
    if secret.bytes().any(|b| b.is_ascii_control()) {
        bail!(
            "{} holds control characters, which an HTTP header cannot carry",
            path.display()
        );
    }
    Ok((stamp, secret.to_owned()))
}

impl FileSecret {
    fn current(&self, name: &str) -> String {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        match Stamp::of(&self.path) {
            Ok(stamp) if stamp == cache.0 => {}
            Ok(_) => match read_secret(&self.path) {
                Ok(fresh) => {
                    info!(credential = name, path = %self.path.display(), "credential secret file changed; reloaded");
                    *cache = fresh;
                }
                Err(e) => {
                    warn!(credential = name, error = %e, "credential secret file unreadable; keeping the last good value");
                }
            },
            Err(e) => {
                warn!(credential = name, path = %self.path.display(), error = %e, "credential secret file unreadable; keeping the last good value");
            }
        }
        cache.1.clone()
    }
}

impl Credentials {
    /// Loads every config secret once: a missing variable or unreadable file stops the
    /// start. `key` opens stored credentials (none are used without it).
    pub(crate) fn load(
        configs: &[CredentialConfig],
        key: Option<Arc<SealKey>>,
    ) -> anyhow::Result<Self> {
        let config = configs
            .iter()
            .enumerate()
            .map(|(i, c)| Entry::load(i, c))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            config,
            stored: RwLock::new(Arc::new(Vec::new())),
            key,
        })
    }

    /// Names, config ones first, for the banner.
    pub(crate) fn names(&self) -> Vec<String> {
        let stored = self.stored();
        self.config
            .iter()
            .chain(stored.iter())
            .map(|e| e.name.to_string())
            .collect()
    }

    /// Replaces the stored credentials with what `store` holds now. A credential whose
    /// binding is invalid, whose name a config credential uses, or whose secret does not open
    /// with the key is skipped and logged (never its secret).
    pub(crate) async fn reload_stored(&self, store: &Store) {
        let Some(key) = &self.key else { return };
        let rows = match store.list_credentials(None).await {
            Ok(rows) => rows,
            Err(e) => {
                warn!(error = %e, "stored credentials not reloaded; keeping the last set");
                return;
            }
        };
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            let loaded = portcullis_admin::stored_binding(&row)
                .map_err(|e| anyhow!("binding: {e}"))
                .and_then(|b| {
                    b.validate_binding("")
                        .map_err(|e| anyhow!("{}: {}", e.key, e.reason))?;
                    if self.config.iter().any(|c| *c.name == *b.name) {
                        bail!("a config credential has the same name");
                    }
                    let secret = row.secret(key).map_err(|e| anyhow!("{e}"))?;
                    Entry::new(&b, Secret::Fixed(secret), Some(row.tenant.clone()))
                });
            match loaded {
                Ok(e) => entries.push(e),
                Err(e) => warn!(credential = %row.name, error = %e, "stored credential skipped"),
            }
        }
        *self.stored.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(entries);
    }

    fn stored(&self) -> Arc<Vec<Entry>> {
        self.stored
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn with_entry<T>(
        &self,
        pred: impl Fn(&Entry) -> bool,
        f: impl FnOnce(&Entry) -> T,
    ) -> Option<T> {
        if let Some(e) = self.config.iter().find(|e| pred(e)) {
            return Some(f(e));
        }
        let stored = self.stored();
        stored.iter().find(|e| pred(e)).map(f)
    }
}

impl portcullis_admin::ReloadHook for Credentials {
    fn reload<'a>(
        &'a self,
        store: &'a Store,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(self.reload_stored(store))
    }
}

impl Entry {
    fn new(c: &CredentialConfig, secret: Secret, owner: Option<String>) -> anyhow::Result<Self> {
        Ok(Self {
            name: Arc::from(c.name.as_str()),
            owner,
            hosts: HostMatcher::new(&c.hosts).map_err(|e| anyhow!("hosts: {e}"))?,
            header: HeaderName::from_bytes(c.header.as_bytes())
                .map_err(|_| anyhow!("header: not a header name"))?,
            format: c.format.clone(),
            replace: c.mode == CredentialMode::Replace,
            agents: c.agents.clone(),
            groups: c.groups.clone(),
            tenants: c.tenants.clone(),
            secret,
        })
    }

    fn load(i: usize, c: &CredentialConfig) -> anyhow::Result<Self> {
        let key = |f: &str| format!("credentials[{i}].{f}");
        let secret = match (&c.env, &c.file) {
            (Some(var), _) => Secret::Fixed(
                std::env::var(var)
                    .ok()
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty() && !v.bytes().any(|b| b.is_ascii_control()))
                    .ok_or_else(|| {
                        anyhow!(
                            "{}: variable {var} is not set, empty or not a header value",
                            key("env")
                        )
                    })?,
            ),
            (None, Some(path)) => {
                let first = read_secret(path).map_err(|e| anyhow!("{}: {e}", key("file")))?;
                Secret::File(FileSecret {
                    path: path.clone(),
                    cache: Mutex::new(first),
                })
            }
            (None, None) => bail!("{}: a credential needs env or file", key("env")),
        };
        Self::new(c, secret, None).map_err(|e| anyhow!("credentials[{i}].{e}"))
    }

    /// Whether `p` may use this credential: its id, one of its groups or its tenant is listed.
    fn allows(&self, p: &Principal) -> bool {
        if self.owner.as_deref().is_some_and(|t| *t != *p.tenant) {
            return false;
        }
        self.agents.iter().any(|a| **a == *p.agent_id)
            || self.groups.iter().any(|g| p.groups.contains(g))
            || self.tenants.iter().any(|t| **t == *p.tenant)
    }

    fn value(&self) -> Result<HeaderValue, ApiError> {
        let secret = match &self.secret {
            Secret::Fixed(s) => s.clone(),
            Secret::File(f) => f.current(&self.name),
        };
        let mut v =
            HeaderValue::from_str(&self.format.replacen("{secret}", &secret, 1)).map_err(|_| {
                ApiError::new(
                    Status::ServiceUnavailable,
                    "credential_unavailable",
                    format!(
                        "credential `{}` holds characters not allowed in an HTTP header",
                        self.name
                    ),
                    ErrorSource::Internal,
                )
            })?;
        v.set_sensitive(true);
        Ok(v)
    }
}

impl CredentialInjector for Credentials {
    fn intercepts(&self, host: &str) -> bool {
        self.with_entry(|e| e.hosts.matches(host), |_| ()).is_some()
    }

    fn bound(&self, principal: &Principal, host: &str) -> Option<Arc<str>> {
        self.with_entry(
            |e| e.hosts.matches(host) && e.allows(principal),
            |e| e.name.clone(),
        )
    }

    fn injection(&self, name: &str) -> Result<Injection, ApiError> {
        self.with_entry(
            |e| &*e.name == name,
            |e| {
                Ok(Injection {
                    name: e.name.clone(),
                    header: e.header.clone(),
                    value: e.value()?,
                    replace: e.replace,
                })
            },
        )
        .unwrap_or_else(|| {
            // Deleted between the policy decision and forwarding: refuse rather than
            // forward without the credential policy was told about.
            Err(ApiError::new(
                Status::ServiceUnavailable,
                "credential_unavailable",
                format!("credential `{name}` is not configured"),
                ErrorSource::Internal,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn cfg(name: &str, hosts: &[&str]) -> CredentialConfig {
        CredentialConfig {
            name: name.to_owned(),
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            header: "authorization".to_owned(),
            format: "Bearer {secret}".to_owned(),
            env: Some("PORTCULLIS_TEST_CRED_UNIT".to_owned()),
            file: None,
            agents: vec![],
            groups: vec![],
            tenants: vec![],
            mode: CredentialMode::Replace,
        }
    }

    fn principal(id: &str, tenant: &str, groups: &[&str]) -> Principal {
        let mut p = Principal::anonymous();
        p.agent_id = Arc::from(id);
        p.tenant = Arc::from(tenant);
        p.groups = groups.iter().map(|g| (*g).to_owned()).collect();
        p
    }

    fn file_cred(dir: &std::path::Path, c: CredentialConfig, secret: &str) -> Credentials {
        let path = dir.join(format!("{}.key", c.name));
        std::fs::write(&path, secret).unwrap();
        Credentials::load(
            &[CredentialConfig {
                env: None,
                file: Some(path),
                ..c
            }],
            None,
        )
        .unwrap()
    }

    #[test]
    fn bindings_need_a_matching_host_and_a_listed_agent_group_or_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let mut openai = cfg("openai_prod", &["api.openai.com", "*.openai.azure.com"]);
        openai.agents = vec!["bot".into()];
        openai.groups = vec!["research".into()];
        let mut anthropic = cfg("anthropic_acme", &["api.anthropic.com"]);
        anthropic.tenants = vec!["acme".into()];
        let nobody = cfg("nobody_uses_me", &["api.stripe.com"]);
        let mut all = Vec::new();
        for (c, s) in [(openai, "k1"), (anthropic, "k2"), (nobody, "k3")] {
            let path = dir.path().join(format!("{}.key", c.name));
            std::fs::write(&path, s).unwrap();
            all.push(CredentialConfig {
                env: None,
                file: Some(path),
                ..c
            });
        }
        let creds = Credentials::load(&all, None).unwrap();
        assert_eq!(
            creds.names(),
            ["openai_prod", "anthropic_acme", "nobody_uses_me"]
        );
        let bot = principal("bot", "default", &[]);
        let researcher = principal("r1", "default", &["research"]);
        let acme = principal("x", "acme", &[]);
        let stranger = principal("y", "default", &["ops"]);
        let bound = |p: &Principal, h: &str| creds.bound(p, h).map(|n| n.to_string());
        assert_eq!(
            bound(&bot, "api.openai.com").as_deref(),
            Some("openai_prod")
        );
        assert_eq!(
            bound(&bot, "API.OpenAI.com.").as_deref(),
            Some("openai_prod")
        );
        assert_eq!(
            bound(&researcher, "eu.openai.azure.com:443").as_deref(),
            Some("openai_prod")
        );
        assert_eq!(
            bound(&acme, "api.anthropic.com").as_deref(),
            Some("anthropic_acme")
        );
        // Not bound to the host: another host, a look-alike, a redirect target.
        for host in [
            "api.anthropic.com",
            "openai.azure.com",
            "api.openai.com.evil.test",
            "evil.test",
            "api-openai.com",
            "",
        ] {
            assert_eq!(bound(&bot, host), None, "{host}");
        }
        // Not allowed to use it.
        assert_eq!(bound(&stranger, "api.openai.com"), None);
        assert_eq!(bound(&acme, "api.openai.com"), None);
        // Default: nobody.
        assert_eq!(bound(&bot, "api.stripe.com"), None);
        assert_eq!(bound(&acme, "api.stripe.com"), None);
    }

    #[test]
    fn header_formats_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg("anthropic", &["api.anthropic.com"]);
        c.header = "x-api-key".into();
        c.format = "{secret}".into();
        c.mode = CredentialMode::IfAbsent;
        let creds = file_cred(dir.path(), c, "sk-ant-real\n");
        let inj = creds.injection("anthropic").unwrap();
        assert_eq!(inj.header, "x-api-key");
        assert_eq!(
            inj.value, "sk-ant-real",
            "surrounding whitespace is not part of it"
        );
        assert!(inj.value.is_sensitive());
        assert!(!format!("{inj:?}").contains("sk-ant-real"));
        // if_absent: the agent's own value stays.
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("agent-own"));
        assert!(!inj.apply(&mut h));
        assert_eq!(h["x-api-key"], "agent-own");
        let mut h = HeaderMap::new();
        assert!(inj.apply(&mut h));
        assert_eq!(h["x-api-key"], "sk-ant-real");

        let creds = file_cred(dir.path(), cfg("openai", &["api.openai.com"]), "sk-real");
        let inj = creds.injection("openai").unwrap();
        // replace: every value the agent sent is dropped.
        let mut h = HeaderMap::new();
        h.append(
            "authorization",
            HeaderValue::from_static("Bearer sk-placeholder"),
        );
        h.append(
            "authorization",
            HeaderValue::from_static("Basic Zm9vOmJhcg=="),
        );
        assert!(inj.apply(&mut h));
        let all: Vec<_> = h.get_all("authorization").iter().collect();
        assert_eq!(all, ["Bearer sk-real"]);
        assert!(creds.injection("unknown").is_err());
    }

    #[test]
    fn file_secrets_follow_rotation_and_survive_a_vanished_file() {
        let dir = tempfile::tempdir().unwrap();
        let creds = file_cred(dir.path(), cfg("openai", &["api.openai.com"]), "sk-one");
        let path = dir.path().join("openai.key");
        assert_eq!(creds.injection("openai").unwrap().value, "Bearer sk-one");
        // Rotation by atomic rename (how a Kubernetes Secret volume updates).
        let tmp = dir.path().join("openai.key.new");
        std::fs::write(&tmp, "sk-two-longer").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(
            creds.injection("openai").unwrap().value,
            "Bearer sk-two-longer"
        );
        // Gone or emptied: the last good value keeps serving.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            creds.injection("openai").unwrap().value,
            "Bearer sk-two-longer"
        );
        std::fs::write(&path, "  \n").unwrap();
        assert_eq!(
            creds.injection("openai").unwrap().value,
            "Bearer sk-two-longer"
        );
        // A value that cannot be a header is refused the same way.
        std::fs::write(&path, "sk-three\u{7f}bad").unwrap();
        assert_eq!(
            creds.injection("openai").unwrap().value,
            "Bearer sk-two-longer"
        );
        std::fs::write(&path, "sk-four").unwrap();
        assert_eq!(creds.injection("openai").unwrap().value, "Bearer sk-four");
    }

    #[test]
    fn missing_sources_stop_the_start_naming_the_key() {
        let mut c = cfg("openai", &["api.openai.com"]);
        c.env = Some("PORTCULLIS_TEST_CRED_SURELY_UNSET".into());
        let e = Credentials::load(&[c.clone()], None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("credentials[0].env"), "{e}");
        c.env = None;
        c.file = Some(PathBuf::from("/nonexistent/portcullis/key"));
        let e = Credentials::load(&[c], None).err().unwrap().to_string();
        assert!(e.contains("credentials[0].file"), "{e}");
    }
}
