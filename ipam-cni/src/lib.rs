//! The calico-ipam CNI plugin (issue 6). Empty until then.
