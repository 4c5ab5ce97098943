//! Getting an index and image files: HTTP or HTTPS (the client is in [`super::net`]) or a
//! local path.
//!
//! Downloads append to a `.part` file and resume with `Range: bytes=N-` after a cut
//! connection or a timeout; the caller checks the SHA-256 before renaming the file.

use super::index::{self, Index};
use super::net;
use super::signature::{self, Policy};
use super::ImageError;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest index fugu accepts (a sanity limit, not a format limit).
const MAX_INDEX_BYTES: u64 = 8 << 20;
/// Each HTTP request may take this long; a longer download continues in the next request
/// from where this one stopped, so the limit only bounds a stalled connection.
const REQUEST_TIMEOUT_S: u64 = 60;
/// When a file's download gives up. Progress is a byte further into the file than any
/// earlier attempt got: bytes fetched again after a restart (a server that mangles Range
/// requests and cuts plain GETs) are not progress, so they cannot keep a download alive.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Attempts in a row without progress.
    pub fruitless: u32,
    /// Attempts in all (requests) for one file.
    pub attempts: u32,
    /// Time for one file: `base` plus one second per `per_second` bytes of it.
    pub base: Duration,
    pub per_second: u64,
    /// The pause before the n-th retry in a row is n times this.
    pub backoff: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fruitless: 5,
            attempts: 100,
            // An hour, plus the time the file takes at 64 KiB/s (1 GiB: 4.5 hours more).
            base: Duration::from_secs(3600),
            per_second: 64 << 10,
            backoff: Duration::from_millis(200),
        }
    }
}

/// Where an index (and the files next to it) lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An http:// or https:// URL.
    Http(String),
    Local(PathBuf),
}

impl Location {
    /// `--index` as the user gave it: http://..., file://... or a path.
    pub fn parse(s: &str) -> Result<Location, ImageError> {
        let lower = s.to_ascii_lowercase();
        for scheme in ["http://", "https://"] {
            if lower.starts_with(scheme) {
                let rest = &s[scheme.len()..];
                if rest.is_empty() || rest.starts_with('/') {
                    return Err(ImageError::BadUrl(format!("'{s}' has no host")));
                }
                return Ok(Location::Http(s.to_string()));
            }
        }
        if let Some(p) = s.strip_prefix("file://") {
            return Ok(Location::Local(PathBuf::from(p)));
        }
        if s.contains("://") {
            return Err(ImageError::BadUrl(format!(
                "'{s}': only http:// and https:// URLs and local paths are supported"
            )));
        }
        Ok(Location::Local(PathBuf::from(s)))
    }

    /// The index's detached signature: the same URL or path with `.asc` appended to the
    /// file name (before a query or fragment).
    pub fn signature(&self) -> Location {
        match self {
            Location::Http(u) => {
                let end = u.find(['?', '#']).unwrap_or(u.len());
                Location::Http(format!("{}.asc{}", &u[..end], &u[end..]))
            }
            Location::Local(p) => {
                let mut s = p.as_os_str().to_owned();
                s.push(".asc");
                Location::Local(PathBuf::from(s))
            }
        }
    }

    /// A file published next to the index (`rel` is a validated relative path).
    pub fn join(&self, rel: &str) -> Location {
        match self {
            Location::Http(u) => {
                // Drop a query or fragment, then the last path component.
                let base = u.split(['?', '#']).next().unwrap_or(u);
                let host_at = base.find("://").map_or(0, |i| i + 3);
                let dir = match base.rfind('/') {
                    Some(i) if i >= host_at => &base[..=i],
                    _ => return Location::Http(format!("{base}/{rel}")),
                };
                Location::Http(format!("{dir}{rel}"))
            }
            Location::Local(p) => Location::Local(
                p.parent()
                    .unwrap_or(Path::new("."))
                    .join(rel.replace('/', std::path::MAIN_SEPARATOR_STR)),
            ),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Http(u) => f.write_str(u),
            Location::Local(p) => write!(f, "{}", p.display()),
        }
    }
}

