//! Remotes: share a store through object storage (S3 and S3-compatible
//! services, a directory) with no server of tdelta's own.
//!
//! A remote holds the same immutable, content-addressed objects as a local
//! store (`config`, `packs/<id>.pack`, `packs/<id>.idx`,
//! `versions/<id>.tdm`), its refs (`refs/<name>`, `HEAD`), and an audit
//! trail (`audit/<time>-<n>.json`, one object per ref move). Transfers
//! send only what the other side lacks, immutable objects first (packs,
//! then indexes, then manifests) and refs last, each ref by
//! compare-and-swap. See FORMAT.md, "Remote layout".

mod config;
mod local_side;
mod maintain;
mod read;
mod transfer;

pub use config::{Remote, add, find, list, remove};
pub use maintain::{RemoteGcReport, RemoteRefCheck, RemoteVerifyReport, gc, parse_grace, verify};
pub use read::{RemoteReadReport, unpack};
pub use transfer::{PushOptions, RefUpdate, TransferReport, audit_trail, clone, fetch, open, pull, push};
