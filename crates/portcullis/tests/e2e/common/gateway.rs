//! The gateway under test: `portcullis serve` spawned with a temporary config in its own
//! directory, its CLI run against the same directory, the admin API and its metrics.

use super::raw::{send_raw, RawResponse};
use super::util::{PROXY_ENV, TIMEOUT};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// A running `portcullis serve` process; killed on drop.
pub struct Gateway {
    child: Option<Child>,
    /// Proxy listener address from the banner.
    pub proxy: SocketAddr,
    /// Admin listener address from the banner.
    pub admin: SocketAddr,
    /// The banner line.
    pub banner: String,
    dir: tempfile::TempDir,
    cfg: PathBuf,
    lines: Arc<std::sync::Mutex<Vec<String>>>,
    /// Environment given to the process and to [`Gateway::cli`] (e.g. the store URL).
    env: Vec<(String, String)>,
}

/// Options for [`Gateway::launch`]: authentication on or off, config sections, and
/// files written into the gateway's directory before it starts.
#[derive(Debug, Clone, Default)]
pub struct GatewayOpts {
    /// Require proxy authentication (omit `allow_unauthenticated = true`).
    pub auth: bool,
    /// Lines inside `[proxy]`. `{DIR}` is replaced by the gateway's directory.
    pub proxy_lines: String,
    /// Other sections, appended verbatim. `{DIR}` is replaced by the gateway's directory.
    pub rest: String,
    /// `(relative path, contents)` written before start (directories created).
    pub files: Vec<(String, Vec<u8>)>,
}

/// `[proxy]` lines allowing loopback destinations on `ports`.
pub fn loopback_proxy_section(ports: &[u16]) -> String {
    format!("allowed_ports = {ports:?}\nallow_private = [\"127.0.0.1/32\", \"::1/128\"]\n")
}

impl Gateway {
    /// Starts the gateway allowing 127.0.0.1 and ::1 on `ports`.
    pub fn start_for(ports: &[u16]) -> Self {
        Self::start(&loopback_proxy_section(ports), "")
    }

    /// Starts the gateway. `proxy_lines` go into `[proxy]` (after `listen` and
    /// `allow_unauthenticated`); `rest` is appended verbatim (other sections).
    pub fn start(proxy_lines: &str, rest: &str) -> Self {
        Self::start_on("127.0.0.1:0", "127.0.0.1:0", proxy_lines, rest)
    }

    /// Like [`Gateway::start`] with explicit listen addresses.
    pub fn start_on(proxy_listen: &str, admin_listen: &str, proxy_lines: &str, rest: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let doc = format!(
            "[proxy]\nlisten = \"{proxy_listen}\"\nallow_unauthenticated = true\n{proxy_lines}\n\
             [admin]\nlisten = \"{admin_listen}\"\n\n[log]\nlevel = \"debug\"\n{rest}"
        );
        Self::spawn_in(dir, &doc)
    }

