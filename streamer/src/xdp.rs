//! XDP loading (filled in by the XDP work).
