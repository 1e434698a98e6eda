//! The MCP server's answer on its way back: a copy is scanned for each request id's outcome
//! (`isError`) and the tools a `tools/list` lists (metric labels); with
//! `mcp.filter_tools_list`, answers to `tools/list` requests are rewritten without the tools
//! the agent may not call — decided by the same Authorizer as a call to each tool. That is the
//! only rewrite the gateway makes; every other answer streams byte for byte.

use crate::body::{BoxError, FrameTap, ProxyBody};
use crate::mcp::{listed_tool, McpRequest};
use crate::phases::RequestFacts;
use crate::state::Shared;
use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Method};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use portcullis_core::{Principal, RequestKind};
use portcullis_mcp::filter::{filter_json, unfilterable, SseFilter};
use portcullis_mcp::scan::media_type;
use portcullis_mcp::{Id, ResponseScan, ScanResult};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// What an admitted MCP request's answer needs.
pub(crate) struct McpAdmitted {
    shared: Arc<Shared>,
    server: String,
    list_ids: Vec<Id>,
    filter: Option<Arc<ListFilter>>,
}

/// Everything needed to decide a `tools/call` to a listed tool as the agent's own call would
/// be decided, owned (the answer outlives the request's borrows).
struct ListFilter {
    shared: Arc<Shared>,
    principal: Principal,
    subagent: Option<String>,
    method: Method,
    scheme: String,
    host: String,
    port: u16,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    client_addr: SocketAddr,
    credential: Option<String>,
    usage: portcullis_limits::UsageSnapshot,
    req: McpRequest,
}

impl ListFilter {
    /// Whether `tool` stays listed: a call to it (arguments unknown) would be allowed.
    fn keep(&self, tool: &str) -> bool {
        let m = listed_tool(tool);
        let facts = RequestFacts {
            kind: RequestKind::Http,
            principal: &self.principal,
            subagent: self.subagent.as_deref(),
            method: &self.method,
            scheme: &self.scheme,
            host: &self.host,
            port: self.port,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            client_addr: self.client_addr,
            llm: None,
            body: None,
            usage: self.usage,
            credential: self.credential.as_deref(),
            mcp: Some(self.req.facts(Some(&m))),
        };
        self.shared
            .pipeline
            .authorizer
            .authorize(&facts)
            .decision
            .allowed
    }

    fn learn(&self, tools: &[String]) {
        if let Some(gate) = &self.shared.pipeline.mcp {
            gate.labels
                .learn(&self.req.server, tools.iter().map(String::as_str));
        }
    }
}

impl McpAdmitted {
    pub(crate) fn new(shared: &Arc<Shared>, req: McpRequest, base: &RequestFacts<'_>) -> Self {
        let list_ids = req.list_ids();
        let filtering = shared
            .pipeline
            .mcp
            .as_ref()
            .is_some_and(|g| g.settings.filter_tools_list)
            && !list_ids.is_empty();
        let server = req.server.clone();
        let filter = filtering.then(|| {
            Arc::new(ListFilter {
                shared: shared.clone(),
                principal: base.principal.clone(),
                subagent: base.subagent.map(str::to_owned),
                method: base.method.clone(),
                scheme: base.scheme.to_owned(),
                host: base.host.to_owned(),
                port: base.port,
                path: base.path.to_owned(),
                query: base.query.map(str::to_owned),
                headers: base.headers.clone(),
                client_addr: base.client_addr,
                credential: base.credential.map(str::to_owned),
                usage: base.usage,
                req,
            })
        });
        Self {
            shared: shared.clone(),
            server,
            list_ids,
            filter,
        }
    }

    fn max_answer(&self) -> usize {
        self.shared
            .pipeline
            .mcp
            .as_ref()
            .map_or(4 * 1024 * 1024, |g| g.settings.max_answer)
    }

