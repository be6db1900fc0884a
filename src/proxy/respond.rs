//! The upstream's answer on its way back: counted, its hop-by-hop headers dropped, a refusal of
//! the key rewritten to name the profile, and the body streamed, with its first bytes looked at
//! before the head goes out.

use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::response;
use http::{Response, StatusCode, Version};
use http_body::{Body as _, Frame};
use http_body_util::{BodyExt as _, Either, Full};
use hyper::body::Incoming;

use super::access_log::AccessRecord;
use super::bill::Bill;
use super::body::{ResponseBody, Streamed};
use super::error::LocalError;
use super::h2::Lease;
use super::headers::{is_event_stream, strip_hop_by_hop};
use super::plan::{Plan, PROFILE_HEADER};
use super::refusal::{self, Refused};
use super::state::{Snapshot, State};
use crate::keys::health::rests_key;
use crate::keys::Key;

/// Names the key an upstream refused, by fingerprint.
const KEY_HEADER: http::HeaderName = http::HeaderName::from_static("x-keyproxy-key");

/// An answer ready to go: its head, and its body as read so far.
pub(super) struct Answer {
    parts: response::Parts,
    body: Incoming,
    head: Head,
    lease: Lease,
    /// keyproxy asked for usage the client did not ask for (see `include_usage`).
    hides_usage: bool,
}

impl Answer {
    /// Keeps the stream's place on its upstream connection until the body is done with.
    pub(super) fn leased(self, lease: Lease) -> Self {
        Self { lease, ..self }
    }

    /// Keeps from the client the usage keyproxy asked for on its behalf.
    pub(super) fn hiding_usage(self, hides_usage: bool) -> Self {
        Self {
            hides_usage,
            ..self
        }
    }
}

enum Head {
    /// A refusal read whole (and rewritten): the body is this.
    Whole(Bytes),
    /// The body streams, after this first frame if one was read.
    Streams(Option<Frame<Bytes>>),
}

/// Everything about the upstream's answer that may still turn it into a local error: a protocol
/// switch, or a connection that broke right after the head.
pub(super) async fn prepare(
    state: &State,
    snapshot: &Snapshot,
    plan: &Plan<'_>,
    key: &Key,
    resp: Response<Incoming>,
    upstream_time: Duration,
) -> Result<Answer, LocalError> {
    let route = plan.route;
    let idle = snapshot.config.idle_timeout;
    route.latency.observe(upstream_time);
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        // keyproxy strips Upgrade and forwards no protocol switch; passing the 101 on would
        // leave the client's connection in a state neither side can use.
        return Err(LocalError::UpstreamUnreachable {
            upstream: route.upstream_label.clone(),
            cause:
                "it answered 101 Switching Protocols, and keyproxy does not proxy protocol upgrades"
                    .into(),
        });
    }
    let (mut parts, mut body) = resp.into_parts();
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    let status = parts.status;
    snapshot.meters.count(
        &state.metrics,
        (route.index, &route.prefix),
        &plan.profile,
        plan.client.map_or("", |c| c.name.as_str()),
        status.as_u16(),
    );
    let minute = state
        .metrics
        .traffic
        .answered(status.as_u16(), upstream_time);
    key.health().used_in(minute);
    if status.is_success() {
        key.health().accepted();
    } else if rests_key(status) {
        // Tell the client which profile and key the upstream refused; never the key itself.
        if let Ok(v) = HeaderValue::from_str(&plan.profile) {
            parts.headers.insert(PROFILE_HEADER, v);
        }
        if let Ok(v) = HeaderValue::from_str(key.fingerprint()) {
            parts.headers.insert(KEY_HEADER, v);
        }
    }
    if is_event_stream(&parts.headers) {
        // nginx in front of keyproxy would otherwise batch SSE events.
        parts
            .headers
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
    }
    let mut first = None;
    if matches!(status.as_u16(), 401..=403) {
        let refused = Refused {
            provider: &route.provider_name,
            fingerprint: key.fingerprint(),
            profile: &plan.profile,
            status: status.as_u16(),
            source: key.source(),
        };
        match refusal::read_small(&mut body, idle).await {
            refusal::Read::Whole(bytes) => {
                let bytes = refusal::rewrite(&bytes, &refused).unwrap_or(bytes);
                parts.headers.remove(header::CONTENT_LENGTH);
                let head = Head::Whole(bytes);
                return Ok(Answer {
                    parts,
                    body,
                    head,
                    lease: Lease::default(),
                    hides_usage: false,
                });
            }
            refusal::Read::Partial(bytes) => first = Some(Frame::data(bytes)),
        }
    }
    if first.is_none() && !body.is_end_stream() {
        first = first_frame(&parts, &mut body, idle).await.map_err(|e| {
            LocalError::UpstreamUnreachable {
                upstream: route.upstream_label.clone(),
                cause: format!("the connection broke after the response head: {e}"),
            }
        })?;
    }
    let head = Head::Streams(first);
    let lease = Lease::default();
    Ok(Answer {
        parts,
        body,
        head,
        lease,
        hides_usage: false,
    })
}

