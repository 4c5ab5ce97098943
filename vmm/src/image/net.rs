//! The HTTP(S) client of `fugu image`: ureq with rustls (the `ring` provider, which builds on
//! both fugu targets), certificates verified against the system's CA store, the usual proxy
//! variables, and TLS errors that name the host and the reason.
//!
//! - CA store: `rustls-native-certs`, like OpenSSL: `SSL_CERT_FILE` (a PEM bundle) and/or
//!   `SSL_CERT_DIR` (`:`-separated directories) when set, instead of the system store
//!   (`/etc/ssl/certs` on Debian). Loaded once, on the first `https://` request.
//! - Proxies: `https_proxy`/`HTTPS_PROXY` for https:// URLs, `http_proxy`/`HTTP_PROXY` for
//!   http:// URLs, `all_proxy`/`ALL_PROXY` for both; `no_proxy`/`NO_PROXY` lists the hosts
//!   reached directly. HTTPS goes through an HTTP proxy with CONNECT, still verified end to end.
//! - An `https://` URL never follows a redirect to `http://`.

use super::ImageError;
use std::io::Read;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// One answer: status, headers and a body to read.
pub struct Response {
    pub status: u16,
    pub reason: String,
    headers: Vec<(String, String)>,
    body: Box<dyn Read + Send>,
}

impl Response {
    /// The value of header `name` (any case), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }
}

impl Read for Response {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.body.read(buf)
    }
}

type Certs = Arc<Vec<ureq::tls::Certificate<'static>>>;

/// The CA store https:// is verified against, loaded once per process: the certificates, and
/// what could not be read (said with a certificate error, as a typo in SSL_CERT_FILE is one
/// likely cause).
struct Roots {
    certs: Certs,
    problems: String,
}

fn roots(host: &str, url: &str) -> Result<&'static Roots, ImageError> {
    #[cfg(test)]
    if let Some(r) = tests::ROOTS.get() {
        return Ok(r);
    }
    static ROOTS: OnceLock<Result<Roots, String>> = OnceLock::new();
    ROOTS
        .get_or_init(load_roots)
        .as_ref()
        .map_err(|msg| ImageError::Tls {
            url: url.to_string(),
            host: host.to_string(),
            msg: msg.clone(),
        })
}

fn load_roots() -> Result<Roots, String> {
    let found = rustls_native_certs::load_native_certs();
    let where_ = match (
        std::env::var_os("SSL_CERT_FILE"),
        std::env::var_os("SSL_CERT_DIR"),
    ) {
        (None, None) => "the system's CA store (/etc/ssl/certs)".to_string(),
        (f, d) => [("SSL_CERT_FILE", f), ("SSL_CERT_DIR", d)]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}={}", v.to_string_lossy())))
            .collect::<Vec<_>>()
            .join(" and "),
    };
    let problems = found
        .errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    if found.certs.is_empty() {
        return Err(format!(
            "no CA certificates found in {where_}{}{problems}: install Debian's ca-certificates, or point SSL_CERT_FILE at a PEM bundle",
            if problems.is_empty() { "" } else { ": " }
        ));
    }
    Ok(Roots {
        certs: Arc::new(
            found
                .certs
                .into_iter()
                .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
                .collect(),
        ),
        problems: if problems.is_empty() {
            String::new()
        } else {
            format!("; reading {where_}: {problems}")
        },
    })
}

/// The value of the first of `vars` that is set and not empty.
fn env_first(env: &dyn Fn(&str) -> Option<String>, vars: &[&str]) -> Option<String> {
    vars.iter()
        .filter_map(|v| env(v))
        .map(|v| v.trim().to_string())
        .find(|v| !v.is_empty())
}

