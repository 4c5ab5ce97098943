//! The image index's OpenPGP signature: `index.json.asc`, a detached signature published
//! next to `index.json`, checked with `gpgv` against the keyring the fugu package ships
//! (`/usr/share/keyrings/fugu-archive-keyring.gpg`) before any entry of the index is trusted.
//!
//! Why `gpgv` and not an OpenPGP crate: it is what apt itself runs for every repository, so
//! a Debian host already trusts it (apt depends on it), and the package only adds
//! `Depends: gpgv`. A pure-Rust implementation would be tens of crates (big-number and
//! curve arithmetic) to build for both x86_64 and the i686 build-std route, for one check
//! per index fetch. gpgv checks a signature against the given keyring only, with no trust
//! database and no network: exactly the question asked here. docs/images.md says the same.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The keyring fugu's Debian package installs (its public signing keys, binary format).
pub const DEFAULT_KEYRING: &str = "/usr/share/keyrings/fugu-archive-keyring.gpg";

/// The largest signature file fugu reads (an armored signature is well under 1 KiB).
pub const MAX_SIGNATURE_BYTES: u64 = 64 << 10;

/// How an index is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// Its detached signature must verify against this keyring.
    Verify(PathBuf),
    /// `--insecure-skip-signature`: the index is used unsigned.
    Skip,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::Verify(PathBuf::from(DEFAULT_KEYRING))
    }
}

/// Why a signature was not accepted; the caller names the index and the way out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// Check `sig` (an armored or binary detached signature) over `data` against `keyring`;
/// returns the fingerprint of the key that made the good signature.
pub fn verify(data: &[u8], sig: &[u8], keyring: &Path) -> Result<String, Refused> {
    check_keyring(keyring)?;
    let sig_file = TempFile::write(sig).map_err(|e| {
        Refused(format!(
            "cannot write the signature to a temporary file: {e}"
        ))
    })?;
    // gpgv reads its home directory only for a default keyring, which --keyring replaces;
    // pointing it at the (empty) temporary directory keeps it away from ~/.gnupg.
    let mut child = Command::new("gpgv")
        .env("LC_ALL", "C")
        .arg("--homedir")
        .arg(sig_file.dir())
        .args(["--status-fd", "1", "--keyring"])
        .arg(keyring)
        .arg("--")
        .arg(sig_file.path())
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Refused(
                "gpgv is not installed (Debian package gpgv, which the fugu package depends on)"
                    .into(),
            ),
            _ => Refused(format!("cannot run gpgv: {e}")),
        })?;
    // Feed the data from a thread: gpgv may stop reading early (a malformed signature), and
    // its output must be read meanwhile.
    let writer = child.stdin.take().map(|mut stdin| {
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        })
    });
    let out = child
        .wait_with_output()
        .map_err(|e| Refused(format!("gpgv failed: {e}")))?;
    if let Some(w) = writer {
        let _ = w.join();
    }
    judge(
        out.status.success(),
        &String::from_utf8_lossy(&out.stdout),
        &String::from_utf8_lossy(&out.stderr),
    )
}