/// hyper sends the head together with the first body bytes: an upstream that closes right after
/// its head would leave the client an empty reply, with no status line. So the first frame is
/// looked at before the head goes: at once for a stream, and, for a body of known length, which
/// follows its head at once, waited for.
async fn first_frame(
    parts: &response::Parts,
    body: &mut Incoming,
    idle: Duration,
) -> Result<Option<Frame<Bytes>>, hyper::Error> {
    // One poll, no timer: what has already arrived, if anything. A body of known length has
    // usually come with its head, so its timer is armed only when it has not.
    let arrived = std::future::poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
        Poll::Ready(frame) => Poll::Ready(Some(frame)),
        Poll::Pending => Poll::Ready(None),
    })
    .await;
    let first = match arrived {
        None if parts.headers.contains_key(header::CONTENT_LENGTH) => {
            tokio::time::timeout(idle, body.frame()).await.ok()
        }
        arrived => arrived,
    };
    match first {
        Some(Some(frame)) => frame.map(Some),
        Some(None) | None => Ok(None),
    }
}

/// The response to the client; `record` is written and `bill` (a limited client's, from its
/// admission) settled when its body ends.
pub(super) fn reply(
    state: &State,
    snapshot: &Snapshot,
    answer: Answer,
    mut record: AccessRecord,
    upstream_time: Duration,
    bill: Option<Bill>,
) -> Response<ResponseBody> {
    let Answer {
        mut parts,
        body,
        head,
        lease,
        hides_usage,
    } = answer;
    record.answered(
        parts.status.as_u16(),
        upstream_time.as_secs_f64() * 1e3,
        &parts.headers,
    );
    // An error answer is not billed: what was reserved for it is given back.
    let (bill, unbilled) = match bill {
        Some(b) if !parts.status.is_success() => (None, Some(b)),
        b => (b, None),
    };
    if let Some(b) = unbilled {
        b.release();
    }
    match head {
        Head::Whole(bytes) => {
            if let Some(b) = bill {
                b.release();
            }
            state.metrics.response_bytes.inc_by(bytes.len() as u64);
            record.ended(bytes.len() as u64, "complete");
            Response::from_parts(parts, Either::Right(Full::new(bytes)))
        }
        Head::Streams(first) => {
            let meter = state.metrics.response_bytes.clone();
            let idle = snapshot.config.idle_timeout;
            let usage = usage_meter(state, &parts, &record, bill);
            // Only a stream can carry the event keyproxy asked for; its length changes.
            let hides_usage = hides_usage && is_event_stream(&parts.headers);
            if hides_usage {
                parts.headers.remove(header::CONTENT_LENGTH);
            }
            let mut body = Streamed::new(body, idle, meter, record);
            body.with_head(first)
                .with_lease(lease)
                .with_usage(usage)
                .hiding_usage(hides_usage);
            Response::from_parts(parts, Either::Left(Box::pin(body)))
        }
    }
}

/// What reads and charges a successful answer's usage: the limited client's bill from its
/// admission, or, for any other client when keyproxy keeps a ledger, a new one for a JSON or
/// SSE answer. An answer of another type charges a reservation, if there is one, as unseen.
fn usage_meter(
    state: &State,
    parts: &http::response::Parts,
    record: &AccessRecord,
    bill: Option<Bill>,
) -> Option<Bill> {
    let scanner = || {
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)?
            .to_str()
            .ok()?;
        crate::usage::scan::Scanner::for_content_type(content_type)
    };
    if let Some(bill) = bill {
        return Some(bill.with_scanner(scanner()));
    }
    let ledger = state.usage.get()?;
    if !parts.status.is_success() {
        return None;
    }
    let scanner = scanner()?;
    let bill = Bill::new(
        Some(ledger.clone()),
        record.client.as_deref().unwrap_or_default().into(),
        record.profile.as_deref().unwrap_or_default().into(),
        record.route.clone().unwrap_or_default(),
        None,
    );
    Some(bill.with_scanner(Some(scanner)))
}