fn get(url: &str, range_from: u64) -> Result<net::Response, ImageError> {
    net::get(url, range_from, Duration::from_secs(REQUEST_TIMEOUT_S))
}

fn header<'a>(r: &'a net::Response, name: &str) -> Option<&'a str> {
    r.header(name)
}

/// Fetch, check the signature of (unless `policy` says to skip it), parse and validate an
/// index. The bytes that are verified are the bytes that are parsed.
pub fn fetch_index(loc: &Location, policy: &Policy) -> Result<Index, ImageError> {
    let url = loc.to_string();
    let bytes = fetch_small(loc, MAX_INDEX_BYTES)?;
    if bytes.len() as u64 > MAX_INDEX_BYTES {
        // Said as such, not as a signature over the truncated bytes that fails.
        return Err(ImageError::BadIndex {
            url,
            msg: format!("larger than {MAX_INDEX_BYTES} bytes"),
        });
    }
    if let Policy::Verify(keyring) = policy {
        let sig_loc = loc.signature();
        let sig = match fetch_small(&sig_loc, signature::MAX_SIGNATURE_BYTES) {
            Ok(sig) => sig,
            // Not there: the index is unsigned. Any other failure (a timeout, a 503) is a
            // network error like any other, not a verdict on the index.
            Err(ImageError::Network { msg, .. }) if is_absent(&sig_loc, &msg) => {
                return Err(ImageError::Unsigned {
                    url,
                    sig: sig_loc.to_string(),
                    msg,
                })
            }
            Err(e) => return Err(e),
        };
        if sig.len() as u64 > signature::MAX_SIGNATURE_BYTES {
            return Err(ImageError::Signature {
                url,
                msg: format!(
                    "{sig_loc} is larger than {} bytes",
                    signature::MAX_SIGNATURE_BYTES
                ),
            });
        }
        signature::verify(&bytes, &sig, keyring).map_err(|r| ImageError::Signature {
            url: url.clone(),
            msg: r.0,
        })?;
    }
    parse_index(&url, &bytes)
}

/// Whether a failed fetch of `loc` means that the file does not exist.
fn is_absent(loc: &Location, msg: &str) -> bool {
    match loc {
        Location::Local(p) => !p.exists(),
        Location::Http(_) => msg.starts_with("HTTP 404 ") || msg.starts_with("HTTP 410 "),
    }
}

/// A small file (an index or its signature), whole: at most `max + 1` bytes are read, so
/// that the caller can tell a file that is too large.
fn fetch_small(loc: &Location, max: u64) -> Result<Vec<u8>, ImageError> {
    let url = loc.to_string();
    Ok(match loc {
        Location::Local(p) => {
            let f = std::fs::File::open(p).map_err(|e| ImageError::Network {
                url: url.clone(),
                msg: e.to_string(),
            })?;
            let mut buf = Vec::new();
            f.take(max + 1)
                .read_to_end(&mut buf)
                .map_err(|e| ImageError::Network {
                    url: url.clone(),
                    msg: e.to_string(),
                })?;
            buf
        }
        Location::Http(u) => {
            let mut last = None;
            let mut body = None;
            for attempt in 0..3u64 {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_millis(300 * attempt));
                }
                match get(u, 0) {
                    Ok(r) if r.status == 200 => {
                        let mut buf = Vec::new();
                        match r.take(max + 1).read_to_end(&mut buf) {
                            Ok(_) => {
                                body = Some(buf);
                                break;
                            }
                            Err(e) => last = Some(e.to_string()),
                        }
                    }
                    Ok(r) => {
                        return Err(ImageError::Network {
                            url,
                            msg: format!("HTTP {} {}", r.status, r.reason),
                        })
                    }
                    Err(ImageError::Network { msg, .. }) => last = Some(msg),
                    Err(e) => return Err(e),
                }
            }
            body.ok_or_else(|| ImageError::Network {
                url: url.clone(),
                msg: last.unwrap_or_default(),
            })?
        }
    })
}

