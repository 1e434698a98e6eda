//! Several gateway processes sharing one store and one Redis, as replicas behind a load
//! balancer would; and throwaway Redis servers a test can stop and start again.
//!
//! The store is a parameter: a shared SQLite file by default (every replica on this machine
//! opens the same file), or any store URL (e.g. PostgreSQL) a test passes in.

use super::gateway::{loopback_proxy_section, Gateway, GatewayOpts};
use super::util::{sha256_hex, TIMEOUT};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Redis the tests share (`PORTCULLIS_TEST_REDIS_URL`); a missing one fails the test with
/// how to get one.
pub fn test_redis_url() -> String {
    match std::env::var("PORTCULLIS_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "PORTCULLIS_TEST_REDIS_URL is not set: this test needs a Redis. Run the tests through \
             scripts/test.sh (it installs and starts a throwaway Redis), or start one and export \
             PORTCULLIS_TEST_REDIS_URL=redis://127.0.0.1:PORT"
        ),
    }
}

/// A Redis key prefix no other test (or earlier run) uses.
pub fn unique_redis_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("e2e:{test}:{}:{nanos}:", std::process::id())
}

/// The secret of the fleet's agent `bot` (declared in the config of every replica).
pub const BOT_SECRET: &str = "bot-secret-0123456789";

/// What every replica of a [`Fleet`] runs with.
#[derive(Debug, Clone, Default)]
pub struct FleetOpts {
    /// Store URL shared by every replica; `None`: a SQLite file in a directory of the fleet.
    pub store_url: Option<String>,
    /// Ports of local origins the replicas may reach.
    pub ports: Vec<u16>,
    /// Sections appended to every replica's config (`{DIR}` is the replica's directory).
    pub rest: String,
    /// Files written into every replica's directory (e.g. `policies/allow.rego`).
    pub files: Vec<(String, Vec<u8>)>,
}

/// Replicas sharing one store. Killed on drop.
pub struct Fleet {
    /// The replicas, in start order.
    pub gateways: Vec<Gateway>,
    /// The shared store's URL.
    pub store_url: String,
    _shared: tempfile::TempDir,
}

/// A policy that allows every request.
pub const ALLOW_ALL: &str =
    "package portcullis.policy.allow_all\nimport rego.v1\n\nallow := true\n";

impl Fleet {
    /// Starts `n` authenticating replicas, one after the other, on the same store, each with
    /// agent `bot` ([`BOT_SECRET`]) declared in its config and the allow-all policy unless
    /// `opts.files` brings policies.
    pub fn start(n: usize, opts: FleetOpts) -> Self {
        let shared = tempfile::tempdir().expect("tempdir");
        let store_url = opts.store_url.clone().unwrap_or_else(|| {
            format!("sqlite://{}", shared.path().join("portcullis.db").display())
        });
        let mut files = opts.files.clone();
        if !files.iter().any(|(p, _)| p.starts_with("policies/")) {
            files.push((
                "policies/allow_all.rego".to_owned(),
                ALLOW_ALL.as_bytes().to_vec(),
            ));
        }
        let rest = format!(
            "\n[store]\nurl = \"{store_url}\"\n\n[policy]\ndir = \"{{DIR}}/policies\"\n\n\
             [[agents]]\nid = \"bot\"\ntenant = \"acme\"\nsecret_sha256 = \"{}\"\n\n{}",
            sha256_hex(BOT_SECRET.as_bytes()),
            opts.rest
        );
        let gateways = (0..n)
            .map(|_| {
                Gateway::launch(GatewayOpts {
                    auth: true,
                    proxy_lines: loopback_proxy_section(&opts.ports),
                    rest: rest.clone(),
                    files: files.clone(),
                })
            })
            .collect();
        Self {
            gateways,
            store_url,
            _shared: shared,
        }
    }

    /// `Proxy-Authorization` of agent `bot`.
    pub fn bot_auth() -> String {
        super::raw::basic("bot", BOT_SECRET)
    }
}

/// Sends SIGKILL to a gateway: it dies without draining or giving anything back.
pub fn sigkill(gw: &Gateway) {
    let st = Command::new("kill")
        .arg("-KILL")
        .arg(gw.pid().to_string())
        .status()
        .expect("kill");
    assert!(st.success(), "kill -KILL failed");
}

/// A Redis server of a test's own, on a free loopback port, without persistence; it can be
/// stopped and started again on the same port (an outage). Stopped on drop.
pub struct RedisServer {
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn redis_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PORTCULLIS_TEST_REDIS_SERVER") {
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("redis-server"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "redis-server not found (PORTCULLIS_TEST_REDIS_SERVER unset and not on PATH): run \
             the tests through scripts/test.sh, which installs it"
        )
    })
}

impl RedisServer {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut s = Self {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        s.resume();
        s
    }

    /// Starts the server again on its port.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(redis_server_bin())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGTERM) and waits until it has exited.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
