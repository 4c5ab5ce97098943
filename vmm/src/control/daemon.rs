//! `fugud`: owns the VMs (one `fugu run` process each, supervised by a thread of its own),
//! serves the control socket (one thread per connection, one request each; docs/api.md),
//! and stops every VM before it exits.

use super::access::{self, Peer};
use super::api::{
    DaemonInfo, EndInfo, ErrorBody, ReloadReport, StartRequest, StopRequest, VmInfo, VmList,
};
use super::config::{self, VmSpec};
use super::console_log::{Chunk, ConsoleLog};
use super::http::{self, Request};
use super::vmproc::{self, Handle};
use super::{name_error, now, valid_name};
use crate::cli::FugudCli;
use crate::sync::lock;
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// After a forced stop's SIGTERM, how long fugu has to end before SIGKILL.
const KILL_AFTER: Duration = Duration::from_secs(5);

struct Opts {
    vmm: PathBuf,
    config: PathBuf,
    state_dir: PathBuf,
    socket_gid: u32,
    console_cap: usize,
    stop_timeout: u64,
    /// Who VMs that name no user run as (None: as fugud itself).
    vm_ids: Option<crate::privileges::Ids>,
}

struct Shared {
    opts: Opts,
    vms: Mutex<BTreeMap<String, Vm>>,
    /// Notified whenever a VM process ends.
    ended: Condvar,
    next_id: AtomicU64,
}

struct Vm {
    spec: VmSpec,
    in_config: bool,
    /// A start is under way (between the request and the process).
    starting: bool,
    run: Option<Run>,
    last_end: Option<EndInfo>,
    console: Arc<ConsoleLog>,
}

struct Run {
    id: u64,
    pid: i32,
    handle: Arc<Handle>,
    started: u64,
    stdin: Arc<Mutex<Option<ChildStdin>>>,
    paused: bool,
    stopping: bool,
    /// Why fugud ended it, once it did.
    requested: Option<String>,
}

/// An answer other than 2xx: its status and message (`{"error": message}`).
#[derive(Debug)]
struct ApiError {
    status: u16,
    message: String,
}

/// 404 for a VM that fugud does not know.
fn no_vm(name: &str) -> ApiError {
    err(404, format!("no VM named {name} (fugu status lists them)"))
}

fn err(status: u16, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
    }
}

static SHUTDOWN: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_shutdown(_: libc::c_int) {
    SHUTDOWN.store(true, Ordering::SeqCst);
}
extern "C" fn on_reload(_: libc::c_int) {
    RELOAD.store(true, Ordering::SeqCst);
}

fn log(msg: impl AsRef<str>) {
    eprintln!("fugud: {}", msg.as_ref());
}

/// fugud's entry point.
pub fn main(cli: FugudCli) -> ExitCode {
    match serve(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log(format!("error: {e}"));
            ExitCode::from(1)
        }
    }
}

/// Who the VMs that name no `user` run as: --vm-user when fugud is root (checked before any
/// VM starts), nobody else when it is not (it cannot switch) or when told `root`.
fn vm_ids(cli: &FugudCli) -> Result<Option<crate::privileges::Ids>, String> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || (cli.vm_user == "root" && cli.vm_group.is_none()) {
        if root {
            log("VMs that name no user run as root (--vm-user root)");
        }
        return Ok(None);
    }
    crate::privileges::resolve(&cli.vm_user, cli.vm_group.as_deref())
        .map(Some)
        .map_err(|e| {
            let hint = if cli.vm_user == crate::cli::VM_USER {
                format!(
                    " (the fugu package creates it; by hand: useradd --system --user-group \
                     --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin {}), \
                     or give --vm-user",
                    crate::cli::VM_USER
                )
            } else {
                String::new()
            };
            format!("--vm-user/--vm-group: {e}{hint}")
        })
}

/// String by design: fugud's top level, where every error becomes the line it logs.
fn serve(cli: FugudCli) -> Result<(), String> {
    let socket_gid = crate::privileges::lookup_group(&cli.group)
        .map_err(|e| format!("--group: {e}"))?
        .ok_or_else(|| {
            format!(
            "group '{}' does not exist: create it (groupadd --system {0}; the fugu package does) \
             or give --group",
            cli.group
        )
        })?;
    let vm_ids = vm_ids(&cli)?;
    let vmm = std::fs::read_link("/proc/self/exe")
        .map_err(|e| format!("cannot find fugu's own binary (/proc/self/exe): {e}"))?;
    let config = config::load(&cli.config).map_err(|e| e.to_string())?;
    for n in &config.notes {
        log(n);
    }
    let shared = Arc::new(Shared {
        opts: Opts {
            vmm,
            config: cli.config.clone(),
            state_dir: cli.state_dir.clone(),
            socket_gid,
            console_cap: usize::try_from(cli.console_log)
                .unwrap_or(256)
                .saturating_mul(1024),
            stop_timeout: cli.stop_timeout,
            vm_ids,
        },
        vms: Mutex::new(BTreeMap::new()),
        ended: Condvar::new(),
        next_id: AtomicU64::new(1),
    });
    std::fs::create_dir_all(shared.pid_dir())
        .map_err(|e| format!("cannot create {}: {e}", shared.pid_dir().display()))?;
    // One fugud per state directory: the lock is held until this process ends.
    let _lock = lock_state_dir(&cli.state_dir)?;
    stop_leftovers(&shared);
    {
        let mut vms = lock(&shared.vms);
        for spec in config.vms {
            vms.insert(spec.name.clone(), shared.new_vm(spec, true));
        }
    }
    let listener = bind(&cli.socket, socket_gid)?;
    install_signals();
    let autostart: Vec<String> = lock(&shared.vms)
        .values()
        .filter(|v| v.spec.autostart)
        .map(|v| v.spec.name.clone())
        .collect();
    for name in autostart {
        match start(&shared, &name) {
            Ok(i) => log(format!("started {name} (pid {})", i.pid.unwrap_or(0))),
            Err(e) => log(format!("autostart of {name} failed: {}", e.message)),
        }
    }
    let n = lock(&shared.vms).len();
    log(format!(
        "serving {} ({} VMs configured from {})",
        cli.socket.display(),
        n,
        cli.config.display()
    ));
    if let Err(e) = super::notify::notify("READY=1") {
        log(format!("cannot notify systemd: {e}"));
    }
    accept_loop(&shared, &listener);
    let _ = super::notify::notify("STOPPING=1");
    log("stopping every VM");
    shutdown(&shared);
    let _ = std::fs::remove_file(&cli.socket);
    log("stopped");
    Ok(())
}

