//! Servers for tests, shared by every crate's tests: a real etcd process on
//! a free loopback port in a temporary directory ([`etcd`]), and an
//! in-process Kubernetes API server that keeps the API's contract for
//! Calico's cluster-scoped custom resources ([`apiserver`]).
//!
//! Everything here binds to loopback only and stops what it started when
//! dropped.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod apiserver;
pub mod etcd;
