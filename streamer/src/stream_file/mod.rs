//! Stream files (filled in by the stream-file work).
