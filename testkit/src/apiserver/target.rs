//! What a request's path names, and which stored objects it selects.

use std::collections::BTreeMap;

use axum::extract::Path as UrlPath;
use serde_json::Value;

use super::selectors::Selector;
use super::status::ApiError;
use super::store::{ResourceId, ResourceType, Store};

/// What a request's path names: `/api/<version>` (the core group) or
/// `/apis/<group>/<version>`, then `namespaces/<namespace>/` for a
/// namespaced kind, the resource, and the object's name.
pub(super) struct Target {
    pub(super) id: ResourceId,
    pub(super) namespace: Option<String>,
    name: Option<String>,
}

pub(super) type TargetPath = UrlPath<BTreeMap<String, String>>;

impl Target {
    pub(super) fn of(UrlPath(mut params): TargetPath) -> Target {
        let mut take = |key: &str| params.remove(key);
        Target {
            id: ResourceId::new(
                &take("group").unwrap_or_default(),
                &take("version").unwrap_or_default(),
                &take("plural").unwrap_or_default(),
            ),
            namespace: take("namespace"),
            name: take("name"),
        }
    }

    /// The resource, when it is served at this path: a namespaced kind
    /// under a namespace (or, for a list, across all of them), a
    /// cluster-scoped one without.
    pub(super) fn resource<'a>(&self, store: &'a Store) -> Result<&'a ResourceType, ApiError> {
        let resource = store
            .resources
            .get(&self.id)
            .ok_or_else(ApiError::unknown_resource)?;
        let listing_all = self.namespace.is_none() && self.name.is_none();
        match (resource.namespaced, self.namespace.is_some()) {
            (true, true) | (false, false) => Ok(resource),
            (true, false) if listing_all => Ok(resource),
            _ => Err(ApiError::unknown_resource()),
        }
    }

    /// Where object `name` is stored.
    pub(super) fn key(&self, name: &str) -> String {
        match &self.namespace {
            Some(namespace) => format!("{namespace}/{name}"),
            None => name.to_string(),
        }
    }

    pub(super) fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    /// Whether `object` is in the namespace the path names, if any.
    fn holds(&self, object: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| object["metadata"]["namespace"].as_str() == Some(ns))
    }

    /// Whether `object` is one a list or watch of this path with
    /// `selector` reports.
    pub(super) fn selects(&self, selector: &Selector, object: &Value) -> bool {
        self.holds(object) && selector.matches(&object["metadata"]["labels"])
    }

    /// The stored objects a list of this path with `selector` returns, in
    /// key order.
    pub(super) fn selected<'a>(
        &'a self,
        store: &'a Store,
        selector: &'a Selector,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        store
            .objects
            .get(&self.id)
            .into_iter()
            .flat_map(|objects| objects.values())
            .filter(move |object| self.selects(selector, object))
    }
}
