//! Policies from an OPA-compatible bundle server (`policy.bundle_url`): a local server
//! answering with ETags and long polling; a new revision applies within the poll, broken
//! bundles (not gzip, too large, unsafe paths, no manifest, not compiling) keep the last good
//! set, a restart with the server down uses the persisted bundle, and every audit record
//! carries the manifest's revision. Every wait is bounded; nothing asserts on timing.

use crate::common::server::{OBody, TestServer};
use crate::common::*;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use portcullis_policy::build_bundle;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Lets agents reach the local origin except under the prefix the bundle's data names.
const POLICY: &str = r#"package portcullis.policy.bundled

import rego.v1

allow if input.request.host == "127.0.0.1"

deny contains "path is off limits" if startswith(input.request.path, data.acme.denied_prefix)
"#;

fn bundle(revision: &str, denied_prefix: &str) -> Vec<u8> {
    let data = serde_json::json!({ "denied_prefix": denied_prefix }).to_string();
    build_bundle(
        revision,
        &["portcullis", "acme"],
        &[
            ("/portcullis/bundled.rego", POLICY.as_bytes()),
            ("/acme/data.json", data.as_bytes()),
        ],
    )
}

/// What the server serves, and what it was asked.
#[derive(Default)]
struct Served {
    bytes: Vec<u8>,
    etag: String,
    /// `(If-None-Match, Prefer)` of every request.
    asked: Vec<(Option<String>, Option<String>)>,
}

/// A bundle server: `ETag` on every bundle, `304` for a current `If-None-Match`, and long
/// polling (`Prefer: wait=N` holds the request until a new bundle is published, at most N s),
/// announced with the OPA media type.
struct BundleServer {
    server: TestServer,
    served: Arc<Mutex<Served>>,
    published: tokio::sync::watch::Sender<u64>,
}

impl BundleServer {
    fn start(bytes: Vec<u8>, etag: &str) -> Self {
        Self::serve(bytes, etag, true)
    }

    /// `long_poll`: announce long polling and honour `Prefer: wait=N`; else a plain server.
    fn serve(bytes: Vec<u8>, etag: &str, long_poll: bool) -> Self {
        let served = Arc::new(Mutex::new(Served {
            bytes,
            etag: etag.to_owned(),
            asked: Vec::new(),
        }));
        let (published, rx) = tokio::sync::watch::channel(0u64);
        let state = served.clone();
        let server = TestServer::start(
            None,
            Arc::new(move |req| {
                let state = state.clone();
                let mut rx = rx.clone();
                Box::pin(async move {
                    let header = |n: &str| {
                        req.headers()
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    let (inm, prefer) = (header("if-none-match"), header("prefer"));
                    let wait = prefer
                        .as_deref()
                        .and_then(|p| p.strip_prefix("wait="))
                        .and_then(|s| s.parse::<u64>().ok())
                        .map_or(Duration::ZERO, |s| Duration::from_secs(s.min(30)));
                    rx.borrow_and_update();
                    let current = {
                        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                        s.asked.push((inm.clone(), prefer));
                        s.etag.clone()
                    };
                    if long_poll && inm.as_deref() == Some(current.as_str()) && !wait.is_zero() {
                        let _ = tokio::time::timeout(wait, rx.changed()).await;
                    }
                    let (bytes, etag) = {
                        let s = state.lock().unwrap_or_else(|p| p.into_inner());
                        (s.bytes.clone(), s.etag.clone())
                    };
                    let b = Response::builder()
                        .header(
                            "content-type",
                            if long_poll {
                                "application/vnd.openpolicyagent.bundles"
                            } else {
                                "application/gzip"
                            },
                        )
                        .header("etag", &etag);
                    let r: Response<OBody> = if inm.as_deref() == Some(etag.as_str()) {
                        b.status(StatusCode::NOT_MODIFIED)
                            .body(Full::new(Bytes::new()).boxed())
                    } else {
                        b.status(StatusCode::OK)
                            .body(Full::new(Bytes::from(bytes)).boxed())
                    }
                    .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()));
                    r
                })
            }),
        );
        Self {
            server,
            served,
            published,
        }
    }

    fn url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/bundles/portcullis.tar.gz",
            self.server.port()
        )
    }

    /// Serves `bytes` under `etag` from now on and wakes the held long polls.
    fn publish(&self, bytes: Vec<u8>, etag: &str) {
        {
            let mut s = self.served.lock().unwrap_or_else(|p| p.into_inner());
            s.bytes = bytes;
            s.etag = etag.to_owned();
        }
        self.published.send_modify(|n| *n += 1);
    }

    fn asked(&self) -> Vec<(Option<String>, Option<String>)> {
        self.served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .asked
            .clone()
    }
}

struct Setup {
    gw: Gateway,
    origin: Origin,
    secret: String,
    key: String,
}