/// Take the lock on `dir` (its file `lock`); an error if another fugud holds it.
fn lock_state_dir(dir: &Path) -> Result<std::fs::File, String> {
    let path = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!(
            "another fugud is running with state directory {}: stop it first",
            dir.display()
        ));
    }
    Ok(f)
}

fn install_signals() {
    // SAFETY: handlers that store to atomics only; sigaction with a zeroed, filled struct.
    unsafe {
        for (sig, h) in [
            (libc::SIGTERM, on_shutdown as extern "C" fn(libc::c_int)),
            (libc::SIGINT, on_shutdown),
            (libc::SIGHUP, on_reload),
        ] {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = h as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Create the socket: mode 0660, group `gid`. A socket file left by a fugud that is gone is
/// replaced; one a running fugud answers on is an error.
fn bind(path: &Path, gid: u32) -> Result<UnixListener, String> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "another fugud is serving {}: stop it first",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove the stale {}: {e}", path.display()))?;
    }
    let l = UnixListener::bind(path).map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    std::os::unix::fs::chown(path, None, Some(gid))
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)))
        .map_err(|e| {
            format!(
                "cannot give {} mode 0660 and its group: {e}",
                path.display()
            )
        })?;
    l.set_nonblocking(true)
        .map_err(|e| format!("socket: {e}"))?;
    Ok(l)
}

