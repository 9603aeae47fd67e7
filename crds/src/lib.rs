//! Calico's crd.projectcalico.org/v1 wire types and their conversion to and from ipam-core (issue 3). Empty until then.