/// The verdict from gpgv's exit status and its machine-readable status lines
/// (`--status-fd`, doc/DETAILS in GnuPG): a good signature needs a successful exit, a
/// GOODSIG and a VALIDSIG line, and none of the lines that mark a bad, expired or revoked
/// signature or key.
pub fn judge(success: bool, status: &str, stderr: &str) -> Result<String, Refused> {
    let lines: Vec<Vec<&str>> = status
        .lines()
        .filter_map(|l| l.strip_prefix("[GNUPG:] "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let find = |kw: &str| lines.iter().find(|w| w.first() == Some(&kw));
    let reasons = [
        ("BADSIG", "the signature does not match the index (it was changed after signing, or the signature is for another file)"),
        ("NO_PUBKEY", "it was made by a key that is not in the keyring"),
        ("ERRSIG", "the signature cannot be checked"),
        ("EXPSIG", "the signature has expired"),
        ("EXPKEYSIG", "the signing key has expired"),
        ("REVKEYSIG", "the signing key has been revoked"),
        ("NODATA", "the signature file holds no OpenPGP signature"),
    ];
    for (kw, why) in reasons {
        if let Some(w) = find(kw) {
            let key = w.get(1).map(|k| format!(" (key {k})")).unwrap_or_default();
            return Err(Refused(format!("{why}{key}")));
        }
    }
    match (success, find("GOODSIG"), find("VALIDSIG")) {
        (true, Some(_), Some(v)) => Ok(v.get(1).unwrap_or(&"").to_string()),
        _ => {
            let detail = stderr
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("no good signature reported");
            Err(Refused(format!(
                "gpgv did not accept it: {}",
                detail.trim()
            )))
        }
    }
}

/// The keyring must exist and be binary: gpgv does not read an armored keyring, and its
/// error for one would not say so.
fn check_keyring(keyring: &Path) -> Result<(), Refused> {
    let mut head = [0u8; 64];
    let n = std::fs::File::open(keyring)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(|e| {
            Refused(format!(
                "cannot read the keyring {}: {e} (the fugu package installs {DEFAULT_KEYRING}; \
                 --keyring FILE or FUGU_IMAGE_KEYRING names another)",
                keyring.display()
            ))
        })?;
    if n == 0 {
        return Err(Refused(format!(
            "the keyring {} is empty",
            keyring.display()
        )));
    }
    if head[..n].starts_with(b"-----BEGIN PGP") {
        return Err(Refused(format!(
            "the keyring {} is ASCII-armored; gpgv needs a binary keyring \
             (gpg --dearmor < {0} > KEYRING.gpg)",
            keyring.display()
        )));
    }
    Ok(())
}

/// A file in a fresh private directory under the temporary directory, removed on drop.
struct TempFile {
    dir: PathBuf,
}

impl TempFile {
    fn write(data: &[u8]) -> std::io::Result<TempFile> {
        use std::os::unix::fs::DirBuilderExt;
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let base = std::env::temp_dir();
        for _ in 0..100 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let dir = base.join(format!(
                "fugu-gpgv-{}-{}-{nanos}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    let t = TempFile { dir };
                    std::fs::write(t.path(), data)?;
                    return Ok(t);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other(
            "no free temporary directory name after 100 tries",
        ))
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self) -> PathBuf {
        self.dir.join("index.json.asc")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "[GNUPG:] NEWSIG\n[GNUPG:] KEY_CONSIDERED C570 0\n\
        [GNUPG:] GOODSIG D7CA fugu test <t@fugu.invalid>\n\
        [GNUPG:] VALIDSIG C570BE65 2026-12-03 1796259099 0 4 0 22 8 00 C570BE65\n";

    #[test]
    fn gpgv_status_lines_decide() {
        assert_eq!(judge(true, GOOD, "").unwrap(), "C570BE65");
        // A failed exit is never good, whatever the lines say.
        assert!(judge(false, GOOD, "gpgv: boom").is_err());
        let bad = "[GNUPG:] NEWSIG\n[GNUPG:] BADSIG D7CA fugu test\n";
        assert!(judge(false, bad, "")
            .unwrap_err()
            .0
            .contains("does not match"));
        let nokey = "[GNUPG:] ERRSIG D7CA 22 8 00 1 9 -\n[GNUPG:] NO_PUBKEY D7CA\n";
        let e = judge(false, nokey, "").unwrap_err().0;
        assert!(
            e.contains("not in the keyring") && e.contains("D7CA"),
            "{e}"
        );
        // An expired key with an otherwise good signature is refused.
        let exp = format!("{GOOD}[GNUPG:] EXPKEYSIG D7CA fugu\n");
        assert!(judge(true, &exp, "").unwrap_err().0.contains("expired"));
        assert!(judge(true, "", "gpgv: no signature").is_err());
    }

    #[test]
    fn an_armored_or_missing_keyring_is_named() {
        let t = TempFile::write(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n").unwrap();
        let e = verify(b"x", b"y", &t.path()).unwrap_err().0;
        assert!(
            e.contains("ASCII-armored") && e.contains("--dearmor"),
            "{e}"
        );
        let missing = t.dir().join("none.gpg");
        let e = verify(b"x", b"y", &missing).unwrap_err().0;
        assert!(
            e.contains("cannot read the keyring") && e.contains("--keyring"),
            "{e}"
        );
        let dir = t.dir().to_path_buf();
        drop(t);
        assert!(!dir.exists(), "the temporary directory is removed");
    }
}
