//! MCP tool calls governed per JSON-RPC message (issue 17), end to end with the official
//! SDKs: a local MCP server built with the Python `mcp` package (streamable HTTP over TLS,
//! JSON or SSE answers) behind the real gateway, called by the Python `mcp` client and by the
//! TypeScript `@modelcontextprotocol/sdk` client on Node, each configured by environment only
//! (proxy and CA variables). The gateway's policy is the shipped `mcp_tools.rego`.
//!
//! The server logs, per POST, the SHA-256 of the request body it received and of the answer
//! it sent; the clients log the same for what they sent and received, so "byte-identical"
//! and "never reached the server" are checked on hashes of the real bytes.

use crate::common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

/// The shipped example policy, used as is.
const MCP_TOOLS: &str = include_str!("../../../../config/policies/mcp_tools.rego");

/// Tunnels to the test server's host (a CONNECT carries no MCP message).
const TUNNELS: &str = "package portcullis.policy.tunnels\n\nimport rego.v1\n\n\
    allow if {\n\tinput.kind == \"connect\"\n\tinput.request.host == \"localhost\"\n}\n";

/// The MCP server: FastMCP with four tools, streamable HTTP on `127.0.0.1:0` over TLS,
/// answering with JSON (`json`) or SSE (`sse`). Prints its port, then serves. Each POST's
/// request and answer body hashes are appended to the log file.
const SERVER: &str = r#"
import sys, json, hashlib, socket, asyncio, uvicorn
from mcp.server.fastmcp import FastMCP
cert, key, log, mode = sys.argv[1:5]
srv = FastMCP("files", json_response=(mode == "json"))

@srv.tool()
def read_file(path: str) -> str:
    """Reads a file."""
    return "contents of " + path

@srv.tool()
def list_directory(path: str) -> str:
    """Lists a directory."""
    return "entries of " + path

@srv.tool()
def write_file(path: str, text: str) -> str:
    """Writes a file."""
    return "wrote " + path

@srv.tool()
def delete_repository(name: str) -> str:
    """Deletes a repository."""
    return "deleted " + name

class Tap:
    def __init__(self, app):
        self.app = app
    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        req, resp = hashlib.sha256(), hashlib.sha256()
        async def rx():
            m = await receive()
            if m["type"] == "http.request":
                req.update(m.get("body", b""))
            return m
        async def tx(m):
            if m["type"] == "http.response.body":
                resp.update(m.get("body", b""))
                if not m.get("more_body", False):
                    with open(log, "a") as f:
                        f.write(json.dumps({"req": req.hexdigest(), "resp": resp.hexdigest()}) + "\n")
            await send(m)
        await self.app(scope, rx, tx)

sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(128)
print(sock.getsockname()[1], flush=True)
config = uvicorn.Config(Tap(srv.streamable_http_app()), ssl_certfile=cert, ssl_keyfile=key,
                        log_level="warning", lifespan="on")
asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
"#;

/// The Python client: connects with `streamable_http_client` (httpx reads HTTPS_PROXY and
/// SSL_CERT_FILE), initializes, lists tools, calls each `(tool, arguments)` of argv[2] (JSON)
/// and prints what each call gave plus the hashes of every POST it made.
const PY_CLIENT: &str = r#"
import sys, json, hashlib, asyncio, httpx
from mcp import ClientSession
from mcp.shared.exceptions import McpError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
url, calls = sys.argv[1], json.loads(sys.argv[2])
exchanges = []

