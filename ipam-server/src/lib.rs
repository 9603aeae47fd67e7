//! The HTTP API, health, metrics and usage page of ipam-server (issue 5). Empty until then.