    /// Starts the gateway as [`GatewayOpts`] describe, on `127.0.0.1:0` for both listeners.
    pub fn launch(opts: GatewayOpts) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, data) in &opts.files {
            let p = dir.path().join(name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).expect("create dir");
            }
            std::fs::write(&p, data).expect("write file");
        }
        let d = dir.path().display().to_string();
        let auth = if opts.auth {
            ""
        } else {
            "allow_unauthenticated = true\n"
        };
        let doc = format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n{auth}{}\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\n[log]\nlevel = \"debug\"\n{}",
            opts.proxy_lines.replace("{DIR}", &d),
            opts.rest.replace("{DIR}", &d)
        );
        Self::spawn_in(dir, &doc)
    }

    fn spawn_in(dir: tempfile::TempDir, doc: &str) -> Self {
        Self::spawn_with(dir, doc, Vec::new())
    }

    /// Starts the gateway in `dir` (files already written there) with `doc` as its whole
    /// config file and `env` added to its environment and to every [`Gateway::cli`] run.
    pub fn spawn_with(dir: tempfile::TempDir, doc: &str, env: Vec<(String, String)>) -> Self {
        let cfg = dir.path().join("portcullis.toml");
        std::fs::write(&cfg, doc).expect("write config");
        let mut gw = Self {
            child: None,
            proxy: SocketAddr::from(([0, 0, 0, 0], 0)),
            admin: SocketAddr::from(([0, 0, 0, 0], 0)),
            banner: String::new(),
            dir,
            cfg,
            lines: Arc::default(),
            env,
        };
        gw.spawn();
        gw
    }

    /// Starts the process in [`Gateway::dir`] with [`Gateway::config_path`] and reads its
    /// banner (stderr is appended to `stderr.log`).
    fn spawn(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))
            .expect("stderr file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.current_dir(self.dir.path())
            .arg("serve")
            .arg("--config")
            .arg(&self.cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        for k in PROXY_ENV {
            cmd.env_remove(k);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.spawn().expect("spawn portcullis");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        let all = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = all.clone();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            // Keep draining so the child never blocks on a full pipe; keep
            // the lines after the banner for [`Gateway::stdout_lines`].
            for line in lines.map_while(Result::ok) {
                if let Ok(mut v) = sink.lock() {
                    v.push(line);
                }
            }
        });
        self.child = Some(child);
        self.lines = all;
        let banner = match rx.recv_timeout(TIMEOUT) {
            Ok(b) => b,
            Err(_) => panic!("no banner from portcullis; stderr:\n{}", self.stderr()),
        };
        self.proxy = banner_addr(&banner, "proxy=");
        self.admin = banner_addr(&banner, "admin=");
        self.banner = banner;
    }

    /// Stops the gateway (SIGTERM, bounded wait) and starts it again in the same directory
    /// with the same config file, as an operator's restart would. Listeners on port 0 get
    /// new ports: read [`Gateway::proxy`] and [`Gateway::admin`] again.
    pub fn restart(&mut self) {
        self.sigterm();
        let st = self.wait_exit(TIMEOUT);
        assert!(st.success(), "gateway exited with {st} on SIGTERM");
        self.spawn();
    }

    /// Starts the process again after it exited ([`Gateway::sigterm`] and
    /// [`Gateway::wait_exit`]), in the same directory with the same config and environment.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the gateway is still running");
        self.spawn();
    }

    /// Starts the gateway with `doc` as its whole config file (nothing added: set
    /// `proxy.listen` and `admin.listen`, e.g. to `127.0.0.1:0`).
    pub fn start_with_config(doc: &str) -> Self {
        Self::spawn_in(tempfile::tempdir().expect("tempdir"), doc)
    }

    /// The gateway's working directory (holds `data/`, the config, `stderr.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file the gateway was started with.
    pub fn config_path(&self) -> &Path {
        &self.cfg
    }

    /// Stdout lines printed after the banner so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.lines.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The first-run `demo` agent's secret, parsed (bounded wait) from the
    /// `export HTTP_PROXY=http://demo:SECRET@ADDR ...` line after the banner.
    pub fn demo_secret(&self) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            for l in self.stdout_lines() {
                let Some(rest) = l.trim().strip_prefix("export HTTP_PROXY=http://demo:") else {
                    continue;
                };
                if let Some((secret, _)) = rest.split_once('@') {
                    return secret.to_owned();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no demo secret on stdout: {:?}",
                self.stdout_lines()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs `portcullis ARGS` in the gateway's directory (so relative store and
    /// key paths resolve to the gateway's) with proxy variables cleared.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.current_dir(self.dir.path())
            .args(args)
            .stdin(Stdio::null());
        for k in PROXY_ENV {
            cmd.env_remove(k);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.output().expect("run portcullis")
    }

    /// Runs `portcullis ARGS --config CONFIG`; panics with its output unless it
    /// exits 0; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let cfg = self.cfg.display().to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", cfg.as_str()]);
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "portcullis {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// `portcullis agent create ID --tenant T [EXTRA...]`; returns the secret
    /// (the second stdout line).
    pub fn create_agent(&self, id: &str, tenant: &str, extra: &[&str]) -> String {
        let mut args = vec!["agent", "create", id, "--tenant", tenant];
        args.extend_from_slice(extra);
        let out = self.cli_ok(&args);
        out.lines()
            .nth(1)
            .map(|l| l.trim().to_owned())
            .unwrap_or_else(|| panic!("no secret in: {out}"))
    }

    /// `portcullis apikey create --tenant T --role R`; returns the key (second line).
    pub fn create_api_key(&self, tenant: &str, role: &str) -> String {
        let out = self.cli_ok(&["apikey", "create", "--tenant", tenant, "--role", role]);
        out.lines()
            .nth(1)
            .map(|l| l.trim().to_owned())
            .unwrap_or_else(|| panic!("no key in: {out}"))
    }

    /// An admin API request with `Authorization: Bearer KEY` (when given) and a JSON body.
    pub fn admin_call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> RawResponse {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n");
        if let Some(k) = key {
            req.push_str(&format!("Authorization: Bearer {k}\r\n"));
        }
        let body = body
            .map(|b| serde_json::to_vec(b).expect("json"))
            .unwrap_or_default();
        if !body.is_empty() || method != "GET" {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(&body);
        send_raw(self.admin, &bytes)
    }

    /// Polls `pred` against the gateway (bounded by [`TIMEOUT`]), returning its
    /// last value once it holds; panics with `what` and the stderr log otherwise.
    pub fn eventually<T: std::fmt::Debug>(
        &self,
        what: &str,
        f: impl Fn() -> T,
        pred: impl Fn(&T) -> bool,
    ) -> T {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let v = f();
            if pred(&v) {
                return v;
            }
            if Instant::now() >= deadline {
                panic!("timed out waiting until {what}; last: {v:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the gateway wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The proxy URL for clients (`http://127.0.0.1:PORT`).
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy)
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let st = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -TERM failed");
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                self.child = None;
                return st;
            }
            if Instant::now() >= deadline {
                panic!("portcullis did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Admin `GET path`.
    pub fn admin_get(&self, path: &str) -> RawResponse {
        send_raw(
            self.admin,
            format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    }

    /// The Prometheus exposition from the admin listener.
    pub fn metrics(&self) -> Metrics {
        let r = self.admin_get("/metrics");
        assert_eq!(r.status, 200, "metrics: {r:?}");
        Metrics(String::from_utf8(r.body).expect("utf-8 metrics"))
    }

    /// The audit records in `data/audit.jsonl` (the default `jsonl` sink) once `pred` holds
    /// for them (bounded).
    pub fn audit_until(
        &self,
        what: &str,
        pred: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let path = self.dir().join("data/audit.jsonl");
        let read = || -> Vec<serde_json::Value> {
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        };
        super::util::wait_until(what, || pred(&read()));
        read()
    }

    /// Polls `/metrics` until `pred` holds (bounded); returns the last scrape.
    /// Used where the gateway updates a metric just after the client saw the
    /// response end (tunnel close, body end).
    pub fn metrics_until(&self, what: &str, pred: impl Fn(&Metrics) -> bool) -> Metrics {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let m = self.metrics();
            if pred(&m) {
                return m;
            }
            if Instant::now() >= deadline {
                panic!("metrics never satisfied {what}:\n{}", m.0);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- portcullis stderr ----\n{}", self.stderr());
        }
    }
}

fn banner_addr(banner: &str, key: &str) -> SocketAddr {
    banner
        .split_whitespace()
        .find_map(|t| t.strip_prefix(key))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("banner has no {key}: {banner}"))
}

/// A Prometheus text exposition.
#[derive(Debug, Clone)]
pub struct Metrics(pub String);

impl Metrics {
    /// Sum of the samples of `name` whose labels include every pair in `labels`.
    /// `None` when no sample matches.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for line in self.0.lines() {
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = match line.rsplit_once(' ') {
                Some(x) => x,
                None => continue,
            };
            let (n, lbls) = match series.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            if n != name {
                continue;
            }
            if labels
                .iter()
                .all(|(k, v)| lbls.get(*k).map(String::as_str) == Some(*v))
            {
                let v: f64 = value.parse().expect("metric value");
                found = Some(found.unwrap_or(0.0) + v);
            }
        }
        found
    }

    /// Like [`Metrics::get`] with absent meaning zero.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for pair in s.split("\",") {
        if let Some((k, v)) = pair.split_once("=\"") {
            m.insert(k.trim().to_owned(), v.trim_end_matches('"').to_owned());
        }
    }
    m
}
