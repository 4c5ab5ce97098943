//! A loopback HTTP/1.1 file server for the image-pull benchmark: GET and HEAD of files under
//! one directory, `Range: bytes=N-`, one thread per connection, `Connection: close`.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};

/// A running server; it stops with the xtask process.
pub struct Server {
    pub port: u16,
}

impl Server {
    /// Serve `dir` on 127.0.0.1 at a free port.
    pub fn start(dir: &Path) -> std::io::Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let dir = dir.to_path_buf();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, &dir);
                });
            }
        });
        Ok(Server { port })
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub head: bool,
    pub path: String,
    pub range_from: Option<u64>,
}

/// Parse the request line and headers; None for anything this server does not serve.
pub fn parse(lines: &[String]) -> Option<Request> {
    let mut first = lines.first()?.split_whitespace();
    let head = match first.next()? {
        "GET" => false,
        "HEAD" => true,
        _ => return None,
    };
    let path = first.next()?.split('?').next()?.to_string();
    let mut range_from = None;
    for l in &lines[1..] {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                let v = v.trim().strip_prefix("bytes=")?;
                range_from = Some(v.strip_suffix('-')?.parse().ok()?);
            }
        }
    }
    Some(Request {
        head,
        path,
        range_from,
    })
}

/// The file under `dir` for a request path, refusing anything that leaves it.
pub fn resolve(dir: &Path, path: &str) -> Option<PathBuf> {
    let mut p = dir.to_path_buf();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        if c == ".." || c == "." || c.contains('\\') {
            return None;
        }
        p.push(c);
    }
    p.is_file().then_some(p)
}

fn handle(conn: TcpStream, dir: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        if reader.read_line(&mut l)? == 0 {
            return Ok(());
        }
        let l = l.trim_end().to_string();
        if l.is_empty() {
            break;
        }
        lines.push(l);
    }
    let mut out = std::io::BufWriter::with_capacity(1 << 16, conn);
    let req = parse(&lines);
    let file = req.as_ref().and_then(|r| resolve(dir, &r.path));
    let (Some(req), Some(file)) = (req, file) else {
        out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return out.flush();
    };
    let mut f = std::fs::File::open(file)?;
    let len = f.metadata()?.len();
    let from = req.range_from.unwrap_or(0);
    if from > len {
        out.write_all(
            b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return out.flush();
    }
    let head = match req.range_from {
        Some(_) => format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{len}\r\nConnection: close\r\n\r\n",
            len - from,
            len.saturating_sub(1)
        ),
        None => format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"),
    };
    out.write_all(head.as_bytes())?;
    if !req.head {
        f.seek(SeekFrom::Start(from))?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn requests_parse() {
        let r = parse(&lines(&[
            "GET /a/b?x=1 HTTP/1.1",
            "Host: x",
            "range: bytes=100-",
        ]))
        .unwrap();
        assert_eq!(
            r,
            Request {
                head: false,
                path: "/a/b".into(),
                range_from: Some(100)
            }
        );
        assert!(parse(&lines(&["HEAD / HTTP/1.1"])).unwrap().head);
        assert_eq!(parse(&lines(&["POST / HTTP/1.1"])), None);
        assert_eq!(parse(&lines(&["GET / HTTP/1.1", "Range: bytes=1-2"])), None);
        assert_eq!(parse(&[]), None);
    }

    #[test]
    fn paths_stay_inside_the_directory() {
        let dir = std::env::temp_dir().join(format!("xtask-serve-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("d")).unwrap();
        std::fs::write(dir.join("d/f"), b"x").unwrap();
        assert_eq!(resolve(&dir, "/d/f"), Some(dir.join("d/f")));
        assert_eq!(resolve(&dir, "/d/../d/f"), None);
        assert_eq!(resolve(&dir, "/d"), None);
        assert_eq!(resolve(&dir, "/missing"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn serves_whole_files_and_ranges_over_loopback() {
        let dir = std::env::temp_dir().join(format!("xtask-serve2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), b"0123456789").unwrap();
        let s = Server::start(&dir).unwrap();
        let get = |extra: &str| {
            let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
            write!(c, "GET /f HTTP/1.1\r\nHost: x\r\n{extra}\r\n").unwrap();
            let mut r = String::new();
            c.read_to_string(&mut r).unwrap();
            r
        };
        let full = get("");
        assert!(
            full.starts_with("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n"),
            "{full}"
        );
        assert!(full.ends_with("\r\n\r\n0123456789"), "{full}");
        let part = get("Range: bytes=7-\r\n");
        assert!(
            part.contains("206 Partial Content") && part.contains("bytes 7-9/10"),
            "{part}"
        );
        assert!(part.ends_with("\r\n\r\n789"), "{part}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
