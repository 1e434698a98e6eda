//! Several `portcullis serve` processes sharing one store, as the egress-gateway overlay
//! runs them: one PostgreSQL database (a fresh one per fixture, dropped afterwards) reached
//! through a [`Relay`] the test can cut to take "PostgreSQL" away and bring it back, and
//! optionally one Redis. The store URL reaches every process (and every CLI run) through
//! `PORTCULLIS_STORE_URL`, the Redis URL through `PORTCULLIS_REDIS_URL`, as in deployment.
//!
//! The replicas share what a deployment shares through Secrets: the token signing key and
//! the credentials sealing key (in one directory of the fixture). Each has its own working
//! directory (audit JSONL, spool, development CA).
//!
//! Needs `PORTCULLIS_TEST_POSTGRES_URL` (a superuser URL); `scripts/test.sh` starts a
//! throwaway PostgreSQL and sets it. Without it the fixture fails and says so.

use super::gateway::Gateway;
use super::raw::{basic, proxy_send, RawResponse};
use portcullis_store::testing::{server_address, with_address, Relay, TestDatabase};
use std::path::Path;

/// What [`Shared::start`] starts.
#[derive(Debug, Clone, Default)]
pub struct SharedOpts {
    /// How many gateway processes (at least 1).
    pub replicas: usize,
    /// Lines inside `[proxy]` (after `listen`). `{DIR}` is each gateway's directory.
    pub proxy_lines: String,
    /// Other config sections, appended verbatim (`{DIR}` as above). The fixture writes
    /// `[proxy]`, `[admin]`, `[log]`, `[identity]` and `[store]`: put keys of those tables
    /// in `proxy_lines`, [`SharedOpts::identity_lines`] or [`SharedOpts::store_lines`].
    pub rest: String,
    /// Lines inside `[identity]` (after the shared `signing_key` and
    /// `create_demo_agent = false`).
    pub identity_lines: String,
    /// Lines inside `[store]` (after the shared `credentials_key`).
    pub store_lines: String,
    /// `(relative path, contents)` written into every gateway's directory before it starts.
    pub files: Vec<(String, Vec<u8>)>,
    /// A Redis URL handed to every gateway as `PORTCULLIS_REDIS_URL`.
    pub redis_url: Option<String>,
}

/// The running replicas and their store.
pub struct Shared {
    /// The gateways, in start order (`gateways[0]` is "replica A").
    pub gateways: Vec<Gateway>,
    /// The relay between the gateways and PostgreSQL: [`Relay::cut`] is an outage.
    pub relay: Relay,
    /// The store URL the gateways use (through the relay).
    pub store_url: String,
    /// The platform tenant's admin API key (tenant `default`).
    pub admin_key: String,
    // Field order: the gateways stop before the database is dropped.
    db: TestDatabase,
    _shared_dir: tempfile::TempDir,
}

impl Shared {
    /// Creates the database, starts the relay, then the gateways one after the other (the
    /// first creates the schema and the shared keys), and an admin key through the first.
    pub fn start(opts: SharedOpts) -> Shared {
        assert!(opts.replicas >= 1, "at least one replica");
        let db = block_on(TestDatabase::create());
        let relay = match Relay::start(server_address(db.url())) {
            Ok(r) => r,
            Err(e) => panic!("relay: {e}"),
        };
        let store_url = with_address(db.url(), relay.addr());
        let shared_dir = tempfile::tempdir().expect("tempdir");
        let mut env = vec![("PORTCULLIS_STORE_URL".to_owned(), store_url.clone())];
        if let Some(r) = &opts.redis_url {
            env.push(("PORTCULLIS_REDIS_URL".to_owned(), r.clone()));
        }
        let gateways = (0..opts.replicas)
            .map(|_| launch(&opts, shared_dir.path(), env.clone()))
            .collect::<Vec<_>>();
        let out =
            gateways[0].cli_ok(&["apikey", "create", "--tenant", "default", "--role", "admin"]);
        let admin_key = out
            .lines()
            .nth(1)
            .map(|l| l.trim().to_owned())
            .unwrap_or_else(|| panic!("no key in: {out}"));
        Shared {
            gateways,
            relay,
            store_url,
            admin_key,
            db,
            _shared_dir: shared_dir,
        }
    }

    /// The database's own URL (not through the relay): for checks that must not depend
    /// on the outage the test made.
    pub fn direct_url(&self) -> &str {
        self.db.url()
    }

    /// An admin API call on replica `i` with the platform admin key.
    pub fn admin(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> RawResponse {
        self.gateways[i].admin_call(method, path, Some(&self.admin_key), body)
    }

    /// Creates agent `id` (tenant `default`) through replica `i`'s admin API; returns its
    /// secret.
    pub fn create_agent(&self, i: usize, id: &str) -> String {
        let r = self.admin(
            i,
            "POST",
            "/v1/agents",
            Some(&serde_json::json!({"id": id, "allowed_scopes": ["openai:*:*"]})),
        );
        assert_eq!(r.status, 201, "create agent on replica {i}: {r:?}");
        r.json()["secret"]
            .as_str()
            .unwrap_or_else(|| panic!("no secret: {r:?}"))
            .to_owned()
    }

    /// `GET url` through replica `i`'s proxy as `agent` (Basic with its secret).
    pub fn get(&self, i: usize, url: &str, agent: &str, secret: &str) -> RawResponse {
        proxy_send(
            self.gateways[i].proxy,
            "GET",
            url,
            Some(&basic(agent, secret)),
            &[],
        )
    }

    /// Stops every replica with SIGTERM and starts it again (same directory, config and
    /// environment), one after the other.
    pub fn restart_all(&mut self) {
        for gw in &mut self.gateways {
            gw.restart();
        }
    }
}

/// One gateway: its directory, its files, its config.
fn launch(opts: &SharedOpts, shared: &Path, env: Vec<(String, String)>) -> Gateway {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, data) in &opts.files {
        let p = dir.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create dir");
        }
        std::fs::write(&p, data).expect("write file");
    }
    let d = dir.path().display().to_string();
    let s = shared.display();
    let doc = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n{}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n[log]\nlevel = \"debug\"\n\n\
         [identity]\nsigning_key = \"{s}/signing.key\"\ncreate_demo_agent = false\n{}\n\
         [store]\ncredentials_key = \"{s}/credentials.key\"\n{}\n{}",
        opts.proxy_lines.replace("{DIR}", &d),
        opts.identity_lines,
        opts.store_lines,
        opts.rest.replace("{DIR}", &d)
    );
    Gateway::spawn_with(dir, &doc, env)
}

/// Runs a future to completion on a runtime of its own (the e2e tests are synchronous).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f),
        Err(e) => panic!("runtime: {e}"),
    }
}
