//! Requests in RBAC's terms (verb, API group, resource, name), recorded
//! for every request so that tests can hold a role to exactly what the
//! code asks for.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;

use super::store::Shared;

/// One kind of request the server was asked, in RBAC's terms: what a role
/// must allow for it to pass.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    /// `get`, `list`, `watch`, `create`, `update`, `patch` or `delete`.
    pub verb: String,
    /// The API group (`""` for core).
    pub group: String,
    /// The resource (plural).
    pub resource: String,
    /// The object's name, for requests on one object.
    pub name: Option<String>,
}

impl Access {
    // RBAC's verb for a request: the method, and for GET whether it names
    // one object or a collection (and whether it watches).
    fn of(method: &axum::http::Method, path: &str, query: Option<&str>) -> Option<Access> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, rest) = match parts.as_slice() {
            ["apis", group, _version, rest @ ..] => (group.to_string(), rest),
            ["api", _version, rest @ ..] => (String::new(), rest),
            _ => return None,
        };
        let rest = match rest {
            ["namespaces", _namespace, rest @ ..] if !rest.is_empty() => rest,
            rest => rest,
        };
        let (resource, name) = match rest {
            [resource] => (resource.to_string(), None),
            [resource, name] => (resource.to_string(), Some(name.to_string())),
            // A subresource is its own RBAC resource: `services/status`.
            [resource, name, sub] => (format!("{resource}/{sub}"), Some(name.to_string())),
            _ => return None,
        };
        let watching =
            query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
        let verb = match (method.as_str(), &name) {
            ("GET", None) if watching => "watch",
            ("GET", None) => "list",
            ("GET", Some(_)) => "get",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", _) => "delete",
            _ => return None,
        };
        Some(Access {
            verb: verb.to_string(),
            group,
            resource,
            name,
        })
    }
}

// Notes what each request asks, refused or not: a role must allow it.
pub(super) async fn record_access(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let uri = request.uri();
    if let Some(access) = Access::of(request.method(), uri.path(), uri.query()) {
        shared
            .accesses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(access);
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_is_named_in_rbacs_terms() {
        use axum::http::Method;
        let of = |method: Method, path: &str, query: Option<&str>| {
            let a = Access::of(&method, path, query).unwrap();
            (a.verb, a.group, a.resource, a.name)
        };
        let calico = "/apis/crd.projectcalico.org/v1";
        assert_eq!(
            of(Method::GET, &format!("{calico}/ipamblocks"), None),
            (
                "list".into(),
                "crd.projectcalico.org".into(),
                "ipamblocks".into(),
                None
            )
        );
        assert_eq!(
            of(Method::GET, &format!("{calico}/ipamconfigs/default"), None).0,
            "get"
        );
        assert_eq!(
            of(Method::PUT, &format!("{calico}/ipamhandles/h"), None).0,
            "update"
        );
        assert_eq!(
            of(Method::POST, &format!("{calico}/ippools"), None).0,
            "create"
        );
        assert_eq!(
            of(Method::DELETE, &format!("{calico}/ipamblocks/b"), None).0,
            "delete"
        );
        assert_eq!(
            of(Method::GET, "/api/v1/pods", Some("watch=true")).0,
            "watch"
        );
        assert_eq!(
            of(
                Method::GET,
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l",
                None
            ),
            (
                "get".into(),
                "coordination.k8s.io".into(),
                "leases".into(),
                Some("l".into())
            )
        );
        assert_eq!(
            of(Method::GET, "/api/v1/namespaces/kube-system", None),
            (
                "get".into(),
                String::new(),
                "namespaces".into(),
                Some("kube-system".into())
            )
        );
        assert!(Access::of(&Method::GET, "/healthz", None).is_none());
    }
}
