//! rubix-sync: Rubix token metadata from node repositories into PostgreSQL.
//!
//! Data flows `source → ipfs → token → sink`, orchestrated by `pipeline`; see DESIGN.md.

pub mod bench;
pub mod cli;
pub mod corpus;
#[doc(hidden)]
pub mod fuzzing;
pub mod host;
pub mod ipfs;
pub mod logfile;
pub mod metrics;
pub mod node;
pub mod pipeline;
pub mod report;
pub mod sink;
pub mod source;
pub mod token;
pub mod watch;