async def tap(response):
    if response.request.method != "POST":
        return
    body = response.request.content
    msg = json.loads(body)
    req, h, inner = hashlib.sha256(body).hexdigest(), hashlib.sha256(), response.stream
    entry = {"method": msg.get("method"), "tool": (msg.get("params") or {}).get("name"),
             "req": req, "status": response.status_code,
             "blocked": response.headers.get("x-portcullis-blocked")}
    # The SDK stops reading an SSE answer at its response event and closes it: what was
    # read by then is the answer.
    def done():
        if "resp" not in entry:
            entry["resp"] = h.hexdigest()
            exchanges.append(entry)
    class Tee(httpx.AsyncByteStream):
        async def __aiter__(self):
            async for chunk in inner:
                h.update(chunk)
                yield chunk
            done()
        async def aclose(self):
            done()
            await inner.aclose()
    response.stream = Tee()

async def main():
    out = {"calls": []}
    async with create_mcp_http_client() as http, \
            streamable_http_client(url, http_client=http) as (r, w, _):
        http.event_hooks["response"].append(tap)
        async with ClientSession(r, w) as s:
            await s.initialize()
            out["tools"] = sorted(t.name for t in (await s.list_tools()).tools)
            for name, args in calls:
                try:
                    res = await s.call_tool(name, args)
                    out["calls"].append({"isError": res.isError,
                                         "text": " ".join(c.text for c in res.content if c.type == "text")})
                except McpError as e:
                    out["calls"].append({"error": e.error.message, "code": e.error.code,
                                         "data": e.error.data})
    out["exchanges"] = exchanges
    print(json.dumps(out))

asyncio.run(main())
"#;

/// The Node client: the SDK's StreamableHTTPClientTransport with undici's fetch and
/// EnvHttpProxyAgent (HTTPS_PROXY; the CA comes from NODE_EXTRA_CA_CERTS), the same steps as
/// the Python client.
const NODE_CLIENT: &str = r#"
import { createHash } from 'node:crypto';
import { fetch as ufetch, EnvHttpProxyAgent } from 'undici';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
const [url, callsJson] = process.argv.slice(1);
const calls = JSON.parse(callsJson);
const dispatcher = new EnvHttpProxyAgent();
const exchanges = [];
async function tapped(input, init = {}) {
  const res = await ufetch(input, { ...init, dispatcher });
  if ((init.method || 'GET') !== 'POST' || !res.body) return res;
  const body = typeof init.body === 'string' ? init.body : '';
  const msg = JSON.parse(body);
  const h = createHash('sha256');
  const entry = { method: msg.method ?? null, tool: msg.params?.name ?? null,
    req: createHash('sha256').update(body).digest('hex'), status: res.status,
    blocked: res.headers.get('x-portcullis-blocked') };
  const tee = new TransformStream({
    transform(chunk, ctl) { h.update(chunk); ctl.enqueue(chunk); },
    flush() { entry.resp = h.digest('hex'); exchanges.push(entry); },
  });
  return new Response(res.body.pipeThrough(tee), { status: res.status, statusText: res.statusText, headers: res.headers });
}
const transport = new StreamableHTTPClientTransport(new URL(url), { fetch: tapped });
const client = new Client({ name: 'portcullis-e2e', version: '1.0.0' });
await client.connect(transport);
const out = { calls: [] };
out.tools = (await client.listTools()).tools.map(t => t.name).sort();
for (const [name, args] of calls) {
  try {
    const r = await client.callTool({ name, arguments: args });
    out.calls.push({ isError: r.isError ?? false, text: r.content.filter(c => c.type === 'text').map(c => c.text).join(' ') });
  } catch (e) {
    out.calls.push({ error: e.message, code: e.code ?? null, data: e.data ?? null });
  }
}
await transport.terminateSession();
await client.close();
out.exchanges = exchanges;
console.log(JSON.stringify(out));
"#;

/// A test CA and a `localhost` leaf it issued, as PEM files.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "MCP Test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf_params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf");
    let leaf = leaf_params.signed_by(&leaf_key, &ca).expect("leaf cert");
    let p = |n: &str, data: String| {
        let path = dir.path().join(n);
        std::fs::write(&path, data).expect("write pem");
        path
    };
    Pki {
        ca: p("ca.pem", ca.pem()),
        cert: p("leaf.pem", leaf.pem()),
        key: p("leaf.key", leaf_key.serialize_pem()),
        _dir: dir,
    }
}

