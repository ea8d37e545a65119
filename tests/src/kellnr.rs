//! Kellnr as an upstream (see tests/support/KELLNR.md).
