//! A local HTTPS origin for interception tests: a leaf for `localhost` issued by its own
//! test CA (give `ca_pem` to the gateway as `tls.upstream_ca`), serving echo, a big body and
//! OpenAI / Anthropic-compatible LLM endpoints. Optionally it requires an API key, as the
//! real providers do: `Authorization: Bearer KEY` on `/v1/chat/completions` and
//! `/v1/models`, `x-api-key: KEY` on `/v1/messages`; anything else gets 401 (which never
//! echoes what was sent).

use super::server::{Handler, OBody, TestServer};
use super::{big_body, sha256_hex, BIG_LEN};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use portcullis_ca::{mint_leaf, server_config_for, CertificateAuthority};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A local HTTPS origin with a leaf for `localhost` issued by its own test CA.
///
/// - `/echo...`: JSON with the method, URI, version and headers it received.
/// - `/big`: [`big_body`] with Content-Length.
/// - `/v1/chat/completions`: an OpenAI-compatible answer, JSON or (with
///   `"stream": true`) SSE chunks ending with `data: [DONE]`.
/// - `/v1/messages`: an Anthropic-compatible answer, JSON or SSE ending with `message_stop`.
///
/// A streamed answer for a model named `hold-open...` is sent whole, terminal event
/// included, and the response is then kept open (the body never ends), as a provider that
/// closes late; for `hold-mid...` only the first events are sent before it is kept open.
pub struct TlsOrigin {
    /// Listening address.
    pub addr: SocketAddr,
    /// PEM of the origin's test CA.
    pub ca_pem: PathBuf,
    auth: Arc<KeyCheck>,
    server: TestServer,
    _dir: tempfile::TempDir,
}

/// The API key the origin requires (none: everything is accepted) and the credentials it saw.
#[derive(Default)]
struct KeyCheck {
    key: Mutex<Option<String>>,
    seen: Mutex<Vec<String>>,
}

impl KeyCheck {
    /// `None` when the request may proceed; else the 401 answer.
    fn check(&self, path: &str, headers: &http::HeaderMap) -> Option<Response<OBody>> {
        let (name, expected) = {
            let key = self.key.lock().expect("key");
            let key = key.as_deref()?;
            match path {
                "/v1/messages" => ("x-api-key", key.to_owned()),
                "/v1/chat/completions" | "/v1/models" => ("authorization", format!("Bearer {key}")),
                _ => return None,
            }
        };
        let got: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        self.seen.lock().expect("seen").extend(got.iter().cloned());
        if got == [expected] {
            return None;
        }
        let body = r#"{"error":{"message":"invalid api key","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        let mut r = Response::new(full(body));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        r.headers_mut()
            .insert("content-type", "application/json".parse().expect("ct"));
        Some(r)
    }
}

impl TlsOrigin {
    /// An origin accepting any credential.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// An origin whose LLM endpoints require `key`.
    pub fn requiring_key(key: &str) -> Self {
        Self::start_with(Some(key.to_owned()))
    }

    /// Changes the key the origin requires (a rotation at the provider).
    pub fn set_key(&self, key: &str) {
        *self.auth.key.lock().expect("key") = Some(key.to_owned());
    }

    /// Every credential header value the LLM endpoints received, in order.
    pub fn seen_credentials(&self) -> Vec<String> {
        self.auth.seen.lock().expect("seen").clone()
    }

    fn start_with(key: Option<String>) -> Self {
        let auth = Arc::new(KeyCheck {
            key: Mutex::new(key),
            seen: Mutex::new(Vec::new()),
        });
        let check = auth.clone();
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = CertificateAuthority::generate("Portcullis Test Origin CA").expect("origin CA");
        let paths = ca.write(dir.path()).expect("write origin CA");
        let leaf = mint_leaf(&ca, "localhost").expect("origin leaf");
        let cfg = server_config_for(leaf, &[b"http/1.1".to_vec()]).expect("origin config");
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        let handler: Handler = Arc::new(move |req| Box::pin(route(check.clone(), req)));
        let server = TestServer::start(Some(acceptor), handler);
        Self {
            addr: server.addr,
            ca_pem: paths.cert,
            auth,
            server,
            _dir: dir,
        }
    }

    /// The origin's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `https://localhost:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port())
    }

    /// Requests received.
    pub fn requests(&self) -> usize {
        self.server.requests()
    }
}

fn full(b: impl Into<Bytes>) -> OBody {
    Full::new(b.into()).boxed()
}

/// How a streamed answer ends, chosen by the model name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The body ends after the terminal event.
    Close,
    /// Every event is sent, then the body stays open.
    HoldOpen,
    /// The first `n` events are sent, then the body stays open.
    HoldAfter(usize),
}

impl Ending {
    fn of(model: &str) -> Self {
        if model.starts_with("hold-open") {
            Self::HoldOpen
        } else if model.starts_with("hold-mid") {
            Self::HoldAfter(3)
        } else {
            Self::Close
        }
    }
}