impl Setup {
    fn start(url: &str) -> Self {
        let origin = Origin::start();
        let gw = Gateway::launch(GatewayOpts {
            auth: true,
            proxy_lines: loopback_proxy_section(&[origin.port()]),
            rest: format!(
                "\n[policy]\nbundle_url = \"{url}\"\nbundle_poll = \"1s\"\n\
                 bundle_long_poll = \"10s\"\nbundle_max_bytes = 8192\n"
            ),
            files: Vec::new(),
        });
        let secret = gw.demo_secret();
        let key = gw.create_api_key("default", "viewer");
        Self {
            gw,
            origin,
            secret,
            key,
        }
    }

    /// GET `path` on the origin through the proxy as the demo agent: the status.
    fn status(&self, path: &str) -> u16 {
        let out = curl(&[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-x",
            &format!("http://demo:{}@{}", self.secret, self.gw.proxy),
            &self.origin.url(path),
        ]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }

    /// Waits until `/echo/a` and `/echo/b` answer `(a, b)`.
    fn until_statuses(&self, what: &str, a: u16, b: u16) {
        self.gw.eventually(
            what,
            || (self.status("/echo/a"), self.status("/echo/b")),
            |s| *s == (a, b),
        );
    }

    fn reload(&self) -> Value {
        let r = self
            .gw
            .admin_call("GET", "/v1/policies", Some(&self.key), None);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["reload"].clone()
    }

    /// The audit records of the demo agent's requests to `path` (newest first).
    fn records(&self, path: &str) -> Vec<Value> {
        let r = self.gw.admin_call(
            "GET",
            "/v1/decisions?agent_id=demo&limit=200",
            Some(&self.key),
            None,
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["decisions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|d| d["path"].as_str() == Some(path))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `n` characters that gzip cannot shrink much.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b"0123456789abcdefghijklmnopqrstuvwxyz"[(x % 36) as usize]
        })
        .collect()
}

#[test]
fn a_new_revision_applies_within_the_poll_and_broken_bundles_keep_the_last_good() {
    let server = BundleServer::start(bundle("rev-1", "/echo/a"), "\"e1\"");
    let s = Setup::start(&server.url());
    assert!(s.gw.banner.contains("revision rev-1"), "{}", s.gw.banner);
    assert_eq!(s.status("/echo/a"), 403);
    assert_eq!(s.status("/echo/b"), 200);
    assert_eq!(s.reload()["revision"], "rev-1");

    // Every record says which revision decided it, in /v1/decisions.
    let recs = s.gw.eventually(
        "the records are written",
        || s.records("/echo/a").len() + s.records("/echo/b").len(),
        |n| *n >= 2,
    );
    assert_eq!(recs, 2);
    for path in ["/echo/a", "/echo/b"] {
        for r in s.records(path) {
            assert_eq!(r["policy_revision"], "rev-1", "{r}");
        }
    }

    // The gateway long-polls with the ETag it holds; a new revision applies at once.
    s.gw.eventually(
        "the gateway long-polls with its ETag",
        || server.asked(),
        |a| {
            a.iter().any(|(inm, prefer)| {
                inm.as_deref() == Some("\"e1\"") && prefer.as_deref() == Some("wait=10")
            })
        },
    );
    server.publish(bundle("rev-2", "/echo/b"), "\"e2\"");
    s.until_statuses("rev-2 applies", 200, 403);
    assert_eq!(s.reload()["revision"], "rev-2");
    assert!(
        s.gw.stderr().contains("policy bundle applied"),
        "{}",
        s.gw.stderr()
    );
    let r = s.gw.eventually(
        "a record decided by rev-2",
        || {
            s.records("/echo/b")
                .into_iter()
                .find(|r| r["policy_revision"] == "rev-2")
        },
        Option::is_some,
    );
    assert_eq!(r.map(|r| r["verdict"].clone()), Some(Value::from("deny")));

    // Broken bundles, each refused with a log line naming why; rev-2 keeps deciding.
    let traversal = build_bundle(
        "rev-evil",
        &[""],
        &[("../../etc/portcullis.rego", POLICY.as_bytes())],
    );
    let no_compile = build_bundle(
        "rev-bad",
        &["portcullis"],
        &[(
            "/portcullis/p.rego",
            b"package portcullis.policy.p\nallow if {\n",
        )],
    );
    let outside_roots = build_bundle(
        "rev-roots",
        &["portcullis"],
        &[
            ("/portcullis/bundled.rego", POLICY.as_bytes()),
            ("/acme/data.json", br#"{"denied_prefix": "/"}"#),
        ],
    );
    let oversized = build_bundle("rev-big", &[""], &[("/big.rego", &noise(40_000))]);
    assert!(oversized.len() > 8192, "{}", oversized.len());
    let no_manifest = gz_without_manifest(&[("p.rego", POLICY.as_bytes())]);
    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "not gzip",
            b"this is not a bundle".to_vec(),
            "not a readable .tar.gz bundle",
        ),
        ("path traversal", traversal, "unsafe path"),
        ("no manifest", no_manifest, ".manifest: missing"),
        ("outside roots", outside_roots, "outside the bundle's roots"),
        (
            "oversized",
            oversized,
            "larger than policy.bundle_max_bytes",
        ),
        ("not compiling", no_compile, "policy bundle refused"),
    ];
    for (i, (what, bytes, log)) in cases.into_iter().enumerate() {
        let etag = format!("\"bad-{i}\"");
        server.publish(bytes, &etag);
        s.gw.eventually(
            &format!("the {what} bundle is refused with a log line"),
            || {
                let e = s.gw.stderr();
                (
                    e.contains(log),
                    e.matches("keeping the last good set").count(),
                )
            },
            |(logged, refusals)| *logged && *refusals > i,
        );
        assert_eq!(s.reload()["revision"], "rev-2", "{what}");
        assert_eq!(s.status("/echo/b"), 403, "{what}");
        assert_eq!(s.status("/echo/a"), 200, "{what}");
    }
    let reload = s.reload();
    assert_eq!(reload["ok"], false, "{reload}");
    assert!(
        reload["errors"].as_array().is_some_and(|a| !a.is_empty()),
        "{reload}"
    );

    // A good bundle after the broken ones applies.
    server.publish(bundle("rev-3", "/echo/nothing"), "\"e3\"");
    s.until_statuses("rev-3 applies", 200, 200);
    assert_eq!(s.reload()["revision"], "rev-3");
    assert_eq!(s.reload()["ok"], true);

    // The JSON Lines sink carries the revision too (everything is written by SIGTERM).
    let mut gw = s.gw;
    gw.sigterm();
    assert!(gw.wait_exit(TIMEOUT).success());
    let text = std::fs::read_to_string(gw.dir().join("data/audit.jsonl")).expect("audit.jsonl");
    let revisions: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with("/echo/")))
        .filter_map(|r| r["policy_revision"].as_str().map(str::to_owned))
        .collect();
    for rev in ["rev-1", "rev-2", "rev-3"] {
        assert!(revisions.iter().any(|r| r == rev), "{rev} in {revisions:?}");
    }
    assert!(
        revisions.iter().all(|r| r.starts_with("rev-")),
        "{revisions:?}"
    );
}

