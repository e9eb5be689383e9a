//! How a run ends and where it stands: the exit status (a type, not loose
//! numbers) and the run state that the control bridge, `lmpi ctl status`,
//! the summary and the JSON report all read.

use serde::Serialize;

/// The process exit status. The numbers are part of the interface (job
/// scripts test them) and documented in `lmpi --help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitStatus {
    /// Everything was done.
    Done = 0,
    /// Finished, but some entries failed (see the error log).
    Errors = 1,
    /// Bad usage, config or roots: nothing was touched.
    Usage = 2,
    /// A delete (or final) pass refused for safety.
    Refused = 3,
    /// Stopped (signal, `lmpi ctl stop`) before finishing.
    Stopped = 4,
    /// `--max-delete` would have been exceeded: nothing deleted.
    MaxDelete = 5,
}

impl ExitStatus {
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The word the summary and the JSON report give a finished pass.
    pub fn outcome(self) -> &'static str {
        match self {
            ExitStatus::Done => "complete",
            ExitStatus::Errors => "incomplete",
            ExitStatus::Usage => "not started",
            ExitStatus::Refused => "refused",
            ExitStatus::Stopped => "stopped",
            ExitStatus::MaxDelete => "max-delete reached",
        }
    }
}

/// Where a job stands. One value, kept by rank 0 in the shared job status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Held at the start gate until `lmpi ctl start` (or the old cmover start).
    Waiting,
    #[default]
    Running,
    /// A stop was asked for: in-flight work finishes, nothing new starts.
    Stopping,
    Done,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Waiting => "waiting",
            RunState::Running => "running",
            RunState::Stopping => "stopping",
            RunState::Done => "done",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_words() {
        assert_eq!(ExitStatus::Done.code(), 0);
        assert_eq!(ExitStatus::MaxDelete.code(), 5);
        assert_eq!(ExitStatus::Stopped.outcome(), "stopped");
        assert_eq!(
            serde_json::to_string(&RunState::Waiting).unwrap(),
            "\"waiting\""
        );
    }
}
