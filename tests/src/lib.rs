//! Process-level test helpers.
