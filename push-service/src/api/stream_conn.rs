//! Direct-channel streams on plain HTTP/1.1, served without hyper's connection
//! buffers.
//!
//! A stream is a connection that stays open for hours and carries a few events:
//! hyper keeps an 8 KiB read buffer and an 8 KiB header buffer for every
//! connection for its whole life, which made an idle stream cost ~30 KiB. A
//! plain connection whose first bytes are `GET /v1/registrations/{id}/events`
//! is served here instead: its request head is read into a buffer freed once
//! parsed (httparse, the parser hyper uses), the request goes through the same
//! router (every layer, extractor and answer as for any other request), and the
//! response is written with `connection: close` — an error answer with its
//! `content-length`, a stream as a close-delimited body, one event at a time.
//! TLS connections stay with hyper (the TLS session's own buffers dominate).

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Method, Request, Response, Version};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::ApiError;
use axum::response::IntoResponse;

/// Longest request head of a stream request (its DPoP proof takes ~1 KiB).
const MAX_HEAD: usize = 16 * 1024;
/// Most header fields in a stream request.
const MAX_HEADERS: usize = 64;
/// A client that reads nothing for this long is closed (its events stay held).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// What the request line must start with, and its target end with.
const PREFIX: &[u8] = b"GET /v1/registrations/";
const SUFFIX: &[u8] = b"/events";

/// Whether a connection's first bytes are a stream request's line.
pub fn is_stream_request(start: &[u8]) -> bool {
    let Some(line) = start.strip_prefix(PREFIX) else {
        return false;
    };
    let Some(end) = line.iter().position(|&b| b == b' ') else {
        return false; // the line is not all there: hyper takes it
    };
    let target = &line[..end];
    let path = target
        .iter()
        .position(|&b| b == b'?')
        .map_or(target, |q| &target[..q]);
    path.ends_with(SUFFIX) && !path[..path.len() - SUFFIX.len()].contains(&b'/')
}

/// Stream requests routed at once per listener. Opening a stream takes ~20 KiB
/// for a moment (the router's per-request services, the handler, its proof
/// check and reads), and a storm of reconnecting devices would otherwise take
/// it for all of them at once: the allocator keeps that peak as the node's
/// resident memory long after. Two cores verify a few thousand proofs a
/// second either way, so the bound costs no throughput.
pub const SETUPS: usize = 64;

/// Serves one stream request on `tcp` through `app`, then closes.
pub async fn serve(
    mut tcp: TcpStream,
    app: axum::Router,
    remote: SocketAddr,
    head_timeout: Duration,
    setups: std::sync::Arc<tokio::sync::Semaphore>,
) {
    let request = match tokio::time::timeout(head_timeout, read_head(&mut tcp)).await {
        Ok(Ok(head)) => parse(&head, remote),
        Ok(Err(Closed)) => return,
        Err(_) => {
            super::server::log_closed(remote, "headers not received in time (slow or idle client)");
            return;
        }
    };
    match request {
        Ok(request) => {
            let setup = setups.acquire().await;
            let Ok(response) = tower::ServiceExt::oneshot(app, request).await;
            drop(setup);
            let _ = write_response(&mut tcp, response).await;
        }
        Err(refused) => {
            let _ = write_response(&mut tcp, refused.into_response()).await;
            // What the client still sends is read away briefly, so closing
            // does not reset the connection before it read the answer.
            let mut rest = vec![0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let mut left: usize = 64 * 1024;
                while left > 0 {
                    match tcp.read(&mut rest).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => left = left.saturating_sub(n),
                    }
                }
            })
            .await;
        }
    }
}

/// The peer closed (or failed) before its request head was complete.
struct Closed;

/// Reads up to the end of the request head; what follows it is left unread.
async fn read_head(tcp: &mut TcpStream) -> Result<Vec<u8>, Closed> {
    // On the heap, not in the task: a stream's task lives for hours.
    let mut head = Vec::with_capacity(2048);
    let mut chunk = vec![0u8; 1024];
    loop {
        // Peek, then consume only up to the head's end: no body is read.
        let n = tcp.peek(&mut chunk).await.map_err(|_| Closed)?;
        if n == 0 {
            return Err(Closed);
        }
        let seen = head.len();
        head.extend_from_slice(&chunk[..n]);
        let from = seen.saturating_sub(3);
        let end = head[from..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| from + at + 4);
        let take = match end {
            Some(end) => end - seen,
            None => n,
        };
        head.truncate(seen + take);
        tcp.read_exact(&mut chunk[..take])
            .await
            .map_err(|_| Closed)?;
        if end.is_some() || head.len() > MAX_HEAD {
            return Ok(head);
        }
    }
}