/// An SSE answer made of `events` (each a complete event with its blank line), ending as
/// `ending` says.
fn sse_response(events: Vec<String>, ending: Ending) -> Response<OBody> {
    let (events, hold) = match ending {
        Ending::Close => (events, false),
        Ending::HoldOpen => (events, true),
        Ending::HoldAfter(n) => (events.into_iter().take(n).collect(), true),
    };
    let body = events.concat().into_bytes();
    if !hold {
        return llm_response(body, "text/event-stream");
    }
    use futures_util::StreamExt;
    let sent = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
        http_body::Frame::data(Bytes::from(body)),
    )]);
    let body = http_body_util::StreamBody::new(sent.chain(futures_util::stream::pending()));
    let mut r = Response::new(BodyExt::boxed(body));
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().expect("ct"));
    r
}

/// An LLM answer carrying `x-body-sha256` of exactly the bytes the origin sent.
fn llm_response(body: Vec<u8>, content_type: &str) -> Response<OBody> {
    let sha = sha256_hex(&body);
    let mut r = Response::new(full(body));
    r.headers_mut()
        .insert("content-type", content_type.parse().expect("ct"));
    r.headers_mut()
        .insert("x-body-sha256", sha.parse().expect("sha"));
    r
}

async fn route(check: Arc<KeyCheck>, req: Request<Incoming>) -> Response<OBody> {
    let path = req.uri().path().to_owned();
    let (parts, body) = req.into_parts();
    if let Some(refused) = check.check(&path, &parts.headers) {
        return refused;
    }
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut r = if path.starts_with("/echo") {
        let headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let v = serde_json::json!({
            "method": parts.method.as_str(),
            "uri": parts.uri.to_string(),
            "version": format!("{:?}", parts.version),
            "headers": headers,
            "body_len": body.len(),
        });
        let mut r = Response::new(full(serde_json::to_vec(&v).expect("json")));
        r.headers_mut()
            .insert("content-type", "application/json".parse().expect("ct"));
        r
    } else if path == "/big" {
        let b = big_body();
        let mut r = Response::new(full(b));
        r.headers_mut()
            .insert("content-length", BIG_LEN.to_string().parse().expect("cl"));
        r
    } else if path == "/v1/chat/completions" {
        let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let model = req["model"].as_str().unwrap_or("unknown").to_owned();
        if req["stream"].as_bool() == Some(true) {
            let with_usage = req["stream_options"]["include_usage"].as_bool() == Some(true);
            let mut out = Vec::new();
            for (i, piece) in ["Hello", " from", " origin"].iter().enumerate() {
                let chunk = serde_json::json!({
                    "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                    "model": model,
                    "choices": [{"index": 0, "delta": if i == 0 {
                        serde_json::json!({"role": "assistant", "content": piece})
                    } else {
                        serde_json::json!({"content": piece})
                    }, "finish_reason": null}]
                });
                out.push(format!("data: {chunk}\n\n"));
            }
            let stop = serde_json::json!({
                "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]
            });
            out.push(format!("data: {stop}\n\n"));
            if with_usage {
                let last = serde_json::json!({
                    "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                    "model": model, "choices": [],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16,
                              "prompt_tokens_details": {"cached_tokens": 4}}
                });
                out.push(format!("data: {last}\n\n"));
            }
            out.push("data: [DONE]\n\n".to_owned());
            sse_response(out, Ending::of(&model))
        } else {
            let v = serde_json::json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "Hello from origin"}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
            });
            llm_response(serde_json::to_vec(&v).expect("json"), "application/json")
        }
    } else if path == "/v1/models" {
        let v = serde_json::json!({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]});
        llm_response(serde_json::to_vec(&v).expect("json"), "application/json")
    } else if path == "/v1/messages" {
        let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let model = req["model"].as_str().unwrap_or("unknown").to_owned();
        if req["stream"].as_bool() == Some(true) {
            let ev =
                |name: &str, data: serde_json::Value| format!("event: {name}\ndata: {data}\n\n");
            let mut out = Vec::new();
            out.push(ev("message_start", serde_json::json!({"type": "message_start", "message": {
                "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": model,
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 10, "output_tokens": 1,
                          "cache_read_input_tokens": 2, "cache_creation_input_tokens": 1}}})));
            out.push(ev(
                "content_block_start",
                serde_json::json!({"type": "content_block_start",
                "index": 0, "content_block": {"type": "text", "text": ""}}),
            ));
            for piece in ["Hello", " from", " origin"] {
                out.push(ev(
                    "content_block_delta",
                    serde_json::json!({"type": "content_block_delta",
                    "index": 0, "delta": {"type": "text_delta", "text": piece}}),
                ));
            }
            out.push(ev(
                "content_block_stop",
                serde_json::json!({"type": "content_block_stop", "index": 0}),
            ));
            out.push(ev(
                "message_delta",
                serde_json::json!({"type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": 7}}),
            ));
            out.push(ev(
                "message_stop",
                serde_json::json!({"type": "message_stop"}),
            ));
            sse_response(out, Ending::of(&model))
        } else {
            let v = serde_json::json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": "Hello from origin"}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": 10, "output_tokens": 7,
                          "cache_read_input_tokens": 2, "cache_creation_input_tokens": 1}
            });
            llm_response(serde_json::to_vec(&v).expect("json"), "application/json")
        }
    } else {
        let mut r = Response::new(full("no such route\n"));
        *r.status_mut() = StatusCode::NOT_FOUND;
        r
    };
    r.headers_mut()
        .insert("x-origin", "test-origin".parse().expect("hdr"));
    r
}
