//! Servers for tests, shared by every crate's tests: a real etcd process on
//! a free loopback port in a temporary directory ([`etcd`]), and an
//! in-process Kubernetes API server that keeps the API's contract for
//! Calico's cluster-scoped custom resources ([`apiserver`]); and
//! [`require`], which says whether what a test needs from the machine
//! (root, etcd, Chromium, Debian's CNI plugins) is there, and skips or
//! fails the test when it is not.
//!
//! Everything here binds to loopback only and stops what it started when
//! dropped.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod apiserver;
pub mod etcd;
pub mod require;
