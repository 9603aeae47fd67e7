//! One conformance suite, run against every backend: each backend module
//! calls [`conformance_tests!`] with an expression that starts a fresh store.

#[macro_use]
mod suite;

mod embedded;
mod etcd;
mod kubernetes;
mod memory;
