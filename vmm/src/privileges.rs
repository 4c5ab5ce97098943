//! Dropping root's privileges once a VM is set up (`fugu run --user/--group`).
//!
//! fugu needs root only to open what it is given: /dev/kvm, taps it creates, disks and logs
//! only root may open. Everything after that works on open descriptors. So when started as
//! root with `--user`, fugu opens everything first, then — before the guest runs a single
//! instruction — in every thread of the process: empties the capability bounding set,
//! clears ambient capabilities and sets no_new_privs; then switches all threads to the
//! user's group (no supplementary groups) and user, which clears every capability. It checks
//! the result in /proc and refuses to run the guest when anything is left.

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Who the VM runs as after the drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// Why a user or group given to run a VM as cannot be used. The messages name what was given
/// ("user X"), not the option: the caller says which option or key it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdError {
    /// A name with a NUL byte.
    NotAName(String),
    NoSuchUser(String),
    NoSuchGroup(String),
    /// A bare uid with no entry in the user database, and no group given.
    NoPrimaryGroup(String),
    /// Root as the user or group to drop to.
    Root,
}

impl std::fmt::Display for IdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdError::NotAName(n) => write!(f, "{n:?} is not a name"),
            IdError::NoSuchUser(u) => write!(f, "no such user '{u}'"),
            IdError::NoSuchGroup(g) => write!(f, "no such group '{g}'"),
            IdError::NoPrimaryGroup(u) => write!(
                f,
                "user {u} has no entry in the user database: give its group too"
            ),
            IdError::Root => write!(f, "give an unprivileged user and group, not root"),
        }
    }
}

impl std::error::Error for IdError {}

/// Why privileges could not be dropped (the guest then does not run).
#[derive(Debug, thiserror::Error)]
pub enum DropError {
    /// Not root, and asked to switch to other ids.
    #[error(
        "--user/--group: fugu runs as uid {euid} gid {egid}; switching to uid {} gid {} needs \
         fugu started as root",
        .to.uid,
        .to.gid
    )]
    NotRoot { euid: u32, egid: u32, to: Ids },
    /// A step of the drop failed (`what`: the call or file, e.g. "setresuid").
    #[error("dropping privileges: {what}: {source}")]
    Call {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("dropping privileges: cannot reach thread {tid}: {source}")]
    Signal {
        tid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("dropping privileges: a thread did not drop its privileges")]
    Timeout,
    /// A thread's own step (capability sets, no_new_privs) failed with this error.
    #[error("dropping privileges: {0}")]
    Thread(#[source] std::io::Error),
    /// What /proc shows is left afterwards: `field` of thread `tid` is `got`.
    #[error("dropping privileges: thread {tid} still has {field} {got}")]
    Left {
        tid: i32,
        field: String,
        got: String,
    },
}

/// Resolve the user to run as (a name or a number) and the group (default: the user's
/// primary group) before anything is opened.
pub fn resolve(user: &str, group: Option<&str>) -> Result<Ids, IdError> {
    let (uid, primary) = match lookup_user(user)? {
        Some(ids) => ids,
        None => match user.parse::<u32>() {
            Ok(uid) => (uid, None),
            Err(_) => return Err(IdError::NoSuchUser(user.to_string())),
        },
    };
    let gid = match group {
        Some(g) => match lookup_group(g)? {
            Some(gid) => gid,
            None => g
                .parse::<u32>()
                .map_err(|_| IdError::NoSuchGroup(g.to_string()))?,
        },
        None => primary.ok_or_else(|| IdError::NoPrimaryGroup(user.to_string()))?,
    };
    if uid == 0 || gid == 0 {
        return Err(IdError::Root);
    }
    Ok(Ids { uid, gid })
}

/// (uid, primary gid) of user `name` (a name, or a number with an entry), or None.
pub fn lookup_user(name: &str) -> Result<Option<(u32, Option<u32>)>, IdError> {
    let c = std::ffi::CString::new(name).map_err(|_| IdError::NotAName(name.to_string()))?;
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    // SAFETY: getpwnam_r/getpwuid_r write into `pw` and `buf` (with its length) only, and
    // set `res` to null or to `pw`.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut res: *mut libc::passwd = std::ptr::null_mut();
        libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut res);
        if res.is_null() {
            if let Ok(uid) = name.parse::<u32>() {
                libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut res);
            }
        }
        Ok((!res.is_null()).then_some((pw.pw_uid, Some(pw.pw_gid))))
    }
}

