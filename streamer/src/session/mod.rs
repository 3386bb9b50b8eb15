//! Stream sessions (filled in by the session work).
