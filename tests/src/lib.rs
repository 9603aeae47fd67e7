//! End-to-end tests that cross crates: they live in `tests/` and use the
//! workspace's crates together (deploy/ manifests against what the code
//! does, for one). No library code here.
