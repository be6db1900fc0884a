//! Header rewriting on the request path: what is never forwarded (hop-by-hop headers, every
//! credential a client sent, keyproxy's own control headers) and what a response is.

use crate::text::starts_with_ignoring_case;
use http::header::{self, HeaderMap, HeaderName};

/// RFC 9110 section 7.6.1: hop-by-hop headers, and the ones `Connection` names, are not forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    remove_where(headers, is_hop_by_hop);
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == header::UPGRADE
}

/// Removes the headers `doomed` picks, and those `Connection` names, looking only at the names
/// present: most requests carry one or two of the dozen names never forwarded, and a `remove`
/// per name hashed and probed every one of them, twice per request.
fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    while let Some(name) = headers.keys().find(|n| doomed(n)).cloned() {
        headers.remove(name);
    }
}

const CREDENTIAL_HEADERS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("api-key"),
    HeaderName::from_static("x-goog-api-key"),
];

/// Gemini also takes its key as `?key=`; on a route to Gemini the client's is removed.
pub(crate) fn strip_key_param(uri: &http::Uri) -> Option<http::Uri> {
    let query = uri.query()?;
    if !query
        .split('&')
        .any(|p| p == "key" || p.starts_with("key="))
    {
        return None;
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| *p != "key" && !p.starts_with("key="))
        .collect();
    let pq = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = pq.parse().ok();
    http::Uri::from_parts(parts).ok()
}

/// Also removes what the client sent as its own credential, keyproxy's control headers and Host
/// (the client sets it from the upstream URI).
pub(crate) fn strip_request_headers(headers: &mut HeaderMap, credential: &HeaderName) {
    // Every provider's credential header, on every route: a real key left in an agent's
    // settings must not reach another provider.
    remove_where(headers, |name| {
        is_hop_by_hop(name)
            || name == header::HOST
            || CREDENTIAL_HEADERS.contains(name)
            || name == credential
            || name.as_str().starts_with("x-keyproxy-")
    });
}

pub(crate) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| starts_with_ignoring_case(v.trim_start(), "text/event-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer client"),
        );
        h.insert("x-api-key", HeaderValue::from_static("client"));
        h.insert("api-key", HeaderValue::from_static("client"));
        h.insert("x-goog-api-key", HeaderValue::from_static("client"));
        h.insert("x-keyproxy-profile", HeaderValue::from_static("p"));
        h.insert("x-keyproxy-other", HeaderValue::from_static("p"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        strip_request_headers(&mut h, &HeaderName::from_static("x-custom-key"));
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["content-type"]);
    }

    #[test]
    fn geminis_key_parameter_goes_and_the_rest_of_the_query_stays() {
        let uri: http::Uri = "https://g/v1beta/models?alt=sse&key=AIza-client&x=1"
            .parse()
            .unwrap();
        assert_eq!(
            strip_key_param(&uri).unwrap().to_string(),
            "https://g/v1beta/models?alt=sse&x=1"
        );
        let uri: http::Uri = "https://g/m?key=a".parse().unwrap();
        assert_eq!(strip_key_param(&uri).unwrap().to_string(), "https://g/m");
        let uri: http::Uri = "https://g/m?monkey=1".parse().unwrap();
        assert!(strip_key_param(&uri).is_none());
    }
}
