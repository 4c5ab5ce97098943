//! `fugu image pull` over HTTPS with both fugu builds, as an operator runs it: a published
//! tree served by Python's http.server wrapped in TLS on loopback, with certificates that
//! `openssl` makes here (a test CA, a server certificate it signs for 127.0.0.1, and one for
//! another host name). The CA is trusted through `SSL_CERT_FILE` only; without it the
//! system's CA store does not know it. A small CONNECT proxy (Python) checks `https_proxy`
//! and `no_proxy`.

use fugu_e2e::{fugu_builds, tempdir, unmet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The environment variables that would change which CA store or proxy fugu uses.
const SCRUBBED: &[&str] = &[
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "https_proxy",
    "HTTPS_PROXY",
    "http_proxy",
    "HTTP_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "FUGU_IMAGE_INDEX",
];

fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// `ca.pem`, and `good.pem`/`good.key` (for IP 127.0.0.1) and `wrong-name.pem`/`.key` (for
/// DNS wrong.example), both signed by the CA.
fn make_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509", "-days", "30", "-subj", "/CN=fugu e2e CA"];
    a.extend(ec);
    a.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &a);
    for (kind, san) in [
        ("good", "IP:127.0.0.1"),
        ("wrong-name", "DNS:wrong.example"),
    ] {
        let (key, csr, pem, ext) = (
            format!("{kind}.key"),
            format!("{kind}.csr"),
            format!("{kind}.pem"),
            format!("{kind}.ext"),
        );
        let mut a = vec!["req", "-subj", "/CN=fugu e2e server"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &csr]);
        openssl(dir, &a);
        std::fs::write(dir.join(&ext), format!("subjectAltName={san}\n")).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "30",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ],
        );
    }
}

/// A published tree with one image, "demo" (kind bios-disk, one 300 KB disk) under `v1/`;
/// returns the disk's bytes.
fn publish(dir: &Path) -> Vec<u8> {
    fugu_e2e::publish_demo_image(&dir.join("v1"), 300_000)
}

/// Python's http.server over TLS on 127.0.0.1 (a free port), serving `root`.
struct HttpsServer {
    child: Child,
    port: u16,
}

const SERVER_PY: &str = r#"
import functools, http.server, ssl, sys
root, cert, key = sys.argv[1:4]
class H(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(H, directory=root))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

/// An HTTP proxy that serves CONNECT only, to this machine only (403 for any other host, so
/// no test reaches the network), logging each request line to a file.
const PROXY_PY: &str = r#"
import socket, sys, threading
log = sys.argv[1]
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(16)
print(srv.getsockname()[1], flush=True)
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
def handle(c):
    f = c.makefile("rb")
    line = f.readline().decode()
    while f.readline() not in (b"\r\n", b""):
        pass
    with open(log, "a") as l:
        l.write(line)
    parts = line.split()
    if len(parts) < 2 or parts[0] != "CONNECT":
        c.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
        c.close()
        return
    host, port = parts[1].rsplit(":", 1)
    if host != "127.0.0.1":
        c.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        c.close()
        return
    u = socket.create_connection((host, int(port)))
    c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    threading.Thread(target=pipe, args=(c, u), daemon=True).start()
    pipe(u, c)
while True:
    c, _ = srv.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"#;

impl HttpsServer {
    fn start(root: &Path, certs: &Path, kind: &str) -> HttpsServer {
        HttpsServer::python(
            SERVER_PY,
            &[
                root.to_path_buf(),
                certs.join(format!("{kind}.pem")),
                certs.join(format!("{kind}.key")),
            ],
        )
    }

    /// A Python program that prints its port first.
    fn python(program: &str, args: &[PathBuf]) -> HttpsServer {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let (child, port) = fugu_e2e::python_server(program, &args, "HTTPS");
        HttpsServer { child, port }
    }

