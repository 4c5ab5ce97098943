//! The JSON bodies of the control socket (docs/api.md describes each): what clients send and
//! what fugud answers. Unknown fields in a request are errors, so a typo is not ignored.

use serde::{Deserialize, Serialize};

/// `POST /v1/vms/{name}/start`: empty (the configuration's VM) or the options of `fugu run`.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// `fugu run` options, e.g. ["--kernel", "vmlinuz", "--memory", "512M"].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// The directory relative paths in `args` are taken from (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// `POST /v1/vms/{name}/stop`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    /// End the VM at once (SIGTERM to its process, SIGKILL 5 s later if need be).
    #[serde(default)]
    pub force: bool,
    /// Seconds the guest has to power off after the power button before fugud forces it.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// Answer only once the VM has ended.
    #[serde(default)]
    pub wait: bool,
}

fn default_timeout() -> u64 {
    30
}

impl Default for StopRequest {
    fn default() -> Self {
        StopRequest {
            force: false,
            timeout: default_timeout(),
            wait: false,
        }
    }
}

/// One VM as fugud reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VmInfo {
    pub name: String,
    /// running, paused, stopping or stopped.
    pub state: String,
    pub pid: Option<i32>,
    pub cpus: u32,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// When the current run started (RFC 3339, UTC).
    pub started_at: Option<String>,
    pub uptime_s: Option<u64>,
    /// Who may control it besides root: "user", "@group", "user @group", or "root".
    pub owner: String,
    /// "config" (declared in the file named by `source`) or "api" (started with options).
    pub origin: String,
    pub source: Option<String>,
    pub autostart: bool,
    /// How the previous run ended.
    pub last_end: Option<EndInfo>,
    /// Bytes of console output kept (the bounded log).
    pub console_log_bytes: u64,
}

/// How a VM process ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndInfo {
    /// Its exit status, when it exited.
    pub exit_status: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
    /// In words: what fugu reported, or who killed it.
    pub reason: String,
    /// RFC 3339, UTC.
    pub at: String,
    /// Whether fugud ended it (stop, forced stop, shutdown).
    pub requested: bool,
}

/// `GET /v1/vms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmList {
    pub vms: Vec<VmInfo>,
}

/// `POST /v1/reload`: what changed.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReloadReport {
    /// New in the configuration.
    pub added: Vec<String>,
    /// Gone from it (a running one keeps running, as a VM of origin "api").
    pub removed: Vec<String>,
    /// Declared differently: applies at the VM's next start.
    pub changed: Vec<String>,
    /// Autostart VMs this reload started.
    pub started: Vec<String>,
    /// Autostart VMs that failed to start, with why.
    pub failed: Vec<String>,
}

/// `GET /v1/daemon`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub version: String,
    pub pid: u32,
    pub config: String,
    pub vms: usize,
}

/// Every error answer: `{"error": "..."}` with the HTTP status saying what kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_refuse_unknown_fields_and_take_defaults() {
        let s: StopRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(s, StopRequest::default());
        assert!(serde_json::from_str::<StopRequest>(r#"{"forse": true}"#).is_err());
        assert!(serde_json::from_str::<StopRequest>(r#"{"timeout": -1}"#).is_err());
        let s: StartRequest = serde_json::from_str(r#"{"args": ["--kernel", "k"]}"#).unwrap();
        assert_eq!(s.args.unwrap(), ["--kernel", "k"]);
    }
}
