//! The client side of the control socket: `fugu start / stop / status / console / pause /
//! unpause / reload`. Each is one HTTP request to fugud (docs/api.md); the console is a
//! connection upgraded to a raw byte stream, with cu's `~.` to detach.

use super::api::{ErrorBody, ReloadReport, StartRequest, StopRequest, VmInfo, VmList};
use super::http;
use crate::cli::{Command, ConsoleArgs, SocketArg};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;

/// A failure of a control command: its message and exit status (1: fugud refused or failed,
/// 2: the command line, 3: fugud cannot be reached).
pub struct Failure {
    pub message: String,
    pub status: u8,
}

fn fail(status: u8, message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        status,
    }
}

/// Run a control command (`cmd` is one of the fugud verbs).
pub fn main(cmd: Command) -> ExitCode {
    let r = match cmd {
        Command::Start(a) => start(a),
        Command::Stop(a) => {
            let req = StopRequest {
                force: a.force,
                timeout: a.timeout,
                wait: a.wait,
            };
            stop(&a.socket, &a.name, &req)
        }
        Command::Status(a) => status(&a.socket, a.name.as_deref(), a.json),
        Command::Console(a) => console(&a),
        Command::Pause(a) => pause(&a.socket, &a.name, true),
        Command::Unpause(a) => pause(&a.socket, &a.name, false),
        Command::Reload(s) => reload(&s),
        Command::Run(_) | Command::Image(_) | Command::Disk(_) => {
            Err(fail(2, "not a control command"))
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("fugu: error: {}", f.message);
            ExitCode::from(f.status)
        }
    }
}

fn connect(socket: &Path) -> Result<UnixStream, Failure> {
    UnixStream::connect(socket).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => {
                "no such socket: is fugud running? (systemctl start fugud)".to_string()
            }
            std::io::ErrorKind::ConnectionRefused => {
                "nothing listens on it: is fugud running? (systemctl start fugud)".to_string()
            }
            std::io::ErrorKind::PermissionDenied => {
                "permission denied: root and the members of group fugu may use it".to_string()
            }
            _ => e.to_string(),
        };
        fail(
            3,
            format!("cannot reach fugud at {}: {why}", socket.display()),
        )
    })
}

/// One request; a 2xx answer's status and body, or the daemon's error.
fn request(
    socket: &SocketArg,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<(u16, Vec<u8>), Failure> {
    let mut s = connect(&socket.socket)?;
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: fugud\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body))
        .map_err(|e| fail(3, format!("cannot talk to fugud: {e}")))?;
    let r = http::read_response(&mut s).map_err(|e| fail(3, e.to_string()))?;
    if (200..300).contains(&r.status) {
        return Ok((r.status, r.body));
    }
    Err(daemon_error(r.status, &r.body))
}

fn daemon_error(status: u16, body: &[u8]) -> Failure {
    let msg = serde_json::from_slice::<ErrorBody>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| format!("fugud answered {status}: {}", String::from_utf8_lossy(body)));
    fail(1, msg)
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body)
        .map_err(|e| fail(1, format!("fugud's answer is not understood: {e}")))
}

fn vm_path(name: &str, action: &str) -> Result<String, Failure> {
    if !super::valid_name(name) {
        return Err(fail(2, super::name_error(name)));
    }
    Ok(if action.is_empty() {
        format!("/v1/vms/{name}")
    } else {
        format!("/v1/vms/{name}/{action}")
    })
}

fn start(mut a: crate::cli::StartArgs) -> Result<(), Failure> {
    let path = vm_path(&a.name, "start")?;
    // `fugu start web -c`: the flag after the name is still start's own.
    while matches!(a.run.first().map(String::as_str), Some("-c" | "--console")) {
        a.run.remove(0);
        a.console = true;
    }
    let req = if a.run.is_empty() {
        StartRequest::default()
    } else {
        super::config::check_run_args(&a.run)
            .map_err(|e| fail(2, format!("fugu start {}: {e}", a.name)))?;
        let cwd = std::env::current_dir()
            .map_err(|e| fail(1, format!("cannot read the current directory: {e}")))?;
        StartRequest {
            args: Some(a.run.clone()),
            cwd: Some(cwd.display().to_string()),
        }
    };
    let body = serde_json::to_vec(&req).map_err(|e| fail(1, e.to_string()))?;
    let (_, resp) = request(&a.socket, "POST", &path, Some(&body))?;
    let info: VmInfo = decode(&resp)?;
    println!("{}: started (pid {})", info.name, info.pid.unwrap_or(0));
    if a.console {
        return console(&ConsoleArgs {
            name: a.name,
            read_only: false,
            no_history: false,
            socket: a.socket,
        });
    }
    Ok(())
}