/// Whether `no_proxy` (curl's syntax: comma-separated host names, domains with or without a
/// leading dot or `*.`, IP addresses, `*` for all; an optional `:port` is ignored) names `host`.
fn no_proxy_matches(no_proxy: &str, host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    no_proxy.split([',', ' ']).any(|e| {
        let e = e.trim();
        if e == "*" {
            return true;
        }
        let e = match e.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None if e.matches(':').count() == 1 => e.split(':').next().unwrap_or(""),
            None => e,
        };
        let e = e.trim_start_matches('*').trim_start_matches('.');
        let e = e.to_ascii_lowercase();
        !e.is_empty()
            && (host == e
                || (host.len() > e.len()
                    && host.ends_with(&e)
                    && host.as_bytes()[host.len() - e.len() - 1] == b'.'))
    })
}

/// The proxy for `scheme://host...` from the environment (`env` looks a variable up).
pub fn proxy_for(scheme: &str, host: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let vars: &[&str] = if scheme == "https" {
        &["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
    } else {
        &["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
    };
    let proxy = env_first(env, vars)?;
    match env_first(env, &["no_proxy", "NO_PROXY"]) {
        Some(np) if no_proxy_matches(&np, host) => None,
        _ => Some(proxy),
    }
}

/// Scheme and host (without port or user) of an http(s) URL.
fn scheme_host(url: &str) -> (&str, &str) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host = if authority.starts_with('[') {
        authority.split(']').next().map_or("", |h| &h[1..])
    } else {
        authority.split(':').next().unwrap_or("")
    };
    (scheme, host)
}

/// GET `url`, asking for the bytes from `range_from` on when it is not 0; `timeout` bounds
/// the whole request, body included. A network error or a timeout is
/// [`ImageError::Network`] (the caller may retry); a TLS failure (a certificate that does not
/// verify, no CA store) is [`ImageError::Tls`], which retrying cannot mend.
pub fn get(url: &str, range_from: u64, timeout: Duration) -> Result<Response, ImageError> {
    let (scheme, host) = scheme_host(url);
    let https = scheme.eq_ignore_ascii_case("https");
    let network = |msg: String| ImageError::Network {
        url: url.to_string(),
        msg,
    };
    // The unit tests' servers are on loopback, whatever proxy the machine running them has.
    let env = |v: &str| {
        if cfg!(test) {
            None
        } else {
            std::env::var(v).ok()
        }
    };
    let proxy = match proxy_for(&scheme.to_ascii_lowercase(), host, &env) {
        Some(p) => Some(
            ureq::Proxy::new(&p)
                .map_err(|e| network(format!("the proxy '{p}' is not usable: {e}")))?,
        ),
        None => None,
    };
    let mut problems = "";
    let mut tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()));
    // An http:// URL needs the store only if it redirects to https://: without one, such a
    // redirect fails verification (ureq has no store of its own in this build).
    match roots(host, url) {
        Ok(roots) => {
            problems = &roots.problems;
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(roots.certs.clone()));
        }
        Err(e) if https => return Err(e),
        Err(_) => tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(Vec::new()))),
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .https_only(https)
        .timeout_global(Some(timeout))
        .user_agent(concat!("fugu/", env!("CARGO_PKG_VERSION")))
        .proxy(proxy)
        .tls_config(tls.build())
        .build()
        .into();
    let mut req = agent.get(url);
    if range_from > 0 {
        req = req.header("Range", format!("bytes={range_from}-"));
    }
    let resp = req.call().map_err(|e| match tls_reason(&e, problems) {
        Some(msg) => ImageError::Tls {
            url: url.to_string(),
            host: host.to_string(),
            msg,
        },
        None => network(describe(&e)),
    })?;
    let status = resp.status();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    Ok(Response {
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("").to_string(),
        headers,
        body: Box::new(resp.into_body().into_reader()),
    })
}

/// A ureq error in words, without the crate's wording where it is terse.
fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::RequireHttpsOnly(u) => {
            format!("refused to follow a redirect from https:// to {u}")
        }
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::Io(io) => io.to_string(),
        e => e.to_string(),
    }
}

