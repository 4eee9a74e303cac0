//! Identifiers the node generates: sortable, unique, prefixed by kind.

/// A new event id: `evt_` + a ULID (time-sortable, 80 random bits).
pub fn event_id() -> String {
    format!("evt_{}", ulid::Ulid::new())
}

/// A new session id: `sess_` + a ULID.
pub fn session_id() -> String {
    format!("sess_{}", ulid::Ulid::new())
}
