//! The body types on either side of keyproxy. `Either` rather than a boxed body: forwarding costs
//! no allocation, and a local reply is a single `Full` chunk.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;

/// What keyproxy sends to an upstream: the client's body as it streams in, or a buffered copy.
pub type UpstreamBody = Either<Incoming, Full<Bytes>>;

/// What keyproxy sends to a client: the upstream's body as it streams in, or a local reply.
pub type ResponseBody = Either<Incoming, Full<Bytes>>;
