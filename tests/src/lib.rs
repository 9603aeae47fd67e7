//! End-to-end tests that cross crates and processes (issues 5-8). Empty until then.