pub fn parse_index(url: &str, bytes: &[u8]) -> Result<Index, ImageError> {
    let bad = |msg: String| ImageError::BadIndex {
        url: url.to_string(),
        msg,
    };
    if bytes.len() as u64 > MAX_INDEX_BYTES {
        return Err(bad(format!("larger than {MAX_INDEX_BYTES} bytes")));
    }
    let idx: Index = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    idx.validate().map_err(|problem| ImageError::InvalidIndex {
        url: url.to_string(),
        problem: Box::new(problem),
    })?;
    Ok(idx)
}

/// Progress for one file: called with the bytes received so far.
pub trait Progress {
    fn set(&self, done: u64);
    fn note(&self, msg: &str);
}

/// Download `file` from `src` into `part`, appending to what an earlier attempt left there.
/// Returns when `part` holds exactly `file.size` bytes, with the hex SHA-256 of those bytes
/// (hashed as they arrive, not read back); the caller compares it with the index.
pub fn download(
    src: &Location,
    file: &index::File,
    part: &Path,
    progress: &dyn Progress,
) -> Result<String, ImageError> {
    download_with(src, file, part, progress, &Limits::default())
}

/// [`download`] with other [`Limits`] (tests use small ones).
pub fn download_with(
    src: &Location,
    file: &index::File,
    part: &Path,
    progress: &dyn Progress,
    limits: &Limits,
) -> Result<String, ImageError> {
    let what = src.to_string();
    match src {
        Location::Local(p) => {
            let mut from = std::fs::File::open(p).map_err(|e| ImageError::Network {
                url: what.clone(),
                msg: e.to_string(),
            })?;
            let mut to =
                std::fs::File::create(part).map_err(|e| ImageError::io(part.display(), e))?;
            let mut hash = Hashed::default();
            copy_counting(&mut from, &mut to, 0, file.size, progress, &mut hash)
                .map_err(|e| ImageError::io(&what, e))?;
            check_len(part, file.size, &what)?;
            Ok(hash.finish())
        }
        Location::Http(url) => download_http(url, file.size, part, progress, limits),
    }
}

fn check_len(part: &Path, size: u64, what: &str) -> Result<(), ImageError> {
    let got = std::fs::metadata(part)
        .map_err(|e| ImageError::io(part.display(), e))?
        .len();
    if got != size {
        let _ = std::fs::remove_file(part);
        return Err(ImageError::Size {
            what: what.to_string(),
            expected: size,
            got,
        });
    }
    Ok(())
}

/// The SHA-256 of the first `len` bytes of a `.part` file, kept up to date as bytes are
/// appended, so that a download is hashed once, as it arrives.
#[derive(Default)]
struct Hashed {
    sha: Sha256,
    len: u64,
}

impl Hashed {
    fn add(&mut self, b: &[u8]) {
        self.sha.update(b);
        self.len += b.len() as u64;
    }

    /// Make the state cover exactly `part[..upto]` before bytes are appended there: nothing
    /// to do when it already does (the usual case), else hash that prefix again from the file
    /// (a resumed download, or a write that failed halfway).
    fn cover(&mut self, part: &Path, upto: u64) -> std::io::Result<()> {
        if self.len == upto {
            return Ok(());
        }
        *self = Hashed::default();
        let mut f = std::fs::File::open(part)?.take(upto);
        let mut buf = vec![0u8; READ_BUF];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            self.add(&buf[..n]);
        }
        if self.len != upto {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    fn finish(self) -> String {
        super::hex(&self.sha.finalize())
    }
}

/// Bytes moved per read: large, so that a fast link costs few system calls.
const READ_BUF: usize = 1 << 20;

/// Copy until EOF or until `limit` bytes are in the file (then stop: the server sent more
/// than the index says, which the caller reports). Every byte written is hashed into `hash`.
fn copy_counting(
    from: &mut dyn Read,
    to: &mut std::fs::File,
    mut done: u64,
    limit: u64,
    progress: &dyn Progress,
    hash: &mut Hashed,
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            to.flush()?;
            return Ok(done);
        }
        to.write_all(&buf[..n])?;
        hash.add(&buf[..n]);
        done += n as u64;
        progress.set(done);
        if done > limit {
            to.flush()?;
            return Ok(done);
        }
    }
}

