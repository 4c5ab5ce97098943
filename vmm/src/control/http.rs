//! HTTP/1.1 framing for the control socket, both sides: one request per connection
//! (`Connection: close`), bodies sized by Content-Length, headers parsed by httparse. A
//! malformed or oversized request is an error the server answers with 400/411/413, never a
//! panic.

use std::io::{Read, Write};

/// The most a request head (request line and headers) may take.
pub const MAX_HEAD: usize = 16 << 10;
/// The most a request body may take (a start request with its options is far smaller).
pub const MAX_BODY: usize = 1 << 20;
const MAX_HEADERS: usize = 64;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// `a=b` pairs of the query, in order (no percent-decoding: names and flags only).
    pub query: Vec<(String, String)>,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A query flag: `x=1`, `x=true` or a bare `x` are on, absent is `default`.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, HttpError> {
        match self.query.iter().find(|(k, _)| k == name) {
            None => Ok(default),
            Some((_, v)) => match v.as_str() {
                "" | "1" | "true" | "yes" => Ok(true),
                "0" | "false" | "no" => Ok(false),
                _ => Err(HttpError::bad(format!(
                    "query parameter {name}={v}: use 1/true or 0/false"
                ))),
            },
        }
    }
}

/// A request the server cannot take: its status and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    pub message: String,
}

impl HttpError {
    pub fn bad(message: impl Into<String>) -> Self {
        HttpError {
            status: 400,
            message: message.into(),
        }
    }
}

/// Read one request from `r`. `Ok(None)`: the peer closed before sending anything.
pub fn read_request(r: &mut impl Read) -> Result<Option<Request>, HttpError> {
    let mut buf = Vec::with_capacity(1024);
    let head_len = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() >= MAX_HEAD {
            return Err(HttpError {
                status: 431,
                message: format!("the request head is larger than {MAX_HEAD} bytes"),
            });
        }
        let mut chunk = [0u8; 4096];
        let n = r
            .read(&mut chunk)
            .map_err(|e| HttpError::bad(format!("reading the request: {e}")))?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(HttpError::bad("the request ended inside its head"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HttpError::bad("incomplete request head")),
        Err(e) => return Err(HttpError::bad(format!("malformed HTTP request: {e}"))),
    }
    if req.version != Some(1) {
        return Err(HttpError {
            status: 505,
            message: "only HTTP/1.1 is spoken here".into(),
        });
    }
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let query = query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect();
    let mut hs = Vec::new();
    for h in req.headers.iter() {
        let v = std::str::from_utf8(h.value)
            .map_err(|_| HttpError::bad(format!("header {} is not UTF-8", h.name)))?;
        hs.push((h.name.to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut request = Request {
        method,
        path: path.to_string(),
        query,
        headers: hs,
        body: Vec::new(),
    };
    if request
        .header("transfer-encoding")
        .is_some_and(|v| !v.eq_ignore_ascii_case("identity"))
    {
        return Err(HttpError {
            status: 411,
            message: "chunked request bodies are not supported: send Content-Length".into(),
        });
    }
    let len = match request.header("content-length") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| HttpError::bad(format!("Content-Length '{v}' is not a number")))?,
    };
    if len > MAX_BODY {
        return Err(HttpError {
            status: 413,
            message: format!("the request body is larger than {MAX_BODY} bytes"),
        });
    }
    let mut body = buf.split_off(head_len);
    if body.len() > len {
        return Err(HttpError::bad(
            "more bytes than Content-Length (one request per connection)",
        ));
    }
    let have = body.len();
    body.resize(len, 0);
    r.read_exact(&mut body[have..])
        .map_err(|e| HttpError::bad(format!("reading the {len}-byte body: {e}")))?;
    request.body = body;
    Ok(Some(request))
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The reason phrase of the statuses fugud answers with.
pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Write a complete response and close (the connection carries one request).
pub fn write_response(
    w: &mut impl Write,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    w.write_all(head.as_bytes())?;
    w.write_all(body)?;
    w.flush()
}

/// A response as the client reads it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body, or for 101 the bytes that already followed the head.
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why fugud's answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("reading fugud's answer: {0}")]
    Read(#[source] std::io::Error),
    #[error("fugud closed the connection without an answer")]
    Closed,
    #[error("fugud's answer has an oversized head")]
    OversizedHead,
    #[error("fugud's answer is not HTTP")]
    NotHttp,
}

/// Read a response head from `r`; then the body (Content-Length, else to EOF) unless the
/// status is 101 (the connection then carries the console).
pub fn read_response(r: &mut impl Read) -> Result<Response, AnswerError> {
    let mut buf = Vec::with_capacity(1024);
    let head_len = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() >= MAX_HEAD {
            return Err(AnswerError::OversizedHead);
        }
        let mut chunk = [0u8; 4096];
        let n = r.read(&mut chunk).map_err(AnswerError::Read)?;
        if n == 0 {
            return Err(AnswerError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(AnswerError::NotHttp),
    }
    let status = resp.code.unwrap_or(0);
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    let mut out = Response {
        status,
        headers,
        body: buf.split_off(head_len),
    };
    if status == 101 {
        return Ok(out);
    }
    match out.header("content-length").map(str::parse::<usize>) {
        Some(Ok(len)) => {
            let have = out.body.len().min(len);
            out.body.truncate(have);
            out.body.resize(len, 0);
            r.read_exact(&mut out.body[have..])
                .map_err(AnswerError::Read)?;
        }
        _ => {
            r.read_to_end(&mut out.body).map_err(AnswerError::Read)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[u8]) -> Result<Option<Request>, HttpError> {
        read_request(&mut std::io::Cursor::new(s.to_vec()))
    }

    #[test]
    fn requests_parse_with_query_headers_and_body() {
        let r = parse(
            b"POST /v1/vms/web/stop?force=1&wait HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/vms/web/stop");
        assert_eq!(r.flag("force", false), Ok(true));
        assert_eq!(r.flag("wait", false), Ok(true));
        assert_eq!(r.flag("other", false), Ok(false));
        assert_eq!(r.header("host"), Some("x"));
        assert_eq!(r.body, b"{}");
        assert!(parse(b"GET /?x=maybe HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap()
            .flag("x", false)
            .is_err());
    }

    #[test]
    fn malformed_requests_are_errors_not_panics() {
        assert_eq!(parse(b"").unwrap(), None);
        for bad in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort",
            b"GET / HTTP/1.1\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.status >= 400, "{bad:?}: {e:?}");
        }
        let huge = vec![b'a'; MAX_HEAD + 10];
        assert_eq!(parse(&huge).unwrap_err().status, 431);
    }

    #[test]
    fn responses_round_trip() {
        let mut out = Vec::new();
        write_response(&mut out, 404, "application/json", b"{\"error\":\"x\"}").unwrap();
        let r = read_response(&mut std::io::Cursor::new(out)).unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.body, b"{\"error\":\"x\"}");
        let r = read_response(&mut std::io::Cursor::new(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: fugu-console\r\n\r\nhello".to_vec(),
        ))
        .unwrap();
        assert_eq!((r.status, &r.body[..]), (101, &b"hello"[..]));
    }
}
