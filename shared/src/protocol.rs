//! Every JSON document that crosses a process boundary, as one type used by both sides: the
//! daemon writes or answers it, the CLI, the credential provider and tests read it.

mod audit;
mod policy;
mod refresh;
mod registry;
mod state;
mod status;

pub use audit::{
    AuditAnswer, AuditPackage, AuditReport, AuditRequest, Finding, LockfileAudit, Problem,
    SkippedPackage,
};
pub use policy::{
    Conflict, Dating, Merged, Policy, PolicyAdvisory, PolicyOutcome, PolicyUpstream,
    VersionDecision, VersionState,
};
pub use refresh::{FileReport, Outcome, RefreshReport, RefreshRequest};
pub use registry::RegistryConfig;
pub use state::{DAEMON_STATE_FILE, DaemonState};
pub use status::{
    AdvisoriesStatus, CacheWriteError, DiskStatus, MemoryStatus, PageLink, SharedTierStatus,
    Status, UpstreamStatus,
};
