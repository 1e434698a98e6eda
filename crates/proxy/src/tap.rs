//! The usage tap on a response body: it sees a copy of each frame as the frame is handed to
//! the client, and at the end says what was spent (settling the token reservation) and whether
//! the response's terminal event was delivered (a stream the client closed after it is
//! complete).

use crate::body::{BodyEnd, FrameTap};
use portcullis_llm::UsageTap;
use std::sync::Arc;

/// How a response body's end is recorded: its error code and whether it completed.
///
/// A client that closes once it has the response's terminal event (an SDK stops reading at
/// `data: [DONE]`, `message_stop` or `response.completed`, and the origin has not closed yet)
/// got the whole response: complete, not `client_aborted`. `terminal_delivered` is the tap's
/// word, and the tap only sees a frame when [`Metered`] hands it on to the client's
/// connection (never ahead of it), so a marker it saw was sent to the client. An upstream
/// failure stays an error: the client's HTTP framing broke, whatever it had read.
pub(crate) fn body_outcome(end: BodyEnd, terminal_delivered: bool) -> (Option<&'static str>, bool) {
    match end {
        BodyEnd::Complete => (None, true),
        BodyEnd::Aborted if terminal_delivered => (None, true),
        BodyEnd::Aborted => (Some("client_aborted"), false),
        BodyEnd::Error => (Some("upstream_body_error"), false),
    }
}

/// The usage tap, shared between the frame copy and the end-of-body record.
#[derive(Clone)]
pub(crate) struct SharedTap(Arc<std::sync::Mutex<Option<UsageTap>>>);

/// What the tap saw of a response when its body ended.
pub(crate) struct TapEnd {
    pub(crate) usage: portcullis_llm::Usage,
    /// The response's terminal event was among the frames handed to the client.
    pub(crate) terminal: bool,
}

impl SharedTap {
    pub(crate) fn finish(&self) -> Option<TapEnd> {
        let tap = self.0.lock().ok()?.take()?;
        // Read before `finish`, which also parses a last event missing its blank line:
        // a client's SSE parser would not have dispatched that one.
        let terminal = tap.terminal_seen();
        Some(TapEnd {
            terminal,
            usage: tap.finish(),
        })
    }
}

impl FrameTap for SharedTap {
    fn feed(&mut self, data: &[u8]) {
        if let Ok(mut g) = self.0.lock() {
            if let Some(t) = g.as_mut() {
                t.feed(data);
            }
        }
    }
}

