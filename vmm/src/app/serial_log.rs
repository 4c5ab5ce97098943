//! `--serial FILE`, the log of a VM's serial console.

/// `--serial FILE`: opened (and created) before the VM is set up, so that a path that cannot
/// be written is an error up front, but emptied only once the VM is about to run: a VM that
/// fails to start keeps the previous run's log, and a log file it created is removed.
pub(super) struct SerialLog {
    pub(super) file: std::fs::File,
    path: std::path::PathBuf,
    created: bool,
}

impl SerialLog {
    pub(super) fn open(path: &str) -> Result<SerialLog, String> {
        let created = !std::path::Path::new(path).exists();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| format!("cannot create serial log {path}: {e}"))?;
        Ok(SerialLog {
            file,
            path: path.into(),
            created,
        })
    }

    /// The VM starts: the log begins empty (a terminal or pipe given as the log is left be).
    pub(super) fn start(&self) -> Result<(), String> {
        let err =
            |e: std::io::Error| format!("cannot empty serial log {}: {e}", self.path.display());
        if self.file.metadata().map_err(err)?.is_file() {
            self.file.set_len(0).map_err(err)?;
        }
        Ok(())
    }

    /// The VM did not start: leave no trace of this run.
    pub(super) fn abandon(&self) {
        if self.created {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
