//! The datastore trait, its backends (memory, embedded, etcd, Kubernetes) and the engine that runs ipam-core plans against them (issue 4). Empty until then.