fn stop(socket: &SocketArg, name: &str, req: &StopRequest) -> Result<(), Failure> {
    let path = vm_path(name, "stop")?;
    let body = serde_json::to_vec(req).map_err(|e| fail(1, e.to_string()))?;
    let (status, resp) = request(socket, "POST", &path, Some(&body))?;
    let info: VmInfo = decode(&resp)?;
    if status == 200 && info.state == "stopped" {
        let reason = info.last_end.map(|e| e.reason).unwrap_or_default();
        println!("{name}: stopped: {reason}");
    } else if req.wait {
        return Err(fail(
            1,
            format!("{name}: still {} after the wait", info.state),
        ));
    } else if req.force {
        println!("{name}: stopping (forced)");
    } else {
        println!(
            "{name}: stopping (power button pressed; forced after {} s)",
            req.timeout
        );
    }
    Ok(())
}

fn pause(socket: &SocketArg, name: &str, on: bool) -> Result<(), Failure> {
    let path = vm_path(name, if on { "pause" } else { "unpause" })?;
    let (_, resp) = request(socket, "POST", &path, None)?;
    let info: VmInfo = decode(&resp)?;
    println!("{}: {}", info.name, info.state);
    Ok(())
}

fn reload(socket: &SocketArg) -> Result<(), Failure> {
    let (_, resp) = request(socket, "POST", "/v1/reload", None)?;
    let r: ReloadReport = decode(&resp)?;
    let mut any = false;
    for (what, v) in [
        ("added", &r.added),
        ("removed", &r.removed),
        ("changed (applies at the next start)", &r.changed),
        ("started", &r.started),
        ("failed to start", &r.failed),
    ] {
        if !v.is_empty() {
            println!("{what}: {}", v.join(", "));
            any = true;
        }
    }
    if !any {
        println!("no changes");
    }
    Ok(())
}

fn status(socket: &SocketArg, name: Option<&str>, as_json: bool) -> Result<(), Failure> {
    let path = match name {
        Some(n) => vm_path(n, "")?,
        None => "/v1/vms".into(),
    };
    let (_, resp) = request(socket, "GET", &path, None)?;
    if as_json {
        std::io::stdout()
            .write_all(&resp)
            .map_err(|e| fail(1, e.to_string()))?;
        return Ok(());
    }
    let vms = match name {
        Some(_) => vec![decode::<VmInfo>(&resp)?],
        None => decode::<VmList>(&resp)?.vms,
    };
    print!("{}", table(&vms));
    if name.is_some() {
        for vm in &vms {
            if let Some(s) = &vm.source {
                println!("declared in {s}");
            }
            if let Some(e) = &vm.last_end {
                println!("last end: {} {}", e.at, e.reason);
            }
        }
    }
    Ok(())
}

/// The status table: name, state, pid, vCPUs, memory, uptime, owner.
pub fn table(vms: &[VmInfo]) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "STATE".into(),
        "PID".into(),
        "VCPUS".into(),
        "MEMORY".into(),
        "UPTIME".into(),
        "OWNER".into(),
    ]];
    for v in vms {
        rows.push([
            v.name.clone(),
            v.state.clone(),
            v.pid.map_or("-".into(), |p| p.to_string()),
            v.cpus.to_string(),
            size(v.memory),
            v.uptime_s.map_or("-".into(), duration),
            v.owner.clone(),
        ]);
    }
    let mut widths = [0usize; 7];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn size(bytes: u64) -> String {
    const G: u64 = 1 << 30;
    const M: u64 = 1 << 20;
    if bytes % G == 0 {
        format!("{}G", bytes / G)
    } else if bytes % M == 0 {
        format!("{}M", bytes / M)
    } else {
        format!("{}K", bytes >> 10)
    }
}