/// The Python MCP server process; killed on drop.
struct McpServer {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl McpServer {
    fn start(pki: &Pki, mode: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("exchanges.jsonl");
        let mut cmd = Command::new(mcp_python());
        cmd.arg("-c")
            .arg(SERVER)
            .arg(&pki.cert)
            .arg(&pki.key)
            .arg(&log)
            .arg(mode)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("stderr.log")).expect("stderr"),
            ));
        clear_proxy_env(&mut cmd);
        let mut child = cmd.spawn().expect("spawn the MCP server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(TIMEOUT).unwrap_or_default();
        let port = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "the MCP server printed no port ({line:?}); stderr:\n{}",
                std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
            )
        });
        Self {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}/mcp", self.port)
    }

    /// Request hash → answer hash of every POST the server answered.
    fn exchanges(&self) -> HashMap<String, String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| {
                Some((
                    v["req"].as_str()?.to_owned(),
                    v["resp"].as_str()?.to_owned(),
                ))
            })
            .collect()
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clear_proxy_env(cmd: &mut Command) {
    for k in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
    ] {
        cmd.env_remove(k);
    }
}

/// The interpreter with the `mcp` package; fails with how to get it.
fn mcp_python() -> &'static str {
    let py = python();
    let ok = Command::new(py)
        .args(["-c", "import mcp, uvicorn"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{py} cannot import `mcp`; run the suite through scripts/test.sh (it installs \
         scripts/requirements-test.txt into a venv and sets PORTCULLIS_TEST_PYTHON)"
    );
    py
}

/// tests/node, with its node_modules; fails with how to get them.
fn node_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/node");
    assert!(
        dir.join("node_modules/@modelcontextprotocol/sdk").is_dir()
            && dir.join("node_modules/undici").is_dir(),
        "{} has no node_modules; run the suite through scripts/test.sh (scripts/services/node.sh \
         runs `npm ci` there)",
        dir.display()
    );
    dir
}

/// A gateway intercepting `localhost`, trusting the server's CA, with the shipped MCP policy,
/// the test server registered as `files` on `/mcp`, and `mcp` as more `[mcp]` keys.
fn gateway(server: &McpServer, pki: &Pki, mcp: &str) -> Gateway {
    Gateway::launch(GatewayOpts {
        proxy_lines: loopback_proxy_section(&[server.port]),
        rest: format!(
            "\n[tls]\nintercept = [\"localhost\"]\nupstream_ca = [{ca:?}]\n\n\
             [policy]\ndir = \"{{DIR}}/policies\"\n\n\
             [mcp]\n{mcp}\n[[mcp.servers]]\nname = \"files\"\nhosts = [\"localhost\"]\npath = \"/mcp\"\n",
            ca = pki.ca.display().to_string(),
        ),
        files: vec![
            ("policies/mcp_tools.rego".into(), MCP_TOOLS.as_bytes().to_vec()),
            ("policies/tunnels.rego".into(), TUNNELS.as_bytes().to_vec()),
        ],
        auth: true,
    })
}

/// The proxy URL with the first-run `demo` agent's credentials: policy is evaluated for
/// authenticated agents only.
fn agent_proxy(gw: &Gateway) -> String {
    format!("http://demo:{}@{}", gw.demo_secret(), gw.proxy)
}

fn gateway_ca(gw: &Gateway) -> String {
    gw.dir().join("data/ca/ca.pem").display().to_string()
}

/// Runs the Python client with proxy and CA from the environment only.
fn python_client(gw: &Gateway, url: &str, calls: &Value) -> Value {
    let mut cmd = Command::new(mcp_python());
    cmd.arg("-c").arg(PY_CLIENT).arg(url).arg(calls.to_string());
    clear_proxy_env(&mut cmd);
    cmd.env("HTTPS_PROXY", agent_proxy(gw))
        .env("SSL_CERT_FILE", gateway_ca(gw));
    parse_client(cmd, "python")
}

