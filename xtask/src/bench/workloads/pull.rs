//! `fugu image pull` from a loopback HTTP server against curl followed by sha256sum (the peer
//! must check the download too, as fugu does).

use super::super::*;
use super::io::ensure_file;

/// The index.json of the pull benchmark: one image whose "kernel" is `blob`.
pub fn pull_index(size: u64, sha256: &str) -> serde_json::Value {
    serde_json::json!({
        "format": "fugu-image-index",
        "format_version": 1,
        "created": "2026-01-01T00:00:00Z",
        "images": [{
            "name": "bench-blob",
            "arch": "i386",
            "kind": "multiboot",
            "description": "64 MiB of pseudo-random bytes for cargo xtask bench",
            "revision": 1,
            "created": "2026-01-01T00:00:00Z",
            "min_fugu_version": "0.1.0",
            "cmdline": "",
            "files": [{
                "role": "kernel",
                "path": "bench-blob/blob",
                "size": size,
                "sha256": sha256,
                "compression": "none",
            }],
            "provenance": {"recipe": "xtask/src/bench.rs", "recipe_sha256": "", "packages": []},
        }],
    })
}

pub(super) fn pull(ctx: &Ctx) -> Bench {
    let help = Command::new(&ctx.fugu).args(["image", "--help"]).output();
    if !help.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("pull")) {
        return Err(Unavailable(
            "`fugu image pull` does not exist in this build".into(),
        ));
    }
    util::ensure_debs(&["curl"], "the curl peer")?;
    let srv = ctx.work.join("pull-srv");
    std::fs::create_dir_all(srv.join("bench-blob"))?;
    let blob = srv.join("bench-blob").join("blob");
    ensure_file(&blob, BLOB_BYTES, 11)?;
    let data = std::fs::read(&blob)?;
    let sum = fugu_common::digest::sha256_bytes(&data);
    let index = pull_index(data.len() as u64, &sum);
    std::fs::write(
        srv.join("index.json"),
        serde_json::to_string_pretty(&index).map_err(|e| Failed(e.to_string()))?,
    )?;
    drop(data);
    let server = serve::Server::start(&srv)?;
    let cache = ctx.work.join("pull-cache");
    let curl_out = ctx.work.join("pull-curl.out");
    let limit = Duration::from_secs(300);
    let (mut f, mut p) = (Vec::new(), Vec::new());
    for _ in 0..ctx.runs {
        let _ = std::fs::remove_dir_all(&cache);
        let mut c = Command::new(&ctx.fugu);
        c.arg("image")
            .arg("--index")
            .arg(server.url("index.json"))
            .arg("--cache")
            .arg(&cache)
            // The transfer is measured, not gpgv: the bench index is not signed.
            .arg("--insecure-skip-signature")
            .args(["pull", "bench-blob"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let (t, s) = timed(&mut c, limit, "fugu image pull")?;
        expect_status(s, 0, "fugu image pull")?;
        let got = std::fs::metadata(cache.join("bench-blob").join("blob")).map(|m| m.len());
        if got.ok() != Some(BLOB_BYTES as u64) {
            return Err(Failed(format!(
                "fugu image pull left no {} MiB blob in {}",
                BLOB_BYTES >> 20,
                cache.display()
            )));
        }
        f.push(t);
        let _ = std::fs::remove_file(&curl_out);
        let mut c = Command::new("curl");
        c.args(["-sS", "--fail", "-o"])
            .arg(&curl_out)
            .arg(server.url("bench-blob/blob"));
        let (t, s) = timed(&mut c, limit, "curl")?;
        expect_status(s, 0, "curl")?;
        let mut h = Command::new("sha256sum");
        h.arg(&curl_out).stdout(Stdio::null());
        let (t_hash, s) = timed(&mut h, limit, "sha256sum")?;
        expect_status(s, 0, "sha256sum")?;
        p.push(t + t_hash);
    }
    let _ = std::fs::remove_dir_all(&cache);
    let _ = std::fs::remove_file(&curl_out);
    Ok(Measured {
        fugu: f,
        peer: Some(p),
        note: "64 MiB from a loopback HTTP server in the xtask; fugu fetches the index, hashes the bytes as they arrive and renames into its cache; the peer is `curl -o` then `sha256sum` of the file".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::io::{kv, pattern};
    use super::*;

    #[test]
    fn bench_output_and_index() {
        let l = "requests=200000 device_per_sec=812345.5 pread_per_sec=900000.0";
        assert_eq!(kv(l, "device_per_sec"), Some(812345.5));
        assert_eq!(kv(l, "requests"), Some(200000.0));
        assert_eq!(kv(l, "per_sec"), None);
        assert_eq!(kv("exits=0 loop_ns=5", "exits"), Some(0.0));
        let i = pull_index(5, &"a".repeat(64));
        assert_eq!(i["images"][0]["files"][0]["size"], 5);
        // fugu's own schema accepts it.
        let parsed: crate::images::index::Index = serde_json::from_value(i).unwrap();
        parsed.validate().unwrap();
        assert_eq!(pattern(20, 3), pattern(20, 3));
        assert_ne!(pattern(20, 3), pattern(20, 4));
        assert_eq!(pattern(13, 1).len(), 13);
    }
}
