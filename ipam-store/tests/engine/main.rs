//! The engine's behaviour, run over every backend: each backend module
//! calls [`engine_tests!`] with an expression that starts a fresh store.

#[macro_use]
mod cooldown;
#[macro_use]
mod cases;
mod admin;
mod affinity;
mod concurrency;
mod embedded;
mod etcd;
mod faults;
mod kubernetes;
mod order;
mod split;

mod memory;