/// What to do about a certificate from an unknown CA.
const UNTRUSTED: &str = " (self-signed, or a private CA: trust it with SSL_CERT_FILE or the system store, see docs/images.md)";

/// The rustls error inside `e`, if any, in words.
fn tls_reason(e: &ureq::Error, store_problems: &str) -> Option<String> {
    let err: &rustls::Error = match e {
        ureq::Error::Rustls(r) => r,
        ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>()?,
        ureq::Error::Tls(msg) => return Some((*msg).to_string()),
        _ => return None,
    };
    use rustls::CertificateError as C;
    Some(match err {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => format!("its certificate is not signed by a CA that this machine trusts{UNTRUSTED}{store_problems}"),
            // webpki's CaUsedAsEndEntity: what `openssl req -x509` makes by default.
            c if format!("{c:?}").contains("CaUsedAsEndEntity") => format!(
                "its certificate is self-signed (a CA certificate used as the server's own), not signed by a CA that this machine trusts{UNTRUSTED}{store_problems}"
            ),
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                format!("its certificate is not valid for this host name ({c})")
            }
            C::Expired | C::ExpiredContext { .. } => format!("its certificate has expired ({c})"),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                format!("its certificate is not valid yet; is the clock right? ({c})")
            }
            c => format!("its certificate is not acceptable ({c})"),
        },
        e => format!("the TLS handshake failed ({e})"),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The CA store of the unit tests (set once by the HTTPS tests; the environment is left
    /// alone, as tests run in parallel).
    pub(super) static ROOTS: OnceLock<Roots> = OnceLock::new();

    /// Make `certs` the CA store of this test process.
    pub fn trust(certs: Vec<ureq::tls::Certificate<'static>>) {
        ROOTS.get_or_init(|| Roots {
            certs: Arc::new(certs),
            problems: String::new(),
        });
    }

    #[test]
    fn proxies_are_chosen_by_scheme_and_no_proxy() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let env = vars(&[
            ("https_proxy", "http://sp:3128"),
            ("http_proxy", "http://p:3128"),
            ("no_proxy", "localhost, .internal,example.org:8080,[::1]"),
        ]);
        assert_eq!(
            proxy_for("https", "a.b", &env).as_deref(),
            Some("http://sp:3128")
        );
        assert_eq!(
            proxy_for("http", "a.b", &env).as_deref(),
            Some("http://p:3128")
        );
        for direct in [
            "localhost",
            "x.internal",
            "internal",
            "example.org",
            "w.example.org",
            "::1",
        ] {
            assert_eq!(proxy_for("https", direct, &env), None, "{direct}");
        }
        assert!(proxy_for("https", "notexample.org", &env).is_some());
        let upper = vars(&[("HTTPS_PROXY", "http://u:1"), ("ALL_PROXY", "http://all:1")]);
        assert_eq!(
            proxy_for("https", "h", &upper).as_deref(),
            Some("http://u:1")
        );
        assert_eq!(
            proxy_for("http", "h", &upper).as_deref(),
            Some("http://all:1")
        );
        let all_direct = vars(&[("all_proxy", "http://all:1"), ("NO_PROXY", "*")]);
        assert_eq!(proxy_for("http", "h", &all_direct), None);
        let empty = vars(&[("https_proxy", ""), ("http_proxy", "http://p:1")]);
        assert_eq!(proxy_for("https", "h", &empty), None);
    }

    #[test]
    fn hosts_are_found_in_urls() {
        assert_eq!(
            scheme_host("https://h.example:8443/v1/i.json"),
            ("https", "h.example")
        );
        assert_eq!(scheme_host("http://u:pw@h/x"), ("http", "h"));
        assert_eq!(scheme_host("https://[::1]:4443/i"), ("https", "::1"));
        assert_eq!(scheme_host("http://h?q"), ("http", "h"));
    }
}