    fn index(&self) -> String {
        format!("https://127.0.0.1:{}/v1/index.json", self.port)
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pull(bin: &Path, index: &str, cache: &Path, ca: Option<&Path>) -> Output {
    pull_env(bin, index, cache, ca, &[])
}

fn pull_env(
    bin: &Path,
    index: &str,
    cache: &Path,
    ca: Option<&Path>,
    env: &[(&str, &str)],
) -> Output {
    let mut c = Command::new(bin);
    for v in SCRUBBED {
        c.env_remove(v);
    }
    if let Some(ca) = ca {
        c.env("SSL_CERT_FILE", ca);
    }
    c.envs(env.iter().copied());
    // These tests are about TLS and proxies; the index's signature has its own tests
    // (vmm/src/image/tests.rs, tests/tests/release.rs).
    c.args([
        "image",
        "--index",
        index,
        "--insecure-skip-signature",
        "--cache",
    ])
    .arg(cache)
    .args(["pull", "demo"])
    .stdin(Stdio::null())
    .output()
    .unwrap()
}

/// Every file under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out.sort();
    out
}

/// With the test CA trusted (SSL_CERT_FILE) the pull succeeds and the cached disk has the
/// index's SHA-256; without it, and against a certificate for another host name, the pull
/// fails with a TLS error naming the host and the reason, and the cache stays as it was.
#[test]
fn pull_over_https_verifies_the_server_on_both_builds() {
    for (tool, arg) in [("openssl", "version"), ("python3", "--version")] {
        if !have(tool, arg) {
            unmet(&format!(
                "{tool} is not installed (Debian: apt-get install {tool})"
            ));
            return;
        }
    }
    let dir = tempdir();
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    make_certs(&certs);
    let ca = certs.join("ca.pem");
    let data = publish(&dir.join("pub"));
    let good = HttpsServer::start(&dir.join("pub"), &certs, "good");
    let wrong = HttpsServer::start(&dir.join("pub"), &certs, "wrong-name");
    for (build, bin) in fugu_builds() {
        let cache = dir.join(format!("cache-{build}"));
        // A cache that already holds something, which a failed pull must leave alone.
        std::fs::create_dir_all(cache.join("other")).unwrap();
        std::fs::write(cache.join("other/keep"), b"x").unwrap();
        let before = tree(&cache);

        // The system's CA store alone does not know the test CA.
        let o = pull(&bin, &good.index(), &cache, None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{build}: {o:?}");
        assert!(
            err.contains("TLS with 127.0.0.1 failed")
                && err.contains("not signed by a CA that this machine trusts"),
            "{build}: {err}"
        );
        assert_eq!(tree(&cache), before, "{build}: the cache changed");

        // The right CA, but a certificate for another name.
        let o = pull(&bin, &wrong.index(), &cache, Some(&ca));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{build}: {o:?}");
        assert!(
            err.contains("TLS with 127.0.0.1 failed")
                && err.contains("not valid for this host name"),
            "{build}: {err}"
        );
        assert_eq!(tree(&cache), before, "{build}: the cache changed");

        // Trusted: the pull succeeds and the disk is the published one.
        let o = pull(&bin, &good.index(), &cache, Some(&ca));
        assert!(o.status.success(), "{build}: {o:?}");
        let got = std::fs::read(cache.join("demo/disk.img")).unwrap();
        assert_eq!(
            fugu_common::digest::sha256_bytes(&got),
            fugu_common::digest::sha256_bytes(&data),
            "{build}"
        );
        assert!(cache.join("other/keep").exists(), "{build}");
    }
    drop((good, wrong));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `https_proxy` sends the pull through the proxy with CONNECT (still verified end to end);
/// `no_proxy` naming the host goes direct.
#[test]
fn pull_over_https_through_a_proxy_on_both_builds() {
    for (tool, arg) in [("openssl", "version"), ("python3", "--version")] {
        if !have(tool, arg) {
            unmet(&format!(
                "{tool} is not installed (Debian: apt-get install {tool})"
            ));
            return;
        }
    }
    let dir = tempdir();
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    make_certs(&certs);
    let ca = certs.join("ca.pem");
    publish(&dir.join("pub"));
    let server = HttpsServer::start(&dir.join("pub"), &certs, "good");
    let log = dir.join("proxy.log");
    let proxy = HttpsServer::python(PROXY_PY, std::slice::from_ref(&log));
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let connect = format!("CONNECT 127.0.0.1:{} ", server.port);
    let seen = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(&connect))
            .count()
    };
    for (build, bin) in fugu_builds() {
        let cache = dir.join(format!("cache-{build}"));
        let before = seen();
        let env = [("https_proxy", proxy_url.as_str())];
        let o = pull_env(&bin, &server.index(), &cache, Some(&ca), &env);
        assert!(o.status.success(), "{build}: {o:?}");
        // The index and the disk, each through the proxy.
        assert!(
            seen() >= before + 2,
            "{build}: {:?}",
            std::fs::read_to_string(&log)
        );
        // Through the proxy too, a certificate the store does not know is refused.
        let o = pull_env(&bin, &server.index(), &dir.join("c2"), None, &env);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("not signed by a CA"), "{build}: {err}");
        // no_proxy: direct.
        std::fs::remove_dir_all(&cache).unwrap();
        let before = seen();
        let env = [
            ("https_proxy", proxy_url.as_str()),
            ("no_proxy", "localhost,127.0.0.1"),
        ];
        let o = pull_env(&bin, &server.index(), &cache, Some(&ca), &env);
        assert!(o.status.success(), "{build}: {o:?}");
        assert_eq!(seen(), before, "{build}: no_proxy was not honoured");
        // No --index: the default index is this release's assets, asked for over https
        // (the proxy refuses to go out); the error names it and how to use another.
        let mut c = Command::new(&bin);
        for v in SCRUBBED {
            c.env_remove(v);
        }
        let o = c
            .env("https_proxy", &proxy_url)
            .args(["image", "--cache"])
            .arg(dir.join("c3"))
            .args(["pull", "demo"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        let version = env!("CARGO_PKG_VERSION");
        assert!(!o.status.success(), "{build}: {o:?}");
        assert!(
            err.contains(&format!(
                "https://github.com/fugu-vmm/fugu/releases/download/v{version}/index.json"
            )) && err.contains("fugu's default image index")
                && err.contains("--index")
                && err.contains("FUGU_IMAGE_INDEX"),
            "{build}: {err}"
        );
        assert!(
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("CONNECT github.com:443 "),
            "{build}: the default index was not asked for through the proxy"
        );
        assert!(!dir.join("c3").join("demo").exists(), "{build}");
    }
    drop((server, proxy));
    let _ = std::fs::remove_dir_all(&dir);
}