/// The gid of group `name` (a name, or a number with an entry), or None.
pub fn lookup_group(name: &str) -> Result<Option<u32>, IdError> {
    let c = std::ffi::CString::new(name).map_err(|_| IdError::NotAName(name.to_string()))?;
    let mut buf = vec![0 as libc::c_char; 64 << 10];
    // SAFETY: as in lookup_user, with struct group.
    unsafe {
        let mut gr: libc::group = std::mem::zeroed();
        let mut res: *mut libc::group = std::ptr::null_mut();
        libc::getgrnam_r(c.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut res);
        if res.is_null() {
            if let Ok(gid) = name.parse::<u32>() {
                libc::getgrgid_r(gid, &mut gr, buf.as_mut_ptr(), buf.len(), &mut res);
            }
        }
        Ok((!res.is_null()).then_some(gr.gr_gid))
    }
}

/// Failures of the per-thread step, reported by the signal handler (an errno, 0 = none).
static THREAD_ERROR: AtomicI32 = AtomicI32::new(0);
/// Threads that have run the per-thread step.
static THREADS_DONE: AtomicU32 = AtomicU32::new(0);
/// The highest capability number this kernel knows (/proc/sys/kernel/cap_last_cap).
static CAP_LAST: AtomicI32 = AtomicI32::new(63);

/// The per-thread part of the drop: capability bounding set, ambient set, no_new_privs.
/// Only raw system calls: it also runs in a signal handler.
fn drop_in_this_thread() {
    let last = CAP_LAST.load(Ordering::SeqCst);
    // SAFETY: prctl with integer arguments only.
    unsafe {
        for cap in 0..=last {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0 {
                THREAD_ERROR.store(errno(), Ordering::SeqCst);
            }
        }
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            THREAD_ERROR.store(errno(), Ordering::SeqCst);
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            THREAD_ERROR.store(errno(), Ordering::SeqCst);
        }
    }
    THREADS_DONE.fetch_add(1, Ordering::SeqCst);
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

extern "C" fn on_drop_signal(_sig: libc::c_int) {
    let saved = errno();
    drop_in_this_thread();
    // SAFETY: restoring the interrupted code's errno (__errno_location is thread-local).
    unsafe { *libc::__errno_location() = saved };
}

/// The thread ids of this process that run fugu's code. Kernel workers that live in the
/// process (KVM's NX-huge-page recovery task on recent kernels: PF_USER_WORKER) take no
/// signals and run no user code; they are left out.
fn threads() -> Result<Vec<i32>, DropError> {
    const PF_USER_WORKER: u64 = 0x4000;
    const PF_KTHREAD: u64 = 0x20_0000;
    let rd = std::fs::read_dir("/proc/self/task").map_err(|source| DropError::Call {
        what: "/proc/self/task",
        source,
    })?;
    let flags = |t: i32| -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{t}/stat")).ok()?;
        // "tid (comm) state ppid ... flags": comm may hold spaces and parentheses.
        let rest = &stat[stat.rfind(')')? + 1..];
        rest.split_whitespace().nth(6)?.parse().ok()
    };
    Ok(rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .filter(|&t| flags(t).is_none_or(|f| f & (PF_USER_WORKER | PF_KTHREAD) == 0))
        .collect())
}

/// Run [`drop_in_this_thread`] in every thread of the process (device threads already run
/// when the VM is set up): here directly, elsewhere from a signal handler.
fn drop_in_every_thread() -> Result<(), DropError> {
    let sig = libc::SIGRTMIN();
    // SAFETY: installing a handler that makes raw system calls and atomic updates only.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_drop_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART;
        if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
            return Err(DropError::Call {
                what: "sigaction",
                source: std::io::Error::last_os_error(),
            });
        }
    }
    THREAD_ERROR.store(0, Ordering::SeqCst);
    THREADS_DONE.store(0, Ordering::SeqCst);
    // SAFETY: getpid/gettid have no preconditions.
    let (pid, me) = unsafe { (libc::getpid(), libc::gettid()) };
    let others: Vec<i32> = threads()?.into_iter().filter(|&t| t != me).collect();
    drop_in_this_thread();
    for &t in &others {
        // SAFETY: signalling a thread of this process; the handler is installed above.
        if unsafe { libc::syscall(libc::SYS_tgkill, pid, t, sig) } != 0 {
            return Err(DropError::Signal {
                tid: t,
                source: std::io::Error::last_os_error(),
            });
        }
    }
    // Generous: a thread runs the handler as soon as it is scheduled.
    let start = Instant::now();
    while (THREADS_DONE.load(Ordering::SeqCst) as usize) < others.len() + 1 {
        if start.elapsed() > Duration::from_secs(30) {
            return Err(DropError::Timeout);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    match THREAD_ERROR.load(Ordering::SeqCst) {
        0 => Ok(()),
        e => Err(DropError::Thread(std::io::Error::from_raw_os_error(e))),
    }
}

/// Drop root's privileges for good: see the module documentation. Called once the VM is
/// set up and before it runs. Not root: only `ids` equal to the current ones are accepted
/// (there is nothing to drop).
pub fn drop_to(ids: Ids) -> Result<(), DropError> {
    let fail = |what, source| DropError::Call { what, source };
    // SAFETY: geteuid/getegid have no preconditions.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if euid != 0 {
        if (euid, egid) == (ids.uid, ids.gid) {
            return Ok(());
        }
        return Err(DropError::NotRoot {
            euid,
            egid,
            to: ids,
        });
    }
    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap") {
        if let Ok(n) = s.trim().parse() {
            CAP_LAST.store(n, Ordering::SeqCst);
        }
    }
    drop_in_every_thread()?;
    // glibc applies these to every thread of the process. The user switch (without
    // SECBIT_KEEP_CAPS) clears the permitted and effective capabilities of each.
    // SAFETY: plain system calls with a one-element group list that lives across the call.
    unsafe {
        if libc::setgroups(1, &ids.gid) != 0 {
            return Err(fail("setgroups", std::io::Error::last_os_error()));
        }
        if libc::setresgid(ids.gid, ids.gid, ids.gid) != 0 {
            return Err(fail("setresgid", std::io::Error::last_os_error()));
        }
        if libc::setresuid(ids.uid, ids.uid, ids.uid) != 0 {
            return Err(fail("setresuid", std::io::Error::last_os_error()));
        }
    }
    check(ids)
}

