//! What an audit entry records ([`crate::AuditEntry::op`]), stored as its
//! name (FORMAT.md, the audit log).

use serde::{Deserialize, Serialize};

/// The operation of an audit entry. Its JSON form is the name, as
/// before; a name this build does not know (written by a newer one) is
/// kept as [`AuditOp::Other`], so the entry still reads and its seal
/// still checks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum AuditOp {
    /// A version was packed (HEAD moved to it).
    Pack,
    /// A tag was set or moved.
    Tag,
    /// A tag was deleted.
    Untag,
    /// A ref was moved back.
    Rollback,
    /// A version was dropped.
    Drop,
    /// Unreferenced blocks were collected.
    Gc,
    /// A ref move a killed writer left pending was completed.
    Recover,
    /// `repair audit` recorded the refs as found.
    Repair,
    /// Any other name.
    Other(String),
}

impl AuditOp {
    /// The name, as stored.
    pub fn as_str(&self) -> &str {
        match self {
            AuditOp::Pack => "pack",
            AuditOp::Tag => "tag",
            AuditOp::Untag => "untag",
            AuditOp::Rollback => "rollback",
            AuditOp::Drop => "drop",
            AuditOp::Gc => "gc",
            AuditOp::Recover => "recover",
            AuditOp::Repair => "repair",
            AuditOp::Other(s) => s,
        }
    }
}

impl From<&str> for AuditOp {
    fn from(s: &str) -> AuditOp {
        match s {
            "pack" => AuditOp::Pack,
            "tag" => AuditOp::Tag,
            "untag" => AuditOp::Untag,
            "rollback" => AuditOp::Rollback,
            "drop" => AuditOp::Drop,
            "gc" => AuditOp::Gc,
            "recover" => AuditOp::Recover,
            "repair" => AuditOp::Repair,
            other => AuditOp::Other(other.to_string()),
        }
    }
}

impl From<String> for AuditOp {
    fn from(s: String) -> AuditOp {
        AuditOp::from(s.as_str())
    }
}

impl From<AuditOp> for String {
    fn from(op: AuditOp) -> String {
        match op {
            AuditOp::Other(s) => s,
            known => known.as_str().to_string(),
        }
    }
}

impl std::fmt::Display for AuditOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for AuditOp {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for AuditOp {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_kept() {
        for name in ["pack", "tag", "untag", "rollback", "drop", "gc", "recover", "repair", "upgrade"] {
            let op: AuditOp = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(op, name);
            assert_eq!(serde_json::to_string(&op).unwrap(), format!("\"{name}\""));
        }
        assert_eq!(AuditOp::from("gc"), AuditOp::Gc);
        assert_eq!(AuditOp::from("upgrade"), AuditOp::Other("upgrade".into()));
    }
}