fn duration(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// The terminal on stdin in raw mode (no signals: Ctrl-C goes to the guest), restored when
/// dropped.
struct Raw(Option<libc::termios>);

impl Raw {
    fn enable() -> Raw {
        // SAFETY: isatty/tcgetattr/tcsetattr on fd 0 with a properly sized termios.
        unsafe {
            if libc::isatty(0) != 1 {
                return Raw(None);
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return Raw(None);
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
            Raw(Some(saved))
        }
    }

    fn restore(saved: Option<libc::termios>) {
        if let Some(t) = saved {
            // SAFETY: restoring attributes read from fd 0 before.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        Raw::restore(self.0.take());
    }
}

/// cu's escapes on what the user types: `~.` at the start of a line detaches, `~~` sends
/// one `~`; anything else passes.
#[derive(Debug, Default)]
pub struct Escapes {
    mid_line: bool,
    tilde: bool,
}

impl Escapes {
    /// The bytes to send for `input`, and whether the user asked to detach.
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if self.tilde {
                self.tilde = false;
                match b {
                    b'.' => return (out, true),
                    b'~' => out.push(b'~'),
                    _ => out.extend([b'~', b]),
                }
            } else if !self.mid_line && b == b'~' {
                self.tilde = true;
                continue;
            } else {
                out.push(b);
            }
            self.mid_line = !matches!(b, b'\r' | b'\n');
        }
        (out, false)
    }
}

fn console(a: &ConsoleArgs) -> Result<(), Failure> {
    let path = vm_path(&a.name, "console")?;
    let mut s = connect(&a.socket.socket)?;
    let head = format!(
        "GET {path}?input={}&history={} HTTP/1.1\r\nHost: fugud\r\nUpgrade: fugu-console\r\nConnection: Upgrade\r\n\r\n",
        u8::from(!a.read_only),
        u8::from(!a.no_history)
    );
    s.write_all(head.as_bytes())
        .map_err(|e| fail(3, format!("cannot talk to fugud: {e}")))?;
    let r = http::read_response(&mut s).map_err(|e| fail(3, e.to_string()))?;
    if r.status != 101 {
        return Err(daemon_error(r.status, &r.body));
    }
    let input = r.header("x-fugu-console-input") == Some("yes");
    let note = if a.read_only {
        ", read-only"
    } else if !input {
        ", read-only: another client holds the input"
    } else {
        ""
    };
    eprint!("[fugu: attached to {}{note}; ~. detaches]\r\n", a.name);
    let raw = Raw::enable();
    let saved = raw.0;
    let mut out = std::io::stdout();
    let _ = out.write_all(&r.body).and_then(|()| out.flush());
    let mut rx = s.try_clone().map_err(|e| fail(1, format!("socket: {e}")))?;
    let name = a.name.clone();
    let detaching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let leaving = detaching.clone();
    let output = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut out = std::io::stdout();
        loop {
            match rx.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                        break;
                    }
                }
            }
        }
        if leaving.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        // The VM ended (or fugud went away): nothing more to attach to.
        Raw::restore(saved);
        eprint!("\r\n[fugu: the console of {name} closed: the VM ended]\r\n");
        std::process::exit(0);
    });
    let mut esc = Escapes::default();
    let mut stdin = std::io::stdin();
    let mut buf = [0u8; 1024];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => {
                // No more input: keep watching until the VM ends.
                let _ = s.shutdown(std::net::Shutdown::Write);
                drop(raw);
                let _ = output.join();
                return Ok(());
            }
            Ok(n) => n,
        };
        let (send, detach) = esc.feed(&buf[..n]);
        if !send.is_empty() && !a.read_only && s.write_all(&send).is_err() {
            break;
        }
        if detach {
            break;
        }
    }
    detaching.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = s.shutdown(std::net::Shutdown::Both);
    drop(raw);
    eprint!("\r\n[fugu: detached from {}]\r\n", a.name);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilde_dot_at_a_line_start_detaches() {
        let mut e = Escapes::default();
        assert_eq!(e.feed(b"~."), (vec![], true));
        let mut e = Escapes::default();
        assert_eq!(e.feed(b"ls ~.\r"), (b"ls ~.\r".to_vec(), false));
        assert_eq!(e.feed(b"~"), (vec![], false));
        assert_eq!(e.feed(b"."), (vec![], true));
        let mut e = Escapes::default();
        assert_eq!(e.feed(b"~~x\n~y"), (b"~x\n~y".to_vec(), false));
    }

    #[test]
    fn the_table_has_the_columns_and_readable_sizes() {
        let vm = VmInfo {
            name: "web".into(),
            state: "running".into(),
            pid: Some(42),
            cpus: 2,
            memory: 512 << 20,
            started_at: None,
            uptime_s: Some(3725),
            owner: "alice".into(),
            origin: "config".into(),
            source: None,
            autostart: true,
            last_end: None,
            console_log_bytes: 0,
        };
        let t = table(&[vm]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "NAME  STATE    PID  VCPUS  MEMORY  UPTIME  OWNER");
        assert_eq!(lines[1], "web   running  42   2      512M    1h02m   alice");
        assert_eq!(size(1 << 30), "1G");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(90000), "1d01h");
    }
}
