//! What `--disk` and `--net` ask for (machine/pci.rs puts the devices on PCI bus 0).

use super::net::{check_tap_name, parse_mac};
use std::path::PathBuf;

/// Why a `--disk` value (or a config file's `disks` entry) cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiskOptionError {
    #[error("'{0}': format= is given twice")]
    FormatTwice(String),
    #[error(transparent)]
    Format(#[from] super::blk::UnknownFormat),
    #[error("'{0}': ro/rw is given twice (use PATH or PATH,ro)")]
    ReadOnlyTwice(String),
    #[error(
        "unknown disk option '{0}' (use PATH, PATH,ro or PATH,format=raw|qcow2; write a comma \
         inside PATH as ,, e.g. --disk 'my,,disk.img,ro')"
    )]
    UnknownOption(String),
    #[error("the disk path is empty")]
    EmptyPath,
}

/// Why a `--net` value (or a config file's `nets` entry) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NetOptionError {
    /// The whole value, and the key given twice.
    #[error("'{0}': {1}= is given twice (use tap=NAME[,mac=MAC])")]
    Twice(String, &'static str),
    #[error("unknown network option '{0}' (use tap=NAME[,mac=MAC])")]
    UnknownOption(String),
    #[error("'{0}' is not KEY=VALUE (use tap=NAME[,mac=MAC])")]
    NotKeyValue(String),
    #[error("--net needs tap=NAME")]
    NoTap,
    /// A bad MAC address or tap name.
    #[error(transparent)]
    Value(#[from] super::net::NetError),
}

/// Devices given twice on one command line (or in one VM's table).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceConflict {
    /// Disks `first` and `second` (1-based) are one image, and not both read-only; `alias`
    /// is the second's path where it names the image differently.
    #[error(
        "disk image {} is given twice (disks {first} and {second}{}): a writable disk can be \
         attached once; drop one, or give both ,ro",
        .path.display(),
        .alias.as_ref().map(|a| format!(", as {}", a.display())).unwrap_or_default()
    )]
    DiskTwice {
        path: PathBuf,
        first: usize,
        second: usize,
        alias: Option<PathBuf>,
    },
    #[error("tap {0} is given to two NICs: give each --net its own tap")]
    TapTwice(String),
}

/// `--disk PATH[,ro][,format=raw|qcow2]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    pub path: PathBuf,
    pub read_only: bool,
    /// None: detected from the image's header.
    pub format: Option<super::blk::Format>,
}

/// `--net tap=NAME[,mac=MAC]` (or just `--net NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub tap: String,
    pub mac: Option<[u8; 6]>,
}

/// Split an option string at single commas; `,,` stands for a comma inside a value (as in
/// QEMU), so that any path can be written.
fn split_options(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ',' if chars.peek() == Some(&',') => {
                chars.next();
                cur.push(',');
            }
            ',' => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    parts
}

/// Parse `PATH[,ro]` or `path=PATH[,ro]`; a comma inside PATH is written `,,`.
pub fn parse_disk(s: &str) -> Result<DiskConfig, DiskOptionError> {
    let mut parts = split_options(s).into_iter();
    let first = parts.next().unwrap_or_default();
    let mut path = match first.strip_prefix("path=") {
        Some(p) => p.to_string(),
        None => first,
    };
    let mut read_only = None;
    let mut format = None;
    for opt in parts {
        if let Some(f) = opt.strip_prefix("format=") {
            if format.is_some() {
                return Err(DiskOptionError::FormatTwice(s.to_string()));
            }
            format = Some(super::blk::Format::parse(f)?);
            continue;
        }
        match opt.as_str() {
            "ro" | "rw" if read_only.is_some() => {
                return Err(DiskOptionError::ReadOnlyTwice(s.to_string()))
            }
            "ro" => read_only = Some(true),
            "rw" => read_only = Some(false),
            // Before `,,` existed a comma inside a directory name was taken as part of the
            // path when what followed it could only be a path; that still works.
            o if o.contains('/') && read_only.is_none() => {
                path.push(',');
                path.push_str(o);
            }
            o => return Err(DiskOptionError::UnknownOption(o.to_string())),
        }
    }
    if path.is_empty() {
        return Err(DiskOptionError::EmptyPath);
    }
    Ok(DiskConfig {
        path: PathBuf::from(path),
        read_only: read_only.unwrap_or(false),
        format,
    })
}

