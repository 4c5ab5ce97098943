//! A deterministic cpio "newc" writer for initramfs images: entries sorted by path, one
//! fixed mtime, owner root, inode numbers in order, no host state leaks in.

use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub enum Entry {
    Dir,
    File {
        data: Vec<u8>,
        exec: bool,
    },
    /// A character device node (major, minor), mode 0600.
    CharDev(u32, u32),
    Symlink(String),
}

/// An archive being assembled; paths are relative ("bin/busybox").
#[derive(Debug, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an entry and every missing parent directory.
    pub fn add(&mut self, path: &str, entry: Entry) {
        let path = path.trim_matches('/');
        let mut parent = String::new();
        for comp in path
            .split('/')
            .collect::<Vec<_>>()
            .iter()
            .rev()
            .skip(1)
            .rev()
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(comp);
            self.entries.entry(parent.clone()).or_insert(Entry::Dir);
        }
        self.entries.insert(path.to_string(), entry);
    }

    /// The archive bytes, with every mtime set to `mtime` (seconds since the epoch).
    pub fn to_bytes(&self, mtime: u64) -> Vec<u8> {
        let mut out = Vec::new();
        // "." first, as the kernel's own gen_init_cpio does for the root.
        let mut ino = 1u32;
        write_entry(&mut out, ".", 0o040755, 2, 0, 0, &[], ino, mtime);
        for (path, e) in &self.entries {
            ino += 1;
            match e {
                Entry::Dir => write_entry(&mut out, path, 0o040755, 2, 0, 0, &[], ino, mtime),
                Entry::File { data, exec } => {
                    let mode = if *exec { 0o100755 } else { 0o100644 };
                    write_entry(&mut out, path, mode, 1, 0, 0, data, ino, mtime)
                }
                Entry::CharDev(maj, min) => {
                    write_entry(&mut out, path, 0o020600, 1, *maj, *min, &[], ino, mtime)
                }
                Entry::Symlink(target) => write_entry(
                    &mut out,
                    path,
                    0o120777,
                    1,
                    0,
                    0,
                    target.as_bytes(),
                    ino,
                    mtime,
                ),
            }
        }
        write_entry(&mut out, "TRAILER!!!", 0, 1, 0, 0, &[], 0, 0);
        // Pad the archive to a multiple of 512 bytes, like cpio(1).
        while out.len() % 512 != 0 {
            out.push(0);
        }
        out
    }
}

#[allow(clippy::too_many_arguments)]
fn write_entry(
    out: &mut Vec<u8>,
    name: &str,
    mode: u32,
    nlink: u32,
    rmaj: u32,
    rmin: u32,
    data: &[u8],
    ino: u32,
    mtime: u64,
) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        // newc's fields are 32 bits: a date past 2106 is written as the last one it holds,
        // and a member of 4 GiB or more (never one of the initramfs files) cannot be stored.
        u32::try_from(mtime).unwrap_or(u32::MAX),
        u32::try_from(data.len()).expect("a cpio (newc) member is under 4 GiB"),
        0, // dev major
        0, // dev minor
        rmaj,
        rmin,
        u32::try_from(name.len() + 1).expect("a cpio (newc) member name is under 4 GiB"),
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_sorted_and_deterministic() {
        let mut a = Archive::new();
        a.add(
            "sbin/z",
            Entry::File {
                data: b"z".to_vec(),
                exec: true,
            },
        );
        a.add(
            "bin/busybox",
            Entry::File {
                data: b"bb".to_vec(),
                exec: true,
            },
        );
        a.add("dev/console", Entry::CharDev(5, 1));
        let mut b = Archive::new();
        b.add("dev/console", Entry::CharDev(5, 1));
        b.add(
            "bin/busybox",
            Entry::File {
                data: b"bb".to_vec(),
                exec: true,
            },
        );
        b.add(
            "sbin/z",
            Entry::File {
                data: b"z".to_vec(),
                exec: true,
            },
        );
        let x = a.to_bytes(1_700_000_000);
        assert_eq!(x, b.to_bytes(1_700_000_000));
        assert_eq!(x.len() % 512, 0);
        let s = String::from_utf8_lossy(&x);
        let order: Vec<usize> = [
            "bin\0",
            "bin/busybox\0",
            "dev\0",
            "dev/console\0",
            "sbin/z\0",
            "TRAILER!!!\0",
        ]
        .iter()
        .map(|n| s.find(n).unwrap())
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]));
        assert!(x.starts_with(b"070701"));
    }
}