fn accept_loop(shared: &Arc<Shared>, listener: &UnixListener) {
    while !SHUTDOWN.load(Ordering::SeqCst) {
        if RELOAD.swap(false, Ordering::SeqCst) {
            match reload(shared) {
                Ok(r) => log(format!("SIGHUP: reloaded: {}", describe_reload(&r))),
                Err(e) => log(format!("SIGHUP: reload refused: {}", e.message)),
            }
        }
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 200) };
        match listener.accept() {
            Ok((stream, _)) => {
                let s = shared.clone();
                let _ = std::thread::Builder::new()
                    .name("fugud-conn".into())
                    .spawn(move || connection(&s, stream));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                log(format!("accept: {e}"));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn describe_reload(r: &ReloadReport) -> String {
    let part =
        |what: &str, v: &[String]| (!v.is_empty()).then(|| format!("{what} {}", v.join(", ")));
    let parts: Vec<String> = [
        part("added", &r.added),
        part("removed", &r.removed),
        part("changed", &r.changed),
        part("started", &r.started),
        part("failed to start", &r.failed),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        "no changes".into()
    } else {
        parts.join("; ")
    }
}

impl Shared {
    fn pid_dir(&self) -> PathBuf {
        self.opts.state_dir.join("vms")
    }

    fn new_vm(&self, spec: VmSpec, in_config: bool) -> Vm {
        Vm {
            spec,
            in_config,
            starting: false,
            run: None,
            last_end: None,
            console: Arc::new(ConsoleLog::new(self.opts.console_cap)),
        }
    }

    fn info(&self, vm: &Vm) -> VmInfo {
        let run = vm.run.as_ref();
        let state = match run {
            None if vm.starting => "starting",
            None => "stopped",
            Some(r) if r.stopping => "stopping",
            Some(r) if r.paused => "paused",
            Some(_) => "running",
        };
        VmInfo {
            name: vm.spec.name.clone(),
            state: state.into(),
            pid: run.map(|r| r.pid),
            cpus: vm.spec.cpus,
            memory: vm.spec.memory,
            started_at: run.map(|r| fugu_common::date::rfc3339(r.started)),
            uptime_s: run.map(|r| now().saturating_sub(r.started)),
            owner: vm.spec.owner.clone(),
            origin: if vm.in_config { "config" } else { "api" }.into(),
            source: vm.spec.source.clone(),
            autostart: vm.spec.autostart && vm.in_config,
            last_end: vm.last_end.clone(),
            console_log_bytes: vm.console.len() as u64,
        }
    }

    /// Wait until run `id` of `name` has ended, at most until `deadline`; whether it did.
    fn wait_ended(&self, name: &str, id: u64, deadline: Instant) -> bool {
        let mut vms = lock(&self.vms);
        loop {
            let running = vms
                .get(name)
                .and_then(|v| v.run.as_ref())
                .is_some_and(|r| r.id == id);
            if !running {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            vms = match self.ended.wait_timeout(vms, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Signal run `id` of `name` if it is still that run.
    fn signal(&self, name: &str, id: u64, sig: libc::c_int, why: Option<&str>) -> bool {
        let mut vms = lock(&self.vms);
        let Some(run) = vms
            .get_mut(name)
            .and_then(|v| v.run.as_mut())
            .filter(|r| r.id == id)
        else {
            return false;
        };
        if let Some(w) = why {
            run.requested = Some(w.to_string());
        }
        if let Err(e) = run.handle.signal(sig) {
            log(format!("{name}: cannot send signal {sig}: {e}"));
        }
        true
    }
}

/// Stop the VM processes a fugud before this one left behind (it was killed and its VMs
/// outlived it, e.g. after a change of user cleared their parent-death signal).
fn stop_leftovers(shared: &Shared) {
    let Ok(dir) = std::fs::read_dir(shared.pid_dir()) else {
        return;
    };
    for e in dir.flatten() {
        let path = e.path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut it = text.split_whitespace();
        let pid: Option<i32> = it.next().and_then(|p| p.parse().ok());
        let start: Option<u64> = it.next().and_then(|s| s.parse().ok());
        if let (Some(pid), Some(start)) = (pid, start) {
            if vmproc::start_time(pid) == Some(start) && vmproc::is_fugu_vm(pid) {
                log(format!(
                    "VM process {pid} ({}) was left by an earlier fugud: stopping it",
                    path.file_stem().unwrap_or_default().to_string_lossy()
                ));
                // SAFETY: kill on a pid whose start time and environment identify it as a
                // VM process that fugud started.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                let t = Instant::now();
                while vmproc::start_time(pid) == Some(start) && t.elapsed() < KILL_AFTER {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if vmproc::start_time(pid) == Some(start) {
                    // SAFETY: as above.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    }
}

/// Start VM `name` (declared or recorded) and wait until its VM is set up.
fn start(shared: &Arc<Shared>, name: &str) -> Result<VmInfo, ApiError> {
    let spec = {
        let mut vms = lock(&shared.vms);
        let vm = vms.get_mut(name).ok_or_else(|| no_vm(name))?;
        if vm.run.is_some() || vm.starting {
            return Err(err(409, format!("VM {name} is already running")));
        }
        vm.starting = true;
        vm.spec.clone()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let s = shared.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("vm-{name}"))
        .spawn(move || supervise(&s, spec, tx));
    let result = match spawned {
        Ok(_) => rx
            .recv()
            .unwrap_or_else(|_| Err("the VM's supervisor thread ended".into())),
        Err(e) => Err(format!("cannot start a thread: {e}")),
    };
    let mut vms = lock(&shared.vms);
    let vm = vms
        .get_mut(name)
        .ok_or_else(|| err(500, format!("VM {name} vanished")))?;
    vm.starting = false;
    match result {
        Ok(()) => Ok(shared.info(vm)),
        Err(e) => Err(err(500, format!("VM {name} did not start: {e}"))),
    }
}

/// The thread that owns one run of a VM: it starts the process (so that the process's
/// parent-death signal is tied to a thread that lives exactly as long as it), feeds its
/// console log, waits for it and records how it ended.
fn supervise(
    shared: &Arc<Shared>,
    spec: VmSpec,
    started: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let name = spec.name.clone();
    let vmproc::VmProcess {
        mut child,
        pid,
        handle,
        ready,
    } = match vmproc::spawn(&shared.opts.vmm, &spec, shared.opts.vm_ids) {
        Ok(p) => p,
        Err(e) => {
            let _ = started.send(Err(format!(
                "cannot run {}: {e}",
                shared.opts.vmm.display()
            )));
            return;
        }
    };
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let console = Arc::new(ConsoleLog::new(shared.opts.console_cap));
    let out = child.stdout.take().map(|mut o| {
        let c = console.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = o.read(&mut buf) {
                if n == 0 {
                    break;
                }
                c.append(&buf[..n]);
            }
        })
    });
    let ready_flag = Arc::new(AtomicBool::new(false));
    let err_lines: Arc<Mutex<(VecDeque<String>, Vec<String>)>> = Default::default();
    let errs = child.stderr.take().map(|e| {
        let (lines, flag, n) = (err_lines.clone(), ready_flag.clone(), name.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(e).lines() {
                let Ok(line) = line else { break };
                log(format!("{n}: {line}"));
                let mut l = lock(&lines);
                if flag.load(Ordering::SeqCst) {
                    if l.1.len() < 20 {
                        l.1.push(line);
                    }
                } else {
                    l.0.push_back(line);
                    if l.0.len() > 20 {
                        l.0.pop_front();
                    }
                }
            }
        })
    });
    let pidfile = shared.pid_dir().join(format!("{name}.pid"));
    if let Some(t) = vmproc::start_time(pid) {
        let _ = std::fs::write(&pidfile, format!("{} {t}\n", pid));
    }
    let handle = Arc::new(handle);
    {
        let mut vms = lock(&shared.vms);
        if let Some(vm) = vms.get_mut(&name) {
            vm.console = console.clone();
            vm.run = Some(Run {
                id,
                pid,
                handle,
                started: now(),
                stdin: Arc::new(Mutex::new(child.stdin.take())),
                paused: false,
                stopping: false,
                requested: None,
            });
        }
    }
    let mut pipe = std::io::BufReader::new(ready);
    let ready = vmproc::wait_ready(&mut pipe);
    ready_flag.store(ready, Ordering::SeqCst);
    if ready {
        log(format!("{name}: running (pid {})", pid));
        let _ = started.send(Ok(()));
    }
    let status = child.wait();
    if let Some(t) = out {
        let _ = t.join();
    }
    if let Some(t) = errs {
        let _ = t.join();
    }
    let told = if ready {
        vmproc::end_words(&mut pipe)
    } else {
        None
    };
    let (before, after) = std::mem::take(&mut *lock(&err_lines));
    let _ = std::fs::remove_file(&pidfile);
    let mut vms = lock(&shared.vms);
    let Some(vm) = vms.get_mut(&name) else { return };
    let run = vm.run.take_if(|r| r.id == id);
    let requested = run.as_ref().and_then(|r| r.requested.clone());
    let (code, signal) = match &status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            (s.code(), s.signal())
        }
        Err(_) => (None, None),
    };
    let words: Vec<String> = if ready {
        after
    } else {
        before.into_iter().collect()
    };
    // fugu's own account of the end; else its error; else its first word after the start.
    let said = told.or_else(|| {
        words
            .iter()
            .find(|l| l.starts_with("fugu: error:"))
            .or_else(|| words.iter().find(|l| l.starts_with("fugu: ")))
            .map(|l| l.trim_start_matches("fugu: ").to_string())
    });
    let reason = end_reason(code, signal, said.as_deref(), requested.as_deref());
    log(format!("{name}: ended (pid {}): {reason}", pid));
    vm.last_end = Some(EndInfo {
        exit_status: code,
        signal,
        reason: reason.clone(),
        at: fugu_common::date::rfc3339(now()),
        requested: requested.is_some(),
    });
    console.close();
    drop(vms);
    shared.ended.notify_all();
    if !ready {
        let _ = started.send(Err(said.unwrap_or(reason)));
    }
}

/// How a VM process ended, in words.
fn end_reason(
    code: Option<i32>,
    signal: Option<i32>,
    said: Option<&str>,
    requested: Option<&str>,
) -> String {
    let what = match (code, signal) {
        (_, Some(sig)) => {
            let name = match sig {
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGSYS => " (SIGSYS: a system call outside its seccomp list)",
                libc::SIGABRT => " (SIGABRT)",
                _ => "",
            };
            format!("killed by signal {sig}{name}")
        }
        (Some(c), None) => {
            let meaning = match c {
                0 => "the guest powered off".to_string(),
                2 => "fugu rejected its options".into(),
                4 => "fugu could not start the VM".into(),
                6 => "the guest crashed".into(),
                8 => "the firmware found nothing to boot, or --boot-timeout passed".into(),
                130 => "fugu ended the VM on a signal".into(),
                c if c % 2 == 1 => format!("the guest wrote {:#x} to the debug-exit port", c >> 1),
                _ => "unknown status".into(),
            };
            format!("exit status {c}: {meaning}")
        }
        (None, None) => "its status could not be read".into(),
    };
    let mut out = what;
    if let Some(s) = said {
        out.push_str(&format!(" (fugu: {s})"));
    }
    match requested {
        Some(r) => out.push_str(&format!("; {r}")),
        None if signal.is_some() => out.push_str("; not by fugud"),
        None => {}
    }
    out
}

/// Stop a VM: the power button (then forced after `timeout`), or at once.
fn stop(shared: &Arc<Shared>, name: &str, req: &StopRequest) -> Result<(u16, VmInfo), ApiError> {
    let id = {
        let mut vms = lock(&shared.vms);
        let vm = vms.get_mut(name).ok_or_else(|| no_vm(name))?;
        let run = vm
            .run
            .as_mut()
            .ok_or_else(|| err(409, format!("VM {name} is not running")))?;
        if run.paused {
            let _ = run.handle.signal(libc::SIGCONT);
            run.paused = false;
        }
        run.stopping = true;
        run.id
    };
    if req.force {
        force(shared, name, id, "forced stop".into());
    } else {
        shared.signal(
            name,
            id,
            libc::SIGPWR,
            Some("stopped through the power button"),
        );
        log(format!(
            "{name}: power button pressed; forced in {} s unless it powers off",
            req.timeout
        ));
        let (s, n, t) = (shared.clone(), name.to_string(), req.timeout);
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(t);
            if !s.wait_ended(&n, id, deadline) {
                log(format!("{n}: did not power off within {t} s: forcing"));
                force(
                    &s,
                    &n,
                    id,
                    format!("did not power off within {t} s: forced"),
                );
            }
        });
    }
    if req.wait {
        let grace = if req.force { 0 } else { req.timeout };
        let deadline = Instant::now() + Duration::from_secs(grace) + KILL_AFTER * 2;
        shared.wait_ended(name, id, deadline);
    }
    let vms = lock(&shared.vms);
    let vm = vms
        .get(name)
        .ok_or_else(|| err(500, format!("VM {name} vanished")))?;
    let done = vm.run.as_ref().is_none_or(|r| r.id != id);
    Ok((if done { 200 } else { 202 }, shared.info(vm)))
}

/// SIGTERM now (fugu ends the VM at once and cleans up), SIGKILL if it is still there later.
fn force(shared: &Arc<Shared>, name: &str, id: u64, why: String) {
    if !shared.signal(name, id, libc::SIGTERM, Some(&why)) {
        return;
    }
    let (s, n) = (shared.clone(), name.to_string());
    std::thread::spawn(move || {
        if !s.wait_ended(&n, id, Instant::now() + KILL_AFTER) {
            log(format!(
                "{n}: still there {} s after SIGTERM: SIGKILL",
                KILL_AFTER.as_secs()
            ));
            s.signal(&n, id, libc::SIGKILL, Some(&format!("{why}; SIGKILL")));
        }
    });
}

fn pause(shared: &Shared, name: &str, on: bool) -> Result<VmInfo, ApiError> {
    let mut vms = lock(&shared.vms);
    let vm = vms.get_mut(name).ok_or_else(|| no_vm(name))?;
    let run = vm
        .run
        .as_mut()
        .ok_or_else(|| err(409, format!("VM {name} is not running")))?;
    if run.stopping {
        return Err(err(409, format!("VM {name} is stopping")));
    }
    if run.paused == on {
        return Err(err(
            409,
            format!(
                "VM {name} is {}",
                if on { "already paused" } else { "not paused" }
            ),
        ));
    }
    run.handle
        .signal(if on { libc::SIGSTOP } else { libc::SIGCONT })
        .map_err(|e| err(500, format!("cannot signal VM {name}: {e}")))?;
    run.paused = on;
    Ok(shared.info(vm))
}

/// Re-read the configuration; an error changes nothing.
fn reload(shared: &Arc<Shared>) -> Result<ReloadReport, ApiError> {
    let config = config::load(&shared.opts.config).map_err(|e| err(400, e.to_string()))?;
    let mut report = ReloadReport::default();
    let mut to_start = Vec::new();
    {
        let mut vms = lock(&shared.vms);
        let new: BTreeMap<String, VmSpec> = config
            .vms
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let gone: Vec<String> = vms
            .iter()
            .filter(|(n, v)| v.in_config && !new.contains_key(*n))
            .map(|(n, _)| n.clone())
            .collect();
        for n in gone {
            report.removed.push(n.clone());
            let running = vms.get(&n).is_some_and(|v| v.run.is_some() || v.starting);
            if running {
                if let Some(v) = vms.get_mut(&n) {
                    v.in_config = false;
                }
            } else {
                vms.remove(&n);
            }
        }
        for (n, spec) in new {
            match vms.get_mut(&n) {
                None => {
                    report.added.push(n.clone());
                    if spec.autostart {
                        to_start.push(n.clone());
                    }
                    vms.insert(n, shared.new_vm(spec, true));
                }
                Some(v) => {
                    let was_autostart = v.in_config && v.spec.autostart;
                    if !v.in_config || v.spec != spec {
                        report.changed.push(n.clone());
                    }
                    if spec.autostart && !was_autostart && v.run.is_none() && !v.starting {
                        to_start.push(n.clone());
                    }
                    v.spec = spec;
                    v.in_config = true;
                }
            }
        }
    }
    for n in to_start {
        match start(shared, &n) {
            Ok(_) => report.started.push(n),
            Err(e) => report.failed.push(format!("{n}: {}", e.message)),
        }
    }
    Ok(report)
}

/// fugud is stopping: every VM gets its power button, then is forced after the stop timeout.
fn shutdown(shared: &Arc<Shared>) {
    let runs: Vec<(String, u64)> = lock(&shared.vms)
        .iter()
        .filter_map(|(n, v)| v.run.as_ref().map(|r| (n.clone(), r.id)))
        .collect();
    let req = StopRequest {
        force: false,
        timeout: shared.opts.stop_timeout,
        wait: false,
    };
    for (n, _) in &runs {
        let _ = stop(shared, n, &req);
    }
    let deadline = Instant::now() + Duration::from_secs(shared.opts.stop_timeout) + KILL_AFTER * 2;
    for (n, id) in &runs {
        if !shared.wait_ended(n, *id, deadline) {
            log(format!("{n}: still running at exit"));
        }
    }
}

/// One connection: one request.
fn connection(shared: &Arc<Shared>, mut stream: UnixStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let peer = match Peer::of(&stream) {
        Ok(p) => p,
        Err(e) => {
            log(format!("cannot read a client's credentials: {e}"));
            return;
        }
    };
    let req = match http::read_request(&mut stream) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            log(format!(
                "{}: malformed request: {}",
                peer.describe(),
                e.message
            ));
            respond_error(&mut stream, &err(e.status, e.message));
            return;
        }
    };
    if !(peer.is_root() || peer.in_group(shared.opts.socket_gid)) {
        let e = err(
            403,
            format!(
                "{} is neither root nor in fugud's group: refused",
                peer.describe()
            ),
        );
        log(format!(
            "refused {} {}: {}",
            req.method, req.path, e.message
        ));
        respond_error(&mut stream, &e);
        return;
    }
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    if let ["v1", "vms", name, "console"] = segs[..] {
        if req.method == "GET" {
            match console_check(shared, &peer, name, &req) {
                Ok(c) => attach(&mut stream, c, &req),
                Err(e) => {
                    log_refusal(&peer, &req, &e);
                    respond_error(&mut stream, &e);
                }
            }
            return;
        }
    }
    match route(shared, &peer, &req, &segs) {
        Ok((status, ctype, body)) => {
            let _ = http::write_response(&mut stream, status, ctype, &body);
        }
        Err(e) => {
            log_refusal(&peer, &req, &e);
            respond_error(&mut stream, &e);
        }
    }
}

fn log_refusal(peer: &Peer, req: &Request, e: &ApiError) {
    if e.status == 403 {
        log(format!(
            "refused {} {} from {}: {}",
            req.method,
            req.path,
            peer.describe(),
            e.message
        ));
    }
}

fn respond_error(stream: &mut UnixStream, e: &ApiError) {
    let body = serde_json::to_vec(&ErrorBody {
        error: e.message.clone(),
    })
    .unwrap_or_default();
    let _ = http::write_response(stream, e.status, "application/json", &body);
}

type Answer = (u16, &'static str, Vec<u8>);

fn json<T: serde::Serialize>(status: u16, v: &T) -> Result<Answer, ApiError> {
    let mut body =
        serde_json::to_vec_pretty(v).map_err(|e| err(500, format!("cannot encode: {e}")))?;
    body.push(b'\n');
    Ok((status, "application/json", body))
}

fn body<T: serde::de::DeserializeOwned + Default>(req: &Request) -> Result<T, ApiError> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&req.body).map_err(|e| err(400, format!("malformed JSON body: {e}")))
}

/// Check that `peer` may control VM `name` (which must exist).
fn check_control(shared: &Shared, peer: &Peer, name: &str, what: &str) -> Result<(), ApiError> {
    if !valid_name(name) {
        return Err(err(400, name_error(name)));
    }
    let vms = lock(&shared.vms);
    let vm = vms.get(name).ok_or_else(|| no_vm(name))?;
    if !access::may_control(peer, vm.spec.owner_uid, vm.spec.owner_gid) {
        return Err(err(
            403,
            format!(
                "{} may not {what} VM {name}: only root and its owner ({}) may",
                peer.describe(),
                vm.spec.owner
            ),
        ));
    }
    Ok(())
}

fn root_only(peer: &Peer, what: &str) -> Result<(), ApiError> {
    if peer.is_root() {
        Ok(())
    } else {
        Err(err(
            403,
            format!("{} may not {what}: only root may", peer.describe()),
        ))
    }
}

fn route(
    shared: &Arc<Shared>,
    peer: &Peer,
    req: &Request,
    segs: &[&str],
) -> Result<Answer, ApiError> {
    let m = req.method.as_str();
    let allowed = |ok: &str| err(405, format!("{} {}: use {ok}", m, req.path));
    match segs {
        ["v1", "daemon"] => match m {
            "GET" => json(
                200,
                &DaemonInfo {
                    version: env!("CARGO_PKG_VERSION").into(),
                    pid: std::process::id(),
                    config: shared.opts.config.display().to_string(),
                    vms: lock(&shared.vms).len(),
                },
            ),
            _ => Err(allowed("GET")),
        },
        ["v1", "vms"] => match m {
            "GET" => {
                let vms = lock(&shared.vms);
                json(
                    200,
                    &VmList {
                        vms: vms.values().map(|v| shared.info(v)).collect(),
                    },
                )
            }
            _ => Err(allowed("GET")),
        },
        ["v1", "reload"] => match m {
            "POST" => {
                root_only(peer, "reload the configuration")?;
                let r = reload(shared)?;
                log(format!(
                    "reloaded by {}: {}",
                    peer.describe(),
                    describe_reload(&r)
                ));
                json(200, &r)
            }
            _ => Err(allowed("POST")),
        },
        ["v1", "vms", name] => {
            if !valid_name(name) {
                return Err(err(400, name_error(name)));
            }
            match m {
                "GET" => {
                    let vms = lock(&shared.vms);
                    let vm = vms.get(*name).ok_or_else(|| no_vm(name))?;
                    json(200, &shared.info(vm))
                }
                "DELETE" => {
                    root_only(peer, "forget a VM")?;
                    let mut vms = lock(&shared.vms);
                    let vm = vms.get(*name).ok_or_else(|| no_vm(name))?;
                    if vm.in_config {
                        return Err(err(
                            409,
                            format!(
                                "VM {name} is declared in {}: remove it there and reload",
                                vm.spec.source.as_deref().unwrap_or("the configuration")
                            ),
                        ));
                    }
                    if vm.run.is_some() || vm.starting {
                        return Err(err(409, format!("VM {name} is running: stop it first")));
                    }
                    vms.remove(*name);
                    json(200, &serde_json::json!({ "removed": name }))
                }
                _ => Err(allowed("GET or DELETE")),
            }
        }
        ["v1", "vms", name, action] => {
            let name = *name;
            match (*action, m) {
                ("start", "POST") => {
                    if !valid_name(name) {
                        return Err(err(400, name_error(name)));
                    }
                    let sr: StartRequest = body(req)?;
                    if let Some(args) = sr.args {
                        root_only(peer, "start a VM with options")?;
                        start_with_args(shared, name, args, sr.cwd)?;
                    } else {
                        if sr.cwd.is_some() {
                            return Err(err(400, "cwd goes with args"));
                        }
                        check_control(shared, peer, name, "start")?;
                    }
                    log(format!("{name}: start by {}", peer.describe()));
                    json(200, &start(shared, name)?)
                }
                ("stop", "POST") => {
                    check_control(shared, peer, name, "stop")?;
                    let sr: StopRequest = body(req)?;
                    log(format!(
                        "{name}: {} by {}",
                        if sr.force { "forced stop" } else { "stop" },
                        peer.describe()
                    ));
                    let (status, info) = stop(shared, name, &sr)?;
                    json(status, &info)
                }
                ("pause" | "unpause", "POST") => {
                    check_control(shared, peer, name, action)?;
                    json(200, &pause(shared, name, *action == "pause")?)
                }
                ("log", "GET") => {
                    check_control(shared, peer, name, "read the console of")?;
                    let c = lock(&shared.vms)
                        .get(name)
                        .map(|v| v.console.clone())
                        .ok_or_else(|| no_vm(name))?;
                    Ok((200, "application/octet-stream", c.snapshot().0))
                }
                ("console", _) => Err(allowed("GET with Upgrade: fugu-console")),
                ("start" | "stop" | "pause" | "unpause", _) => Err(allowed("POST")),
                ("log", _) => Err(allowed("GET")),
                _ => Err(err(404, format!("no such endpoint: {}", req.path))),
            }
        }
        _ => Err(err(
            404,
            format!("no such endpoint: {} (see docs/api.md)", req.path),
        )),
    }
}

/// Record a VM started with the options of `fugu run` (replacing a stopped one of that name).
fn start_with_args(
    shared: &Arc<Shared>,
    name: &str,
    args: Vec<String>,
    cwd: Option<String>,
) -> Result<(), ApiError> {
    let cwd = PathBuf::from(cwd.unwrap_or_else(|| "/".into()));
    if !cwd.is_absolute() {
        return Err(err(
            400,
            format!("cwd {} is not an absolute path", cwd.display()),
        ));
    }
    let (cpus, memory) = config::check_run_args(&args).map_err(|e| err(400, e.to_string()))?;
    let spec = VmSpec {
        name: name.to_string(),
        args,
        cwd,
        cpus,
        memory,
        autostart: false,
        owner_uid: None,
        owner_gid: None,
        owner: "root".into(),
        source: None,
    };
    let mut vms = lock(&shared.vms);
    match vms.get_mut(name) {
        Some(v) if v.in_config => Err(err(
            409,
            format!(
                "VM {name} is declared in {}: start it without options",
                v.spec.source.as_deref().unwrap_or("the configuration")
            ),
        )),
        Some(v) if v.run.is_some() || v.starting => {
            Err(err(409, format!("VM {name} is already running")))
        }
        Some(v) => {
            v.spec = spec;
            Ok(())
        }
        None => {
            vms.insert(name.to_string(), shared.new_vm(spec, false));
            Ok(())
        }
    }
}

struct Attach {
    console: Arc<ConsoleLog>,
    stdin: Arc<Mutex<Option<ChildStdin>>>,
    id: u64,
}

fn console_check(
    shared: &Shared,
    peer: &Peer,
    name: &str,
    req: &Request,
) -> Result<Attach, ApiError> {
    check_control(shared, peer, name, "attach to")?;
    let upgrade = req
        .header("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("fugu-console"));
    if !upgrade {
        return Err(err(
            400,
            "the console needs 'Upgrade: fugu-console' (fugu console NAME); GET /v1/vms/NAME/log \
             has the console output kept",
        ));
    }
    let vms = lock(&shared.vms);
    let vm = vms.get(name).ok_or_else(|| no_vm(name))?;
    let run = vm.run.as_ref().ok_or_else(|| {
        err(
            409,
            format!("VM {name} is not running (its log: GET /v1/vms/{name}/log)"),
        )
    })?;
    Ok(Attach {
        console: vm.console.clone(),
        stdin: run.stdin.clone(),
        id: shared.next_id.fetch_add(1, Ordering::SeqCst),
    })
}

/// The console session: 101, then the log (history unless `history=0`) and the VM's output
/// to the client, and the client's bytes to the VM if it holds the input.
fn attach(stream: &mut UnixStream, a: Attach, req: &Request) {
    let (want_input, history) = match (req.flag("input", true), req.flag("history", true)) {
        (Ok(i), Ok(h)) => (i, h),
        (Err(e), _) | (_, Err(e)) => {
            respond_error(stream, &err(400, e.message));
            return;
        }
    };
    let input = want_input && a.console.claim_input(a.id);
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: fugu-console\r\nConnection: Upgrade\r\nX-Fugu-Console-Input: {}\r\n\r\n",
        if input { "yes" } else { "no" }
    );
    if stream.write_all(head.as_bytes()).is_err() {
        a.console.release_input(a.id);
        return;
    }
    let _ = stream.set_read_timeout(None);
    let reader = stream.try_clone().ok().map(|mut s| {
        let (console, stdin, id) = (a.console.clone(), a.stdin.clone(), a.id);
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            loop {
                match s.read(&mut buf) {
                    // The client closed its side (or all of it): it types no more.
                    Ok(0) | Err(_) => break,
                    Ok(n) if input => {
                        let mut w = lock(&stdin);
                        if let Some(i) = w.as_mut() {
                            if i.write_all(&buf[..n]).and_then(|()| i.flush()).is_err() {
                                *w = None;
                            }
                        }
                    }
                    Ok(_) => {}
                }
            }
            console.release_input(id);
        })
    });
    let mut pos = if history { 0 } else { a.console.end() };
    // Until the VM ends or the client is gone altogether (a client that only closed its
    // sending side still watches).
    loop {
        match a.console.read(&mut pos, Duration::from_millis(250)) {
            Chunk::Data(d, _) => {
                if stream.write_all(&d).is_err() {
                    break;
                }
            }
            Chunk::Idle if hung_up(stream) => break,
            Chunk::Idle => {}
            Chunk::Closed => break,
        }
    }
    a.console.release_input(a.id);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    if let Some(r) = reader {
        let _ = r.join();
    }
}

