//! ipamctl: show, check, release, configure, pools (issue 7). Empty until then.
