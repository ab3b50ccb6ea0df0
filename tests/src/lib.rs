//! End-to-end test kit (placeholder).