/// The request a head describes, or why it is refused.
fn parse(head: &[u8], remote: SocketAddr) -> Result<Request<Body>, ApiError> {
    let malformed = |detail: &str| ApiError::MalformedRequest(detail.to_owned());
    if head.len() > MAX_HEAD {
        return Err(ApiError::HeadTooLarge(
            "the request head is longer than 16 KiB".into(),
        ));
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ApiError::HeadTooLarge(
                "a stream request has at most 64 header fields".into(),
            ))
        }
        _ => return Err(malformed("the request head is malformed")),
    }
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return Err(malformed("a stream is opened with GET over HTTP/1.1"));
    }
    let mut request = Request::builder()
        .method(Method::GET)
        .version(Version::HTTP_11)
        .uri(parsed.path.unwrap_or("/"));
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| malformed("a header name is malformed"))?;
        // A GET that opens a stream has no body: a framed one is refused
        // rather than left unread on the connection.
        if name == header::TRANSFER_ENCODING
            || (name == header::CONTENT_LENGTH && field.value != b"0")
        {
            return Err(malformed("a stream request has no body"));
        }
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| malformed("a header value is malformed"))?;
        request = request.header(name, value);
    }
    let mut request = request
        .body(Body::empty())
        .map_err(|_| malformed("the request target is malformed"))?;
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(remote));
    Ok(request)
}

/// Writes the status line and headers, then the body: whole with its length,
/// or as it comes until it ends, the client leaves or stops reading.
async fn write_response(tcp: &mut TcpStream, response: Response<Body>) -> std::io::Result<()> {
    let (parts, body) = response.into_parts();
    let length = axum::body::HttpBody::size_hint(&body).exact();
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if matches!(
            *name,
            header::CONNECTION | header::CONTENT_LENGTH | header::TRANSFER_ENCODING
        ) {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"date: ");
    head.extend_from_slice(http_date().as_bytes());
    head.extend_from_slice(b"\r\nconnection: close\r\n");
    if let Some(length) = length {
        head.extend_from_slice(format!("content-length: {length}\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    timed(tcp.write_all(&head)).await?;
    drop(head);

    let mut frames = body.into_data_stream();
    if length.is_some() {
        // An answer: written whole, whatever the client still sends.
        while let Some(Ok(data)) = frames.next().await {
            timed(tcp.write_all(&data)).await?;
        }
        return timed(tcp.shutdown()).await;
    }
    let (mut reader, mut writer) = tcp.split();
    let mut probe = [0u8; 1];
    loop {
        tokio::select! {
            frame = frames.next() => match frame {
                Some(Ok(data)) => timed(writer.write_all(&data)).await?,
                _ => break,
            },
            // A stream's client sends nothing more: data or the end of it both close.
            _ = reader.read(&mut probe) => break,
        }
    }
    let _ = timed(writer.shutdown()).await;
    Ok(())
}

async fn timed(
    write: impl std::future::Future<Output = std::io::Result<()>>,
) -> std::io::Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Now as an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date() -> String {
    const FORMAT: &[time::format_description::FormatItem<'_>] = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::now_utc()
        .format(FORMAT)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn only_a_stream_request_line_is_taken() {
        for (start, taken) in [
            (
                &b"GET /v1/registrations/reg_1/events HTTP/1.1\r\n"[..],
                true,
            ),
            (b"GET /v1/registrations/reg_1/events?x=1 HTTP/1.1\r\n", true),
            (b"GET /v1/registrations/reg_1 HTTP/1.1\r\n", false),
            (
                b"GET /v1/registrations/reg_1/events/more HTTP/1.1\r\n",
                false,
            ),
            (b"GET /v1/registrations/a/b/events HTTP/1.1\r\n", false),
            (b"POST /v1/registrations/reg_1/events HTTP/1.1\r\n", false),
            (b"GET /v1/registrations/reg_1/eve", false), // not all there yet
            (b"PRI * HTTP/2.0\r\n", false),
        ] {
            assert_eq!(
                is_stream_request(start),
                taken,
                "{}",
                String::from_utf8_lossy(start)
            );
        }
    }

    #[test]
    fn heads_are_refused_with_a_reason() {
        let remote: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let ok = b"GET /v1/registrations/r/events HTTP/1.1\r\nhost: x\r\ndpop: a.b.c\r\n\r\n";
        let request = parse(ok, remote).expect("a plain stream request");
        assert_eq!(request.uri().path(), "/v1/registrations/r/events");
        assert_eq!(request.headers()["dpop"], "a.b.c");
        for (head, status) in [
            (
                &b"GET /v1/registrations/r/events HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"[..],
                StatusCode::BAD_REQUEST,
            ),
            (
                b"GET /v1/registrations/r/events HTTP/1.1\r\ncontent-length: 5\r\n\r\n",
                StatusCode::BAD_REQUEST,
            ),
            (
                b"GET /v1/registrations/r/events HTTP/1.0\r\n\r\n",
                StatusCode::BAD_REQUEST,
            ),
            (
                b"GET /v1/registrations/r/events HTTP/1.1\r\nbad header\r\n\r\n",
                StatusCode::BAD_REQUEST,
            ),
        ] {
            let refused = parse(head, remote).map(|_| ()).unwrap_err();
            assert_eq!(
                refused.into_response().status(),
                status,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        let mut many = b"GET /v1/registrations/r/events HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            parse(&many, remote)
                .map(|_| ())
                .unwrap_err()
                .into_response()
                .status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn the_date_is_an_http_date() {
        let date = http_date();
        assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
    }
}
