//! Configurable decoder limits (Redis's defaults).

/// Limits the decoders enforce; going past one is a protocol error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string payload (`proto-max-bulk-len`, default 512 MiB).
    pub max_bulk_len: usize,
    /// Most elements in one array (default 1,048,576).
    pub max_array_len: usize,
    /// Longest inline request line, and longest count line (default 64 KiB).
    pub max_inline_len: usize,
    /// Deepest nesting of aggregates in a reply frame (default 128).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_array_len: 1024 * 1024,
            max_inline_len: 64 * 1024,
            max_depth: 128,
        }
    }
}

impl Limits {
    /// What Redis allows a client that has not authenticated yet: at most 10 arguments of at
    /// most 16 KiB each, so that an unauthenticated peer cannot make the server allocate much.
    pub fn unauthenticated() -> Self {
        Limits {
            max_bulk_len: 16 * 1024,
            max_array_len: 10,
            ..Limits::default()
        }
    }
}