/// Parse `tap=NAME[,mac=52:54:00:12:34:56]` or `NAME`.
pub fn parse_net(s: &str) -> Result<NetConfig, NetOptionError> {
    let mut tap = None;
    let mut mac = None;
    for (i, part) in s.split(',').enumerate() {
        let twice = |k| NetOptionError::Twice(s.to_string(), k);
        match part.split_once('=') {
            Some(("tap", _)) if tap.is_some() => return Err(twice("tap")),
            Some(("mac", _)) if mac.is_some() => return Err(twice("mac")),
            Some(("tap", v)) => tap = Some(v.to_string()),
            Some(("mac", v)) => mac = Some(parse_mac(v)?),
            Some((k, _)) => return Err(NetOptionError::UnknownOption(k.to_string())),
            None if i == 0 => tap = Some(part.to_string()),
            None => return Err(NetOptionError::NotKeyValue(part.to_string())),
        }
    }
    let tap = tap.filter(|t| !t.is_empty()).ok_or(NetOptionError::NoTap)?;
    check_tap_name(&tap)?;
    Ok(NetConfig { tap, mac })
}

/// Command-line mistakes that need the file system to see: one image given twice where
/// either is writable (its lock would make the second open fail as if another process held
/// it), and one tap given twice. Both are caught before anything is opened.
pub fn check_devices(disks: &[DiskConfig], nets: &[NetConfig]) -> Result<(), DeviceConflict> {
    use std::os::unix::fs::MetadataExt;
    let ids: Vec<Option<(u64, u64)>> = disks
        .iter()
        .map(|d| std::fs::metadata(&d.path).ok().map(|m| (m.dev(), m.ino())))
        .collect();
    for (i, a) in disks.iter().enumerate() {
        for (j, b) in disks.iter().enumerate().skip(i + 1) {
            if ids[i].is_some() && ids[i] == ids[j] && !(a.read_only && b.read_only) {
                return Err(DeviceConflict::DiskTwice {
                    path: a.path.clone(),
                    first: i + 1,
                    second: j + 1,
                    alias: (a.path != b.path).then(|| b.path.clone()),
                });
            }
        }
    }
    for (i, a) in nets.iter().enumerate() {
        if nets[..i].iter().any(|b| b.tap == a.tap) {
            return Err(DeviceConflict::TapTwice(a.tap.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_options_parse() {
        assert_eq!(
            parse_disk("d.img").unwrap(),
            DiskConfig {
                path: "d.img".into(),
                read_only: false,
                format: None
            }
        );
        assert!(parse_disk("/x/d.img,ro").unwrap().read_only);
        assert_eq!(
            parse_disk("/a,b/d.img").unwrap().path,
            PathBuf::from("/a,b/d.img")
        );
        assert!(parse_disk("d.img,sync").is_err());
        assert!(parse_disk(",ro").is_err());
        use crate::devices::virtio::blk::Format;
        assert_eq!(
            parse_disk("d.qcow2,format=raw,ro").unwrap().format,
            Some(Format::Raw)
        );
        assert_eq!(
            parse_disk("d.qcow2,format=qcow2").unwrap().format,
            Some(Format::Qcow2)
        );
        assert!(parse_disk("d,format=vmdk").is_err());
        assert!(parse_disk("d,format=raw,format=raw").is_err());
    }

    #[test]
    fn a_comma_in_a_disk_path_can_be_written() {
        // Issue 17 defect 12: a comma inside a file name can be written (`,,`, as in QEMU),
        // and `path=` names the path explicitly.
        assert_eq!(
            parse_disk("a,,b.img").unwrap().path,
            PathBuf::from("a,b.img")
        );
        assert_eq!(
            parse_disk("path=/x/a,,b.img,ro").unwrap(),
            DiskConfig {
                path: "/x/a,b.img".into(),
                read_only: true,
                format: None
            }
        );
        assert_eq!(
            parse_disk("x,,ro").unwrap().path,
            PathBuf::from("x,ro"),
            "a file named 'x,ro'"
        );
        assert!(parse_disk("/a,b/d.img,ro").unwrap().read_only);
        let e = parse_disk("a,b.img").unwrap_err().to_string();
        assert!(e.contains(",,"), "{e}");
        assert!(parse_disk("d.img,ro,rw").is_err());
    }

    #[test]
    fn net_options_parse() {
        assert_eq!(
            parse_net("tap=tap0,mac=52:54:00:00:00:01").unwrap(),
            NetConfig {
                tap: "tap0".into(),
                mac: Some([0x52, 0x54, 0, 0, 0, 1])
            }
        );
        assert_eq!(parse_net("tap0").unwrap().tap, "tap0");
        assert!(parse_net("tap=").is_err());
        assert!(parse_net("tap=t,mac=1").is_err());
        assert!(parse_net("tap=t,speed=10").is_err());
        assert!(parse_net("mac=52:54:00:00:00:01").is_err());
    }

    #[test]
    fn nic_options_twice_and_group_macs_are_refused() {
        // Issue 17 defect 14: a second tap= or mac= no longer silently wins, and a NIC
        // cannot get a multicast, broadcast or zero address.
        for twice in [
            "tap=a,tap=b",
            "a,tap=b",
            "tap=a,mac=52:54:00:00:00:01,mac=52:54:00:00:00:02",
        ] {
            let e = parse_net(twice).unwrap_err().to_string();
            assert!(e.contains("twice"), "{twice}: {e}");
        }
        for (mac, why) in [
            ("01:00:5e:00:00:01", "multicast"),
            ("33:33:00:00:00:01", "multicast"),
            ("ff:ff:ff:ff:ff:ff", "broadcast"),
            ("00:00:00:00:00:00", "zero"),
        ] {
            let e = parse_net(&format!("tap=t,mac={mac}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why) && e.contains("unicast"), "{mac}: {e}");
        }
    }

    #[test]
    fn bad_tap_names_are_parse_errors() {
        // Issue 17 defect 16: a bad tap name is a command-line error found by the parser.
        for bad in [
            "tap=a/b",
            "tap=sixteen-chars-xx",
            "tap=..",
            "tap=a:b",
            "tap=a b",
        ] {
            let e = parse_net(bad).unwrap_err().to_string();
            assert!(e.contains("not a valid interface name"), "{bad}: {e}");
        }
    }

    /// Issue 17 defect 12: one image twice in a VM said "in use by another process".
    #[test]
    fn one_image_twice_is_a_clear_error() {
        let img = crate::devices::virtio::blk::tests::image("twice", 4);
        let link = img.with_file_name("link.img");
        std::os::unix::fs::symlink(&img, &link).unwrap();
        let d = |p: &std::path::Path, ro| DiskConfig {
            path: p.to_owned(),
            read_only: ro,
            format: None,
        };
        for (a, b) in [
            (d(&img, false), d(&img, false)),
            (d(&img, true), d(&img, false)),
            (d(&img, false), d(&link, true)),
        ] {
            let e = check_devices(&[a.clone(), b.clone()], &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains("given twice"), "{a:?} {b:?}: {e}");
            assert!(!e.contains("another process"), "{e}");
        }
        // Two read-only views of one image share its lock: allowed.
        check_devices(&[d(&img, true), d(&link, true)], &[]).unwrap();
        let net = |t: &str| NetConfig {
            tap: t.into(),
            mac: None,
        };
        assert!(check_devices(&[], &[net("t0"), net("t1")]).is_ok());
        let e = check_devices(&[], &[net("t0"), net("t0")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("two NICs"), "{e}");
        let _ = std::fs::remove_dir_all(img.parent().unwrap());
    }
}