/// Whether the peer of `stream` closed both directions.
fn hung_up(stream: &UnixStream) -> bool {
    let mut pfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd without waiting.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every request fugud answers, as docs/api.md heads its section.
    const ROUTES: &[(&str, &str)] = &[
        ("GET", "/v1/daemon"),
        ("GET", "/v1/vms"),
        ("GET", "/v1/vms/{name}"),
        ("DELETE", "/v1/vms/{name}"),
        ("POST", "/v1/vms/{name}/start"),
        ("POST", "/v1/vms/{name}/stop"),
        ("POST", "/v1/vms/{name}/pause"),
        ("POST", "/v1/vms/{name}/unpause"),
        ("GET", "/v1/vms/{name}/log"),
        ("GET", "/v1/vms/{name}/console"),
        ("POST", "/v1/reload"),
    ];

    fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            opts: Opts {
                vmm: PathBuf::from("/nonexistent/fugu"),
                config: PathBuf::from("/nonexistent/fugu.toml"),
                state_dir: std::env::temp_dir(),
                socket_gid: 0,
                console_cap: 1024,
                stop_timeout: 1,
                vm_ids: None,
            },
            vms: Mutex::new(BTreeMap::new()),
            ended: Condvar::new(),
            next_id: AtomicU64::new(1),
        })
    }

    fn request(method: &str, path: &str, body: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn call(
        s: &Arc<Shared>,
        peer: &Peer,
        method: &str,
        path: &str,
        body: &str,
    ) -> Result<Answer, ApiError> {
        let req = request(method, path, body);
        let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
        route(s, peer, &req, &segs)
    }

    const ROOT: Peer = Peer {
        pid: 1,
        uid: 0,
        gid: 0,
        groups: Vec::new(),
    };

    #[test]
    fn docs_api_md_documents_every_route_and_the_code_answers_each() {
        let doc =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md"))
                .unwrap();
        let s = shared();
        for (method, path) in ROUTES {
            assert!(
                doc.contains(&format!("`{method} {path}`")),
                "docs/api.md does not document {method} {path}"
            );
            if path.ends_with("/console") {
                continue; // answered before routing (the upgrade)
            }
            let r = call(&s, &ROOT, method, &path.replace("{name}", "x"), "");
            if let Err(e) = r {
                assert!(
                    e.status != 405 && !e.message.contains("no such endpoint"),
                    "{method} {path}: {e:?}"
                );
            }
        }
        // And nothing else is documented as a request.
        let documented: usize = doc
            .lines()
            .filter(|l| l.starts_with("### `"))
            .map(|l| l.matches(" /v").count())
            .sum();
        assert_eq!(documented, ROUTES.len(), "{doc}");
    }

    #[test]
    fn requests_are_checked_before_anything_changes() {
        let s = shared();
        let bad = |method: &str, path: &str, body: &str, status: u16, text: &str| {
            let e = call(&s, &ROOT, method, path, body)
                .err()
                .unwrap_or_else(|| panic!("{method} {path} {body}: no error"));
            assert_eq!(e.status, status, "{method} {path}: {e:?}");
            assert!(e.message.contains(text), "{method} {path}: {e:?}");
        };
        bad("GET", "/v1/vms/nine", "", 404, "no VM named nine");
        bad("GET", "/v1/vms/a%2Fb", "", 400, "is not a VM name");
        bad("PUT", "/v1/vms", "", 405, "use GET");
        bad(
            "POST",
            "/v1/vms/x/start",
            "{\"args\": 3}",
            400,
            "malformed JSON body",
        );
        bad(
            "POST",
            "/v1/vms/x/start",
            "{\"args\": [\"--bogus\"]}",
            400,
            "--bogus",
        );
        bad(
            "POST",
            "/v1/vms/x/start",
            "{\"args\": [\"--kernel\", \"k\"], \"cwd\": \"rel\"}",
            400,
            "not an absolute path",
        );
        bad(
            "POST",
            "/v1/vms/x/stop",
            "{\"force\": \"yes\"}",
            404,
            "no VM named x",
        );
        bad("GET", "/v2", "", 404, "no such endpoint");
        assert!(lock(&s.vms).is_empty());
        // A user who is neither root nor an owner.
        let alice = Peer {
            pid: 2,
            uid: 1000,
            gid: 1000,
            groups: vec![],
        };
        let e = call(
            &s,
            &alice,
            "POST",
            "/v1/vms/x/start",
            "{\"args\": [\"--kernel\", \"k\"]}",
        )
        .err()
        .unwrap();
        assert_eq!(e.status, 403, "{e:?}");
        assert!(e.message.contains("only root may"), "{e:?}");
        let e = call(&s, &alice, "POST", "/v1/reload", "").err().unwrap();
        assert_eq!(e.status, 403, "{e:?}");
        assert!(lock(&s.vms).is_empty());
    }

    #[test]
    fn end_reasons_say_who_ended_the_vm() {
        assert_eq!(
            end_reason(Some(0), None, Some("guest powered off"), Some("stopped through the power button")),
            "exit status 0: the guest powered off (fugu: guest powered off); stopped through the power button"
        );
        assert_eq!(
            end_reason(None, Some(9), None, None),
            "killed by signal 9 (SIGKILL); not by fugud"
        );
        assert!(end_reason(Some(33), None, None, None).contains("debug-exit port"));
    }
}