/// Runs the Node client (ES module, resolved from tests/node) with proxy and CA from the
/// environment only.
fn node_client(gw: &Gateway, url: &str, calls: &Value) -> Value {
    let mut cmd = Command::new("node");
    cmd.current_dir(node_dir())
        .args(["--input-type=module", "-e", NODE_CLIENT])
        .arg(url)
        .arg(calls.to_string());
    clear_proxy_env(&mut cmd);
    cmd.env("HTTPS_PROXY", agent_proxy(gw))
        .env("NODE_EXTRA_CA_CERTS", gateway_ca(gw));
    parse_client(cmd, "node")
}

fn parse_client(mut cmd: Command, what: &str) -> Value {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run the {what} client: {e}"));
    assert!(
        out.status.success(),
        "{what} client failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{what} client output {text:?}: {e}"))
}

/// The calls every client makes: allowed; denied by the path rule; denied by the allow list.
fn calls() -> Value {
    json!([
        ["read_file", {"path": "/workspace/notes.md"}],
        ["read_file", {"path": "/etc/passwd"}],
        ["delete_repository", {"name": "portcullis"}],
    ])
}

/// The MCP records of the audit file so far.
fn mcp_records(gw: &Gateway) -> Vec<Value> {
    std::fs::read_to_string(gw.dir().join("data/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| !r["mcp"].is_null())
        .collect()
}

fn tool_records(gw: &Gateway, n: usize) -> Vec<Value> {
    gw.eventually(
        "the tool calls' records",
        || {
            mcp_records(gw)
                .into_iter()
                .filter(|r| r["mcp"]["method"] == "tools/call")
                .collect::<Vec<_>>()
        },
        |v| v.len() == n,
    )
}

/// The client's exchange for the `n`th tools/call.
fn tool_exchange(out: &Value, n: usize) -> Value {
    out["exchanges"]
        .as_array()
        .expect("exchanges")
        .iter()
        .filter(|e| e["method"] == "tools/call")
        .nth(n)
        .cloned()
        .unwrap_or_else(|| panic!("no tools/call exchange {n}: {out}"))
}

/// What every client must see for [`calls`] with `on_block = "error"`: the allowed result,
/// and two JSON-RPC errors carrying the policy's reason and decision.
fn assert_denials_are_errors(out: &Value, client_error_text: impl Fn(&Value) -> String) {
    let c = &out["calls"];
    assert_eq!(c[0]["isError"], false, "{out}");
    assert_eq!(c[0]["text"], "contents of /workspace/notes.md", "{out}");
    for (i, reason) in [
        (1, "read_file: path must be under /workspace/"),
        (
            2,
            "tool delete_repository is not allowed on files for this agent",
        ),
    ] {
        let text = client_error_text(&c[i]);
        assert!(
            text.contains(reason) && text.contains("policy mcp_tools"),
            "call {i}: {out}"
        );
        assert_eq!(c[i]["code"], -32003, "{out}");
        assert_eq!(c[i]["data"]["code"], "policy_denied", "{out}");
        assert_eq!(c[i]["data"]["policy"], "mcp_tools", "{out}");
        assert_eq!(c[i]["data"]["detail"], reason, "{out}");
        assert!(c[i]["data"]["decision_id"].is_string(), "{out}");
    }
}

/// The allowed call's answer is the server's bytes; the denied calls never reached it.
fn assert_bytes(out: &Value, server: &McpServer) {
    let seen = server.exchanges();
    let allowed = tool_exchange(out, 0);
    assert_eq!(allowed["status"], 200, "{allowed}");
    assert_eq!(
        seen.get(allowed["req"].as_str().unwrap_or_default()),
        Some(&allowed["resp"].as_str().unwrap_or_default().to_owned()),
        "the allowed call's answer differs from what the server sent: {out}"
    );
    for n in [1, 2] {
        let denied = tool_exchange(out, n);
        assert_eq!(denied["status"], 200, "{denied}");
        assert_eq!(denied["blocked"], "true", "{denied}");
        assert!(
            !seen.contains_key(denied["req"].as_str().unwrap_or_default()),
            "denied call {n} reached the server: {out}"
        );
    }
    // Everything else the server answered (initialize, tools/list unfiltered, notifications)
    // arrived as sent, except a filtered tools/list.
    for e in out["exchanges"].as_array().expect("exchanges") {
        let Some(sent) = seen.get(e["req"].as_str().unwrap_or_default()) else {
            continue;
        };
        if e["method"] != "tools/list" {
            assert_eq!(Some(sent.as_str()), e["resp"].as_str(), "{e}");
        }
    }
}

/// One record per tool call, with the server, tool, verdict, policy, the arguments' hash and
/// the answer's `isError`; and the per-tool metric.
fn assert_tool_audit(gw: &Gateway) {
    let recs = tool_records(gw, 3);
    let by = |tool: &str, verdict: &str| -> Vec<&Value> {
        recs.iter()
            .filter(|r| r["mcp"]["tool"] == tool && r["verdict"] == verdict)
            .collect()
    };
    let ok = by("read_file", "allow");
    assert_eq!(ok.len(), 1, "{recs:?}");
    assert_eq!(ok[0]["mcp"]["server"], "files");
    assert_eq!(ok[0]["mcp"]["is_error"], false, "{:?}", ok[0]);
    assert_eq!(ok[0]["policy"], "mcp_tools");
    let hash = ok[0]["mcp"]["arguments_sha256"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        hash,
        sha256_hex(br#"{"path":"/workspace/notes.md"}"#),
        "{:?}",
        ok[0]
    );
    assert!(
        ok[0]["mcp"]["arguments"].is_null(),
        "hash mode keeps no arguments"
    );
    let path = by("read_file", "deny");
    assert_eq!(path.len(), 1, "{recs:?}");
    assert_eq!(
        path[0]["reasons"],
        json!(["read_file: path must be under /workspace/"])
    );
    assert!(path[0]["mcp"]["is_error"].is_null(), "{:?}", path[0]);
    let del = by("delete_repository", "deny");
    assert_eq!(del.len(), 1, "{recs:?}");
    assert_eq!(del[0]["policy"], "mcp_tools");
    for r in &recs {
        assert_eq!(r["mcp"]["batch_size"], 1, "{r}");
        assert!(r["mcp"]["session"].is_string(), "session hash: {r}");
        assert!(r["decision_id"].is_string(), "{r}");
    }
    let m = gw.metrics_until("three tool calls counted", |m| {
        m.value("portcullis_mcp_calls_total", &[("server", "files")]) == 3.0
    });
    let calls = |tool: &str, verdict: &str| {
        m.value(
            "portcullis_mcp_calls_total",
            &[
                ("agent", "demo"),
                ("server", "files"),
                ("tool", tool),
                ("verdict", verdict),
            ],
        )
    };
    assert_eq!(calls("read_file", "allow"), 1.0, "{}", m.0);
    assert_eq!(calls("read_file", "deny"), 1.0, "{}", m.0);
    assert_eq!(calls("delete_repository", "deny"), 1.0, "{}", m.0);
}

#[test]
fn python_sdk_json_and_sse_allowed_denied_filtered_audited() {
    let pki = pki();
    for mode in ["json", "sse"] {
        let server = McpServer::start(&pki, mode);
        let gw = gateway(&server, &pki, "filter_tools_list = true");
        let out = python_client(&gw, &server.url(), &calls());
        assert_eq!(
            out["tools"],
            json!(["list_directory", "read_file"]),
            "{mode}: tools/list filtered: {out}"
        );
        assert_denials_are_errors(&out, |c| c["error"].as_str().unwrap_or_default().to_owned());
        assert_bytes(&out, &server);
        assert_tool_audit(&gw);
        // One record per JSON-RPC message: initialize, its notification and tools/list too.
        let recs = mcp_records(&gw);
        for method in ["initialize", "notifications/initialized", "tools/list"] {
            let n = recs.iter().filter(|r| r["mcp"]["method"] == method).count();
            assert_eq!(n, 1, "{mode}: {method}: {recs:?}");
        }
    }
}

#[test]
fn node_sdk_json_errors_and_sse_tool_results() {
    let pki = pki();
    // JSON answers, denials as JSON-RPC errors (the SDK throws McpError).
    let server = McpServer::start(&pki, "json");
    let gw = gateway(&server, &pki, "filter_tools_list = true");
    let out = node_client(&gw, &server.url(), &calls());
    assert_eq!(
        out["tools"],
        json!(["list_directory", "read_file"]),
        "{out}"
    );
    assert_denials_are_errors(&out, |c| c["error"].as_str().unwrap_or_default().to_owned());
    assert_bytes(&out, &server);
    assert_tool_audit(&gw);
    drop(gw);

    // SSE answers, unfiltered list, denials as CallToolResult { isError: true }.
    let server = McpServer::start(&pki, "sse");
    let gw = gateway(&server, &pki, "on_block = \"tool_result\"");
    let out = node_client(&gw, &server.url(), &calls());
    assert_eq!(
        out["tools"],
        json!([
            "delete_repository",
            "list_directory",
            "read_file",
            "write_file"
        ]),
        "{out}"
    );
    let c = &out["calls"];
    assert_eq!(c[0]["isError"], false, "{out}");
    assert_eq!(c[0]["text"], "contents of /workspace/notes.md");
    assert_eq!(c[1]["isError"], true, "{out}");
    assert!(
        c[1]["text"]
            .as_str()
            .is_some_and(|t| t.contains("read_file: path must be under /workspace/")),
        "{out}"
    );
    assert_eq!(c[2]["isError"], true, "{out}");
    assert!(
        c[2]["text"].as_str().is_some_and(|t| t
            .contains("tool delete_repository is not allowed on files for this agent")
            && t.contains("decision ")),
        "{out}"
    );
    assert_bytes(&out, &server);
    assert_tool_audit(&gw);
}

#[test]
fn shadow_mode_records_would_deny_and_lets_the_call_through() {
    let pki = pki();
    let server = McpServer::start(&pki, "json");
    // mcp_tools in shadow; a second policy allows the server so the shadow denials matter.
    let gw = Gateway::launch(GatewayOpts {
            proxy_lines: loopback_proxy_section(&[server.port]),
            rest: format!(
                "\n[tls]\nintercept = [\"localhost\"]\nupstream_ca = [{:?}]\n\n\
                 [policy]\ndir = \"{{DIR}}/policies\"\n\n\
                 [[policy.bindings]]\npolicy = \"mcp_tools\"\nmode = \"shadow\"\n\n\
                 [[mcp.servers]]\nname = \"files\"\nhosts = [\"localhost\"]\npath = \"/mcp\"\n",
                pki.ca.display().to_string()
            ),
            auth: true,
            files: vec![
            ("policies/mcp_tools.rego".into(), MCP_TOOLS.as_bytes().to_vec()),
            ("policies/tunnels.rego".into(), TUNNELS.as_bytes().to_vec()),
            (
                "policies/open.rego".into(),
                b"package portcullis.policy.open\n\nimport rego.v1\n\nallow if input.mcp.server == \"files\"\n"
                    .to_vec(),
            ),
        ],
    });
    let out = python_client(
        &gw,
        &server.url(),
        &json!([["delete_repository", {"name": "portcullis"}]]),
    );
    assert_eq!(out["calls"][0]["isError"], false, "{out}");
    assert_eq!(out["calls"][0]["text"], "deleted portcullis", "{out}");
    assert_bytes_passed(&out, &server);
    let recs = tool_records(&gw, 1);
    assert_eq!(recs[0]["verdict"], "would_deny", "{recs:?}");
    assert_eq!(recs[0]["would_deny"], json!(["mcp_tools"]), "{recs:?}");
    assert_eq!(recs[0]["mcp"]["tool"], "delete_repository");
    assert_eq!(recs[0]["mcp"]["is_error"], false);
    let m = gw.metrics_until("the shadow call counted", |m| {
        m.value(
            "portcullis_mcp_calls_total",
            &[("tool", "delete_repository"), ("verdict", "would_deny")],
        ) == 1.0
    });
    assert_eq!(
        m.value("portcullis_mcp_calls_total", &[("verdict", "deny")]),
        0.0
    );
}

/// Every POST the client made reached the server and came back byte for byte.
fn assert_bytes_passed(out: &Value, server: &McpServer) {
    let seen = server.exchanges();
    for e in out["exchanges"].as_array().expect("exchanges") {
        assert_eq!(
            seen.get(e["req"].as_str().unwrap_or_default()),
            Some(&e["resp"].as_str().unwrap_or_default().to_owned()),
            "{e}"
        );
    }
}

/// `curl` through the gateway to the MCP endpoint: POST `body` with extra headers; returns
/// (status, body).
fn post(gw: &Gateway, server: &McpServer, body: &[u8], headers: &[&str]) -> (u16, Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_file(dir.path(), "body", body);
    let ca = gateway_ca(gw);
    let url = server.url();
    let proxy = agent_proxy(gw);
    let data = format!("@{}", file.display());
    let mut args = vec![
        "-x",
        proxy.as_str(),
        "--cacert",
        ca.as_str(),
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-H",
        "content-type: application/json",
        "-H",
        "accept: application/json, text/event-stream",
        "--data-binary",
        data.as_str(),
    ];
    for h in headers {
        args.extend(["-H", h]);
    }
    args.push(url.as_str());
    let out = curl(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or_else(|| panic!("{out:?}"));
    let status = code.trim().parse().unwrap_or_else(|_| panic!("{out:?}"));
    let v = serde_json::from_str(body).unwrap_or_else(|e| panic!("body {body:?}: {e}"));
    (status, v)
}

fn call(id: u64, tool: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": args}})
}

#[test]
fn batches_spoofed_headers_and_adversarial_bodies_are_refused_never_passed() {
    let pki = pki();
    let server = McpServer::start(&pki, "json");
    let gw = gateway(&server, &pki, "max_batch = 8\nmax_depth = 32");
    let reached = || server.exchanges().len();

    // A batch with one denied call is refused whole, in its shape, each id answered.
    let batch = json!([
        call(1, "read_file", json!({"path": "/workspace/a"})),
        call(2, "delete_repository", json!({"name": "x"})),
    ]);
    let (status, v) = post(&gw, &server, batch.to_string().as_bytes(), &[]);
    assert_eq!(status, 200, "{v}");
    let answers = v.as_array().expect("a batch answer is an array");
    assert_eq!(answers.len(), 2, "{v}");
    for (a, id) in answers.iter().zip([1, 2]) {
        assert_eq!(a["id"], id, "{v}");
        assert_eq!(a["error"]["code"], -32003, "{v}");
        assert_eq!(a["error"]["data"]["denied_index"], 1, "{v}");
    }
    let recs = gw.eventually(
        "both batch records",
        || {
            mcp_records(&gw)
                .into_iter()
                .filter(|r| r["mcp"]["batch_size"] == 2)
                .collect::<Vec<_>>()
        },
        |r| r.len() == 2,
    );
    assert!(recs.iter().all(|r| r["verdict"] == "deny"), "{recs:?}");
    let first = recs
        .iter()
        .find(|r| r["mcp"]["batch_index"] == 0)
        .expect("message 0");
    assert_eq!(first["mcp"]["tool"], "read_file", "{first}");
    assert_eq!(
        first["reasons"],
        json!(["refused with its batch: message 1 was denied: \
                tool delete_repository is not allowed on files for this agent"]),
        "{first}"
    );

    // A spoofed Mcp-Name: the header names an allowed tool, the body calls another.
    let body = call(3, "delete_repository", json!({"name": "x"})).to_string();
    let (status, v) = post(
        &gw,
        &server,
        body.as_bytes(),
        &["Mcp-Method: tools/call", "Mcp-Name: read_file"],
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], -32001, "{v}");
    assert_eq!(v["error"]["data"]["code"], "mcp_header_mismatch", "{v}");
    assert_eq!(v["id"], Value::Null, "{v}");

    // Malformed JSON-RPC.
    for (body, rpc, code) in [
        (&b"{\"jsonrpc\":\"2.0\",\"id\":1,"[..], -32700, "mcp_parse_error"),
        (b"not json at all", -32700, "mcp_parse_error"),
        (b"[]", -32600, "mcp_invalid_request"),
        (
            br#"{"jsonrpc":"1.0","id":1,"method":"tools/call"}"#,
            -32600,
            "mcp_invalid_request",
        ),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","name":"delete_repository"}}"#,
            -32700,
            "mcp_parse_error",
        ),
    ] {
        let (status, v) = post(&gw, &server, body, &[]);
        assert_eq!(status, 400, "{}: {v}", String::from_utf8_lossy(body));
        assert_eq!(v["error"]["code"], rpc, "{v}");
        assert_eq!(v["error"]["data"]["code"], code, "{v}");
    }

    // A batch over mcp.max_batch.
    let huge: Vec<Value> = (0..9)
        .map(|i| call(i, "read_file", json!({"path": "/workspace/a"})))
        .collect();
    let (status, v) = post(&gw, &server, Value::from(huge).to_string().as_bytes(), &[]);
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["data"]["code"], "mcp_invalid_request", "{v}");

    // Arguments nested past mcp.max_depth.
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{{"name":"read_file","arguments":{{"path":"/workspace/a","x":{}{}}}}}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let (status, v) = post(&gw, &server, deep.as_bytes(), &[]);
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], -32700, "{v}");

    // A body over mcp.max_body (1 MiB default).
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{{"name":"read_file","arguments":{{"path":"/workspace/{}"}}}}}}"#,
        "a".repeat(1024 * 1024 + 1)
    );
    let (status, v) = post(&gw, &server, big.as_bytes(), &[]);
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["error"]["data"]["code"], "mcp_body_too_large", "{v}");

    // A method differing only in case or Unicode is not a tool call: the policy denies it.
    for method in ["Tools/Call", "tools/\u{0441}all", "tools/call "] {
        let body = json!({"jsonrpc": "2.0", "id": 7, "method": method,
                          "params": {"name": "delete_repository", "arguments": {"name": "x"}}});
        let (status, v) = post(&gw, &server, body.to_string().as_bytes(), &[]);
        assert_eq!(status, 200, "{method:?}: {v}");
        assert_eq!(v["id"], 7, "{v}");
        assert_eq!(v["error"]["code"], -32003, "{v}");
        assert_eq!(
            v["error"]["data"]["detail"],
            format!("MCP method {} is not allowed", Value::from(method)),
            "{v}"
        );
    }

    assert_eq!(reached(), 0, "nothing refused reached the server");
    // The gateway still serves: an allowed call passes (the server answers it).
    let ok = call(8, "read_file", json!({"path": "/workspace/a"})).to_string();
    let (_, v) = post(&gw, &server, ok.as_bytes(), &[]);
    assert!(v.is_object(), "{v}");
    assert_eq!(reached(), 1, "the allowed call reached the server");
}
