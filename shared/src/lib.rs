//! privreg's shared core: the config model, validated crate names, sparse-index lines, the
//! layering policy and the pin file. Everything here is pure or does plain file I/O at its edge;
//! the daemon adds the network.

#![warn(missing_docs)]

pub mod advisory;
pub mod config;
#[cfg(feature = "http")]
pub mod http;
pub mod index;
pub mod name;
pub mod paths;
pub mod pin;
pub mod policy;
pub mod protocol;
pub mod route;
pub mod secrets;
pub mod store;

pub use name::{CrateName, UpstreamName};
