//! ipam-server: the IPAM engine behind a JSON HTTP API.
//!
//! [`app`] builds the routes (`/v1/...`, `/healthz`, `/readyz`,
//! `/openapi.json`, `/`), [`api`] holds the handlers and their request and
//! response types, [`body`] reads request bodies strictly, [`error`] maps every failure to a status and a stable
//! code, [`metrics`] serves `/metrics`, [`openapi`] writes the OpenAPI document, [`page`] serves the usage page, [`server`] opens the datastore
//! and serves, [`connections`] bounds slow, idle and too many connections, [`defaults`] chooses the default pools as calico-node does,
//! [`args`] parses the flags, [`ratelimit`] bounds each client's request rate, [`reservations`] serves `/v1/reservations`,
//! [`node_labels`] reads and sets the labels pools' selectors match,
//! [`gc`] collects leaked addresses on the Kubernetes datastore while this
//! replica holds the [`lease`], both on the injected [`clock`]; [`loadbalancer`]
//! gives Services of type LoadBalancer addresses there, behind its own Lease.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod app;
pub mod args;
pub mod body;
pub mod clock;
pub mod connections;
pub mod defaults;
pub mod error;
pub mod gc;
pub mod lease;
pub mod loadbalancer;
pub mod metrics;
pub mod node_labels;
pub mod openapi;
pub mod page;
pub mod ratelimit;
pub mod reservations;
pub mod server;
pub mod split;
