//! Every JSON document that crosses a process boundary, as one type used by both sides: the
//! daemon writes or answers it, the CLI, the credential provider and tests read it.

mod refresh;
mod state;

pub use refresh::{FileReport, Outcome, RefreshReport, RefreshRequest};
pub use state::{DAEMON_STATE_FILE, DaemonState};
