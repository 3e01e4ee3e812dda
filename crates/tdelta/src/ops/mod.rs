//! The verbs: pack, restore, verify, built from the pieces.