#[test]
fn a_server_without_long_polling_is_polled_periodically() {
    let server = BundleServer::serve(bundle("p-1", "/echo/a"), "\"p1\"", false);
    let s = Setup::start(&server.url());
    assert_eq!(s.status("/echo/a"), 403);
    s.gw.eventually("a conditional poll", || server.asked().len(), |n| *n >= 3);
    server.publish(bundle("p-2", "/echo/b"), "\"p2\"");
    s.until_statuses("p-2 applies on a periodic poll", 200, 403);
    let asked = server.asked();
    // The first request at start is unconditional; every poll after it carries the ETag, and
    // none asks to be held open (the server never announced long polling).
    assert_eq!(asked[0].0, None);
    assert!(asked[1..].iter().all(|(inm, _)| inm.is_some()), "{asked:?}");
    assert!(
        asked.iter().all(|(_, prefer)| prefer.is_none()),
        "{asked:?}"
    );
    assert_eq!(s.reload()["revision"], "p-2");
}

#[test]
fn a_restart_with_the_server_down_uses_the_persisted_bundle() {
    let server = BundleServer::start(bundle("rev-7", "/echo/a"), "\"e7\"");
    let mut s = Setup::start(&server.url());
    assert!(s.gw.banner.contains("revision rev-7"), "{}", s.gw.banner);
    assert_eq!(s.status("/echo/a"), 403);
    let persisted = s.gw.dir().join("data/policy-bundle.tar.gz");
    assert_eq!(
        std::fs::read(&persisted).expect("the bundle is persisted"),
        bundle("rev-7", "/echo/a")
    );

    drop(server);
    s.gw.restart();
    assert!(s.gw.banner.contains("revision rev-7"), "{}", s.gw.banner);
    assert!(s.gw.stderr().contains("using the persisted bundle"));
    assert_eq!(s.status("/echo/a"), 403);
    assert_eq!(s.status("/echo/b"), 200);
    let r = s.gw.eventually(
        "the record after the restart",
        || s.records("/echo/b").first().cloned(),
        Option::is_some,
    );
    assert_eq!(
        r.map(|r| r["policy_revision"].clone()),
        Some(Value::from("rev-7"))
    );
    assert_eq!(s.reload()["revision"], "rev-7");
}

#[test]
fn a_start_with_the_server_down_and_nothing_persisted_fails_with_how_to_fix() {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("portcullis.toml");
    std::fs::write(
        &cfg,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [policy]\nbundle_url = \"http://127.0.0.1:{port}/b.tar.gz\"\n"
        ),
    )
    .expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .current_dir(dir.path())
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .expect("run portcullis");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no persisted policy bundle"), "{err}");
}

/// A gzipped tarball of `files` without a manifest.
fn gz_without_manifest(files: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_path(path).expect("path");
        h.set_cksum();
        tar.append(&h, *data).expect("append");
    }
    tar.into_inner().and_then(|gz| gz.finish()).expect("gzip")
}