/// Every thread runs as `ids`, without capabilities (effective, permitted, inheritable,
/// ambient, bounding) and with no_new_privs — as /proc reports them.
pub fn check(ids: Ids) -> Result<(), DropError> {
    for t in threads()? {
        let path = format!("/proc/self/task/{t}/status");
        let Ok(status) = std::fs::read_to_string(&path) else {
            continue; // the thread ended meanwhile
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let bad = |what: &str, got: &[&str]| {
            Err(DropError::Left {
                tid: t,
                field: what.to_string(),
                got: got.join(" "),
            })
        };
        let uid = ids.uid.to_string();
        let gid = ids.gid.to_string();
        let uids = field("Uid:");
        if uids.len() != 4 || uids.iter().any(|u| *u != uid) {
            return bad("Uid", &uids);
        }
        let gids = field("Gid:");
        if gids.len() != 4 || gids.iter().any(|g| *g != gid) {
            return bad("Gid", &gids);
        }
        let groups = field("Groups:");
        if groups.iter().any(|g| *g != gid) {
            return bad("Groups", &groups);
        }
        for cap in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
            let v = field(cap);
            if v.len() != 1 || u64::from_str_radix(v[0], 16) != Ok(0) {
                return bad(cap.trim_end_matches(':'), &v);
            }
        }
        if field("NoNewPrivs:") != ["1"] {
            return bad("NoNewPrivs", &field("NoNewPrivs:"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_groups_resolve() {
        let me = resolve("nobody", None);
        // Every Debian system has nobody/nogroup; elsewhere numbers still work.
        if let Ok(ids) = me {
            assert_ne!(ids.uid, 0);
        }
        assert_eq!(
            resolve("65534", Some("65534")),
            Ok(Ids {
                uid: 65534,
                gid: 65534
            })
        );
        assert_eq!(resolve("root", None), Err(IdError::Root));
        assert!(resolve("root", None)
            .unwrap_err()
            .to_string()
            .contains("not root"));
        assert_eq!(resolve("0", Some("1")), Err(IdError::Root));
        assert_eq!(
            resolve("no-such-user-fugu", None),
            Err(IdError::NoSuchUser("no-such-user-fugu".into()))
        );
        assert_eq!(
            resolve("65534", Some("no-such-group-fugu")),
            Err(IdError::NoSuchGroup("no-such-group-fugu".into()))
        );
        assert_eq!(
            resolve("4000000000", None),
            Err(IdError::NoPrimaryGroup("4000000000".into()))
        );
        assert!(matches!(resolve("a\0b", None), Err(IdError::NotAName(_))));
    }

    /// Not root: switching to anyone else is refused, staying who we are is nothing to do.
    #[test]
    fn without_root_only_the_current_ids_are_accepted() {
        // SAFETY: no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        if uid == 0 {
            eprintln!("SKIP: runs as root (the drop itself is tested end to end)");
            return;
        }
        assert!(drop_to(Ids { uid, gid }).is_ok());
        let e = drop_to(Ids { uid: uid + 1, gid }).unwrap_err().to_string();
        assert!(e.contains("needs fugu started as root"), "{e}");
    }
}