    /// The body to send (filtered when a `tools/list` answer must be) and the scan of what is
    /// sent. Adjusts the headers of a rewritten answer.
    pub(crate) fn wrap(&self, headers: &mut HeaderMap, body: ProxyBody) -> (ProxyBody, McpScan) {
        let text = |h: &HeaderMap, n| {
            h.get(n)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let ct = text(headers, CONTENT_TYPE);
        let encoding =
            text(headers, CONTENT_ENCODING).filter(|e| !e.trim().eq_ignore_ascii_case("identity"));
        let max = self.max_answer();
        let media = media_type(ct.as_deref());
        let sse = media.as_deref() == Some("text/event-stream");
        let json = media.as_deref() == Some("application/json");
        let body = match &self.filter {
            Some(_) if (sse || json) && encoding.is_some() => {
                // A compressed list cannot be read to filter it: not passed on.
                headers.remove(CONTENT_ENCODING);
                headers.remove(CONTENT_LENGTH);
                crate::body::full(unfilterable(&self.list_ids, sse).body)
            }
            Some(f) if sse || json => {
                headers.remove(CONTENT_LENGTH);
                let state = if sse {
                    State::Sse(SseFilter::new(&self.list_ids, max))
                } else {
                    State::Json {
                        buf: Vec::new(),
                        over: false,
                    }
                };
                ListFiltered {
                    inner: body,
                    state,
                    ctx: f.clone(),
                    ids: self.list_ids.clone(),
                    max,
                }
                .boxed()
            }
            _ => body,
        };
        let scan = ResponseScan::new(ct.as_deref(), encoding.as_deref(), max, &self.list_ids);
        let scan = McpScan {
            inner: Arc::new(Mutex::new(Some(scan))),
            server: self.server.clone(),
            shared: self.shared.clone(),
        };
        (body, scan)
    }
}

/// The scan of an MCP answer, fed a copy of each frame sent.
#[derive(Clone)]
pub(crate) struct McpScan {
    inner: Arc<Mutex<Option<ResponseScan>>>,
    server: String,
    shared: Arc<Shared>,
}

impl McpScan {
    /// What the answer said; the tools it listed become known metric labels.
    pub(crate) fn finish(&self) -> ScanResult {
        let scan = self.inner.lock().ok().and_then(|mut g| g.take());
        let result = scan.map(ResponseScan::finish).unwrap_or_default();
        if let Some(gate) = &self.shared.pipeline.mcp {
            gate.labels
                .learn(&self.server, result.tools.iter().map(String::as_str));
        }
        result
    }
}

impl FrameTap for McpScan {
    fn feed(&mut self, data: &[u8]) {
        if let Ok(mut g) = self.inner.lock() {
            if let Some(s) = g.as_mut() {
                s.feed(data);
            }
        }
    }
}

enum State {
    Json { buf: Vec<u8>, over: bool },
    Sse(SseFilter),
    Done,
}

pin_project! {
    /// A `tools/list` answer, filtered as it arrives.
    struct ListFiltered {
        #[pin]
        inner: ProxyBody,
        state: State,
        ctx: Arc<ListFilter>,
        ids: Vec<Id>,
        max: usize,
    }
}

impl Body for ListFiltered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if matches!(this.state, State::Done) {
                return Poll::Ready(None);
            }
            let frame = match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(f))) => Some(f),
                Poll::Ready(None) => None,
            };
            let ctx = this.ctx.clone();
            let mut keep = |t: &str| ctx.keep(t);
            match (&mut *this.state, frame) {
                (State::Json { buf, over }, Some(f)) => {
                    if let Ok(d) = f.into_data() {
                        if buf.len() + d.len() > *this.max {
                            *over = true;
                            *buf = Vec::new();
                        } else if !*over {
                            buf.extend_from_slice(&d);
                        }
                    }
                }
                (State::Json { buf, over }, None) => {
                    let out = if *over {
                        unfilterable(this.ids, false)
                    } else {
                        filter_json(buf, this.ids, *this.max, &mut keep)
                    };
                    this.ctx.learn(&out.listed);
                    *this.state = State::Done;
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out.body)))));
                }
                (State::Sse(f), Some(frame)) => {
                    if let Ok(d) = frame.into_data() {
                        let out = f.feed(&d, &mut keep);
                        // Known before the client reads the list (it may close right after).
                        let listed = f.take_listed();
                        if !listed.is_empty() {
                            this.ctx.learn(&listed);
                        }
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                        }
                    }
                }
                (State::Sse(_), None) => {
                    let State::Sse(f) = std::mem::replace(this.state, State::Done) else {
                        return Poll::Ready(None);
                    };
                    let (rest, _, listed) = f.finish();
                    this.ctx.learn(&listed);
                    if rest.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(rest)))));
                }
                (State::Done, _) => return Poll::Ready(None),
            }
        }
    }
}