impl SharedTap {
    /// A tap parsing the usage of a `c` response with these headers.
    pub(crate) fn new(
        c: &portcullis_llm::Classification,
        content_encoding: Option<&str>,
        content_type: Option<&str>,
    ) -> Self {
        SharedTap(Arc::new(std::sync::Mutex::new(Some(UsageTap::new(
            c.format,
            c.api,
            content_encoding,
            content_type,
        )))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{Metered, ProxyBody};
    use http_body_util::BodyExt;

    /// The tokens a response settles its reservation with (the limiter's rule).
    fn settled_tokens(usage: Option<&portcullis_llm::Usage>) -> Option<u64> {
        portcullis_limits::Settlement::of(usage, None).tokens
    }

    #[test]
    fn settlement_uses_complete_provider_usage_only() {
        use portcullis_llm::{Usage, UsageSource};
        let reported = Usage {
            input_tokens: 30,
            output_tokens: 12,
            cached_input_tokens: 0,
            reasoning_tokens: 0,
            total_tokens: 42,
            source: UsageSource::Provider,
            truncated: false,
        };
        assert_eq!(settled_tokens(Some(&reported)), Some(42));
        let cut = Usage {
            truncated: true,
            ..reported
        };
        assert_eq!(
            settled_tokens(Some(&cut)),
            None,
            "a cut stream keeps the reservation"
        );
        assert_eq!(settled_tokens(Some(&Usage::missing(false))), None);
        assert_eq!(settled_tokens(None), None);
    }

    #[test]
    fn a_body_ended_after_its_terminal_event_is_complete() {
        let table = [
            (BodyEnd::Complete, false, None, true),
            (BodyEnd::Complete, true, None, true),
            (BodyEnd::Aborted, true, None, true),
            (BodyEnd::Aborted, false, Some("client_aborted"), false),
            (BodyEnd::Error, false, Some("upstream_body_error"), false),
            (BodyEnd::Error, true, Some("upstream_body_error"), false),
        ];
        for (end, terminal, error, completed) in table {
            assert_eq!(
                body_outcome(end, terminal),
                (error, completed),
                "{end:?} terminal={terminal}"
            );
        }
    }

    /// What a body's end recorded: error, completed, usage.
    type EndLog = Arc<std::sync::Mutex<Vec<(Option<&'static str>, bool, portcullis_llm::Usage)>>>;

    /// A body whose origin keeps the connection open after `frames`, metered with the usage
    /// tap; returns the body and what its end recorded.
    fn tapped(frames: &[&'static str]) -> (ProxyBody, EndLog) {
        use futures_util::StreamExt;
        let tap = SharedTap(Arc::new(std::sync::Mutex::new(Some(UsageTap::new(
            portcullis_llm::Format::OpenAi,
            Some(portcullis_llm::Api::ChatCompletions),
            None,
            Some("text/event-stream"),
        )))));
        let frames: Vec<Result<http_body::Frame<bytes::Bytes>, crate::body::BoxError>> = frames
            .iter()
            .map(|f| {
                Ok(http_body::Frame::data(bytes::Bytes::from_static(
                    f.as_bytes(),
                )))
            })
            .collect();
        let held_open = futures_util::stream::iter(frames).chain(futures_util::stream::pending());
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (l, end_tap) = (log.clone(), tap.clone());
        let body = Metered::new(
            http_body_util::StreamBody::new(held_open),
            Box::new(move |_, end| {
                let t = end_tap.finish().expect("tap");
                let (error, completed) = body_outcome(end, t.terminal);
                l.lock().expect("log").push((error, completed, t.usage));
            }),
        )
        .with_tap(Box::new(tap))
        .boxed();
        (body, log)
    }

    const USAGE: &str =
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":5}}\n\n";

    #[tokio::test]
    async fn the_tap_sees_frames_only_as_they_are_handed_on() {
        // The client read through `[DONE]` and closed; the origin had not closed.
        let (mut body, log) = tapped(&[USAGE, "data: [DONE]\n\n"]);
        for _ in 0..2 {
            body.frame().await.expect("frame").expect("data");
        }
        drop(body);
        let got = log.lock().expect("log").clone();
        assert_eq!(got.len(), 1);
        let (error, completed, usage) = got[0];
        assert_eq!((error, completed), (None, true));
        assert_eq!(settled_tokens(Some(&usage)), Some(16));

        // `[DONE]` is waiting upstream but was never handed to the client: an abort, and
        // the reservation is kept.
        let (mut body, log) = tapped(&[USAGE, "data: [DONE]\n\n"]);
        body.frame().await.expect("frame").expect("data");
        drop(body);
        let (error, completed, usage) = log.lock().expect("log")[0];
        assert_eq!((error, completed), (Some("client_aborted"), false));
        assert!(usage.truncated);
        assert_eq!(settled_tokens(Some(&usage)), None);

        // A marker split across frames counts only once its last byte went out.
        let (mut body, log) = tapped(&[USAGE, "data: [DO", "NE]\n", "\n"]);
        for _ in 0..3 {
            body.frame().await.expect("frame").expect("data");
        }
        drop(body);
        assert_eq!(log.lock().expect("log")[0].0, Some("client_aborted"));
        let (mut body, log) = tapped(&[USAGE, "data: [DO", "NE]\n", "\n"]);
        for _ in 0..4 {
            body.frame().await.expect("frame").expect("data");
        }
        drop(body);
        assert_eq!(log.lock().expect("log")[0].0, None);
    }
}