/// "bytes 100-199/200" -> (100, Some(200)).
fn content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim();
    let (range, total) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

fn download_http(
    url: &str,
    size: u64,
    part: &Path,
    progress: &dyn Progress,
    limits: &Limits,
) -> Result<String, ImageError> {
    let started = std::time::Instant::now();
    let mut hash = Hashed {
        // Not what `part` holds yet: the first append hashes what a past attempt left.
        len: u64::MAX,
        ..Hashed::default()
    };
    let deadline = limits
        .base
        .saturating_add(Duration::from_secs(size / limits.per_second.max(1)));
    let mut fruitless = 0;
    let mut attempts = 0;
    let mut last_err = String::new();
    // The most bytes `part` has held: what counts as progress.
    let mut furthest = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    // Set once the server answers a Range request with some other range: from then on
    // every attempt asks for the whole file instead of resuming.
    let mut no_ranges = false;
    loop {
        let mut have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if have > size {
            // Not ours to trust: start again.
            std::fs::remove_file(part).map_err(|e| ImageError::io(part.display(), e))?;
            continue;
        }
        if have == size {
            hash.cover(part, size)
                .map_err(|e| ImageError::io(part.display(), e))?;
            return Ok(hash.finish());
        }
        let gave_up = if fruitless >= limits.fruitless {
            Some(format!(
                "{fruitless} attempts in a row got no further into the file"
            ))
        } else if attempts >= limits.attempts {
            Some(format!("{attempts} attempts"))
        } else if started.elapsed() >= deadline {
            Some(format!(
                "{} s, the most a file of {size} bytes may take",
                deadline.as_secs()
            ))
        } else {
            None
        };
        if let Some(why) = gave_up {
            return Err(ImageError::Network {
                url: url.to_string(),
                msg: format!("{last_err} (gave up after {why})"),
            });
        }
        if fruitless > 0 {
            progress.note(&format!("retrying from byte {have}: {last_err}"));
            std::thread::sleep(limits.backoff * fruitless);
        }
        if no_ranges && have > 0 {
            std::fs::remove_file(part).map_err(|e| ImageError::io(part.display(), e))?;
            have = 0;
        }
        attempts += 1;
        let resp = match get(url, have) {
            Ok(r) => r,
            Err(ImageError::Network { msg, .. }) => {
                last_err = msg;
                fruitless += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut start = have;
        match resp.status {
            206 => {
                let cr = header(&resp, "Content-Range").and_then(content_range);
                match cr {
                    Some((s, total)) if s == have => {
                        if let Some(t) = total {
                            if t != size {
                                let _ = std::fs::remove_file(part);
                                return Err(ImageError::Size {
                                    what: url.to_string(),
                                    expected: size,
                                    got: t,
                                });
                            }
                        }
                    }
                    _ => {
                        last_err = "the server answered a Range request with another range".into();
                        std::fs::remove_file(part)
                            .map_err(|e| ImageError::io(part.display(), e))?;
                        no_ranges = true;
                        fruitless += 1;
                        continue;
                    }
                }
            }
            200 => {
                // The whole file (a server without Range support, or a fresh start).
                if let Some(len) =
                    header(&resp, "Content-Length").and_then(|v| v.parse::<u64>().ok())
                {
                    if len != size {
                        let _ = std::fs::remove_file(part);
                        return Err(ImageError::Size {
                            what: url.to_string(),
                            expected: size,
                            got: len,
                        });
                    }
                }
                start = 0;
            }
            416 => {
                // Nothing left to send from `have`: the file on the server is shorter.
                let _ = std::fs::remove_file(part);
                last_err = "HTTP 416 Range Not Satisfiable".into();
                fruitless += 1;
                continue;
            }
            code if (500..600).contains(&code) => {
                last_err = format!("HTTP {code} {}", resp.reason);
                fruitless += 1;
                continue;
            }
            code => {
                return Err(ImageError::Network {
                    url: url.to_string(),
                    msg: format!("HTTP {code} {}", resp.reason),
                })
            }
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(start > 0)
            .write(true)
            .truncate(start == 0)
            .open(part)
            .map_err(|e| ImageError::io(part.display(), e))?;
        hash.cover(part, start)
            .map_err(|e| ImageError::io(part.display(), e))?;
        let mut body = resp;
        let result = copy_counting(&mut body, &mut f, start, size, progress, &mut hash);
        drop(f);
        let now = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if now > size {
            let _ = std::fs::remove_file(part);
            return Err(ImageError::Size {
                what: url.to_string(),
                expected: size,
                got: now,
            });
        }
        match result {
            Ok(_) if now == size => {
                hash.cover(part, size)
                    .map_err(|e| ImageError::io(part.display(), e))?;
                return Ok(hash.finish());
            }
            Ok(_) => last_err = format!("connection closed after {now} of {size} bytes"),
            Err(e) => last_err = e.to_string(),
        }
        if now > furthest {
            furthest = now;
            fruitless = 0;
        }
        fruitless += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_join() {
        // The default's images are its release's other assets, beside it.
        assert_eq!(
            Location::parse(super::super::DEFAULT_INDEX)
                .unwrap()
                .join("debian-amd64.vmlinuz")
                .to_string(),
            format!(
                "https://github.com/fugu-vmm/fugu/releases/download/v{}/debian-amd64.vmlinuz",
                env!("CARGO_PKG_VERSION")
            )
        );
        let s = Location::parse("HTTPS://x:8443/v1/i.json").unwrap();
        assert_eq!(s.join("a/b.img").to_string(), "HTTPS://x:8443/v1/a/b.img");
        assert_eq!(
            Location::parse("https://x").unwrap().join("a").to_string(),
            "https://x/a"
        );
        assert!(matches!(
            Location::parse("https:///i.json"),
            Err(ImageError::BadUrl(_))
        ));
        assert!(matches!(
            Location::parse("ftp://x/i.json"),
            Err(ImageError::BadUrl(_))
        ));
        assert!(matches!(
            Location::parse("http:///i.json"),
            Err(ImageError::BadUrl(_))
        ));
        let h = Location::parse("http://127.0.0.1:8000/v1/index.json").unwrap();
        assert_eq!(
            h.join("a/b.img").to_string(),
            "http://127.0.0.1:8000/v1/a/b.img"
        );
        let h = Location::parse("http://host").unwrap();
        assert_eq!(h.join("a").to_string(), "http://host/a");
        let l = Location::parse("/srv/images/index.json").unwrap();
        assert_eq!(
            l.join("x/y"),
            Location::Local(PathBuf::from("/srv/images/x/y"))
        );
        assert_eq!(
            Location::parse("file:///srv/index.json").unwrap(),
            Location::Local(PathBuf::from("/srv/index.json"))
        );
    }

    #[test]
    fn content_ranges_parse() {
        assert_eq!(content_range("bytes 100-199/200"), Some((100, Some(200))));
        assert_eq!(content_range("bytes 0-9/*"), Some((0, None)));
        assert_eq!(content_range("items 1-2/3"), None);
    }

    #[test]
    fn broken_indexes_are_refused() {
        assert!(matches!(
            parse_index("u", b"{not json"),
            Err(ImageError::BadIndex { .. })
        ));
        assert!(matches!(
            parse_index("u", b"[]"),
            Err(ImageError::BadIndex { .. })
        ));
        let wrong_format = br#"{"format":"other","format_version":1,"created":"x","images":[]}"#;
        let e = parse_index("u", wrong_format).unwrap_err().to_string();
        assert!(e.contains("not a fugu image index"), "{e}");
        let future =
            br#"{"format":"fugu-image-index","format_version":99,"created":"x","images":[]}"#;
        assert!(parse_index("u", future)
            .unwrap_err()
            .to_string()
            .contains("upgrade fugu"));
        let ok = br#"{"format":"fugu-image-index","format_version":1,"created":"x","images":[]}"#;
        assert!(parse_index("u", ok).is_ok());
    }
}
