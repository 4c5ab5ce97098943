//! The release's OpenPGP signing key, used through `gpg` in a private GNUPGHOME.
//!
//! `FUGU_SIGNING_KEY` names the key: the path of an ASCII-armored secret key (imported into a
//! fresh temporary GNUPGHOME that is deleted afterwards), or a key id in the keyring of an
//! explicitly set `GNUPGHOME`. The user's default ~/.gnupg is never read or written: a
//! release must not depend on whatever keys a workstation happens to hold.
//! `FUGU_SIGNING_PASSPHRASE_FILE` unlocks a key that has a passphrase.

use crate::util::{capture, describe, Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const KEY_VAR: &str = "FUGU_SIGNING_KEY";
const PASSPHRASE_VAR: &str = "FUGU_SIGNING_PASSPHRASE_FILE";

/// A usable signing key: the GNUPGHOME holding it and its primary key's fingerprint.
pub struct Signer {
    home: PathBuf,
    /// The home is ours (a temporary copy) and goes when the signer does.
    owned: bool,
    pub fingerprint: String,
}

impl Signer {
    /// The key `FUGU_SIGNING_KEY` names, checked to be a secret key gpg can use.
    pub fn from_env() -> Result<Signer> {
        let Some(value) = std::env::var_os(KEY_VAR).filter(|v| !v.is_empty()) else {
            return Err(Error::usage(format!(
                "release: {KEY_VAR} is not set, and a release is signed; nothing was built or \
                 written.\nSet it to the path of an ASCII-armored secret key \
                 (gpg --armor --export-secret-keys KEYID > key.asc), or to a key id with \
                 GNUPGHOME set to the keyring that holds it (docs/release.md)"
            )));
        };
        let path = PathBuf::from(&value);
        if path.is_file() {
            let home = private_home()?;
            let mut s = Signer {
                home,
                owned: true,
                fingerprint: String::new(),
            };
            let (ok, out) = capture(s.gpg().arg("--import").arg(&path))?;
            if !ok {
                return Err(Error::fail(format!(
                    "{KEY_VAR}={}: gpg cannot import it: {}",
                    path.display(),
                    out.trim()
                )));
            }
            s.fingerprint = s.one_secret_key(None, &path.display().to_string())?;
            s.probe()?;
            return Ok(s);
        }
        let id = value.to_string_lossy().into_owned();
        let Some(home) = std::env::var_os("GNUPGHOME").filter(|v| !v.is_empty()) else {
            return Err(Error::usage(format!(
                "release: {KEY_VAR}='{id}' is not a file; as a key id it needs GNUPGHOME set to \
                 the keyring that holds it (the xtask never uses ~/.gnupg by default); \
                 nothing was built or written"
            )));
        };
        let mut s = Signer {
            home: PathBuf::from(home),
            owned: false,
            fingerprint: String::new(),
        };
        s.fingerprint = s.one_secret_key(Some(&id), &format!("key id '{id}'"))?;
        s.probe()?;
        Ok(s)
    }

    /// Sign a few bytes now, so that a key gpg cannot use (a passphrase, a missing agent)
    /// stops the release before the long builds rather than after them.
    fn probe(&self) -> Result {
        let dir = private_home()?;
        let data = dir.join("probe");
        let result = std::fs::write(&data, b"fugu release signing probe\n")
            .map_err(Error::from)
            .and_then(|()| self.detach_sign(&data, &dir.join("probe.asc")));
        let _ = std::fs::remove_dir_all(&dir);
        result.map_err(|e| {
            let hint = if std::env::var_os(PASSPHRASE_VAR).is_none() {
                format!("\n(a key with a passphrase needs {PASSPHRASE_VAR}, a file holding it)")
            } else {
                String::new()
            };
            Error::fail(format!(
                "{KEY_VAR}: key {} cannot sign; nothing was built or written: {e}{hint}",
                self.fingerprint
            ))
        })
    }

    /// gpg in batch mode on this signer's home.
    fn gpg(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", &self.home)
            .env("LC_ALL", "C")
            .args(["--batch", "--no-tty", "--yes"]);
        if let Some(f) = std::env::var_os(PASSPHRASE_VAR) {
            c.args(["--pinentry-mode", "loopback", "--passphrase-file"])
                .arg(f);
        }
        c
    }

    /// The fingerprint of the one primary secret key (matching `id`, when given).
    fn one_secret_key(&self, id: Option<&str>, what: &str) -> Result<String> {
        let mut c = self.gpg();
        c.args(["--list-secret-keys", "--with-colons"]);
        if let Some(id) = id {
            c.arg("--").arg(id);
        }
        let (ok, out) = capture(&mut c)?;
        let fprs = primary_fingerprints(&out);
        match (ok, fprs.as_slice()) {
            (true, [one]) => Ok(one.clone()),
            (_, []) => Err(Error::fail(format!(
                "{KEY_VAR}: {what} holds no secret key that gpg can use ({})",
                out.trim()
            ))),
            (true, many) => Err(Error::fail(format!(
                "{KEY_VAR}: {what} holds {} secret keys ({}); name one by its fingerprint",
                many.len(),
                many.join(", ")
            ))),
            (false, _) => Err(Error::fail(format!("gpg failed: {}", out.trim()))),
        }
    }

    fn run(&self, what: &str, args: &[&str], out: &Path, input: &Path) -> Result {
        let mut c = self.gpg();
        c.args(["--local-user", &self.fingerprint, "--digest-algo", "SHA512"])
            .args(args)
            .arg("--output")
            .arg(out)
            .arg("--")
            .arg(input);
        let (ok, text) = capture(&mut c)?;
        if !ok {
            return Err(Error::fail(format!(
                "{what} of {} failed ({}):\n{}",
                input.display(),
                describe(&c),
                text.trim()
            )));
        }
        Ok(())
    }

    /// `out`: an armored detached signature of `input`.
    pub fn detach_sign(&self, input: &Path, out: &Path) -> Result {
        self.run("signing", &["--armor", "--detach-sign"], out, input)
    }

    /// `out`: `input` clearsigned (apt's InRelease).
    pub fn clearsign(&self, input: &Path, out: &Path) -> Result {
        self.run("clearsigning", &["--clearsign"], out, input)
    }

    /// The public key, binary (a keyring for gpgv and apt's signed-by) or armored.
    pub fn export(&self, out: &Path, armor: bool) -> Result {
        let mut c = self.gpg();
        if armor {
            c.arg("--armor");
        }
        c.arg("--output")
            .arg(out)
            .args(["--export", "--", &self.fingerprint]);
        let (ok, text) = capture(&mut c)?;
        let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
        if !ok || size == 0 {
            return Err(Error::fail(format!(
                "exporting key {} failed: {}",
                self.fingerprint,
                text.trim()
            )));
        }
        Ok(())
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        if self.owned {
            // The agent gpg started for the temporary home goes with it.
            let _ = Command::new("gpgconf")
                .env("GNUPGHOME", &self.home)
                .args(["--kill", "gpg-agent"])
                .output();
            let _ = std::fs::remove_dir_all(&self.home);
        }
    }
}

/// A fresh GNUPGHOME (mode 0700, as gpg requires) under the temporary directory.
fn private_home() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for n in 0..100 {
        let dir = base.join(format!("fugu-release-gnupg-{}-{n}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::fail(format!("cannot create {}: {e}", dir.display()))),
        }
    }
    Err(Error::fail("no free temporary GNUPGHOME name"))
}

/// The fingerprints of the primary keys in `gpg --with-colons` output: the `fpr` record
/// that follows each `sec` (or `pub`) record; subkeys' (`ssb`, `sub`) are skipped.
pub fn primary_fingerprints(colons: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut want = false;
    for line in colons.lines() {
        let mut f = line.split(':');
        match f.next() {
            Some("sec" | "pub") => want = true,
            Some("ssb" | "sub") => want = false,
            Some("fpr") if want => {
                if let Some(fpr) = f.nth(8).filter(|s| !s.is_empty()) {
                    out.push(fpr.to_string());
                }
                want = false;
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_fingerprints_skip_subkeys() {
        let colons = "sec:u:255:22:D7CA164327D1A2A7:1796259099:::u:::scSC:::+::ed25519:::0:\n\
            fpr:::::::::C570BE658A533547C566FA38D7CA164327D1A2A7:\n\
            grp:::::::::C432B28B1C411644FD7F87222C6826C507734AFC:\n\
            uid:u::::1796259099::BC29::fugu test <t@fugu.invalid>::::::::::0:\n\
            ssb:u:255:18:AAAA:1796259099::::::e:::+::cv25519::\n\
            fpr:::::::::1111222233334444555566667777888899990000:\n";
        assert_eq!(
            primary_fingerprints(colons),
            ["C570BE658A533547C566FA38D7CA164327D1A2A7"]
        );
        assert!(primary_fingerprints("").is_empty());
    }
}
