//! Route classification and request counters.

use std::collections::BTreeMap;

use axum::http::Method;
use serde::{Deserialize, Serialize};

/// The SCIM operation a request was classified as (used for counting and fault matching).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// `GET /ServiceProviderConfig`.
    ServiceProviderConfig,
    /// `GET /Schemas` or `GET /Schemas/{urn}`.
    Schemas,
    /// `GET /ResourceTypes` or `GET /ResourceTypes/{name}`.
    ResourceTypes,
    /// `GET /Users`.
    ListUsers,
    /// `POST /Users`.
    CreateUser,
    /// `GET /Users/{id}`.
    GetUser,
    /// `PUT /Users/{id}`.
    ReplaceUser,
    /// `PATCH /Users/{id}`.
    PatchUser,
    /// `DELETE /Users/{id}`.
    DeleteUser,
    /// `GET /Groups`.
    ListGroups,
    /// `POST /Groups`.
    CreateGroup,
    /// `GET /Groups/{id}`.
    GetGroup,
    /// `PUT /Groups/{id}`.
    ReplaceGroup,
    /// `PATCH /Groups/{id}`.
    PatchGroup,
    /// `DELETE /Groups/{id}`.
    DeleteGroup,
    /// Anything else: unknown paths, unsupported methods, paths outside the SCIM base.
    Other,
}

impl Route {
    /// True for the routes that change state: POST/PUT/PATCH/DELETE on Users and Groups.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Route::CreateUser
                | Route::ReplaceUser
                | Route::PatchUser
                | Route::DeleteUser
                | Route::CreateGroup
                | Route::ReplaceGroup
                | Route::PatchGroup
                | Route::DeleteGroup
        )
    }
}

/// What a request path points at, below the directory base path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    ServiceProviderConfig,
    Schemas(Option<String>),
    ResourceTypes(Option<String>),
    Users,
    User(String),
    Groups,
    Group(String),
    /// A known path with a method it does not support.
    MethodNotAllowed,
    /// Unknown path below the base.
    NotFound,
}

/// Result of looking at a request line before any handler runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Classified {
    pub(crate) route: Route,
    pub(crate) target: Target,
    /// The `{directoryId}` segment, when the path is under `/scim/directory/`.
    pub(crate) directory: Option<String>,
}

/// Classify `method` + `path` (the directory id is not checked here).
pub(crate) fn classify(method: &Method, path: &str) -> Classified {
    let Some(rest) = path.strip_prefix("/scim/directory/") else {
        return Classified {
            route: Route::Other,
            target: Target::NotFound,
            directory: None,
        };
    };
    let (dir, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let segments: Vec<&str> = tail.split('/').skip(1).collect();
    let m = method;
    let (route, target) = match segments.as_slice() {
        ["ServiceProviderConfig"] => only_get(m, Route::ServiceProviderConfig, || {
            Target::ServiceProviderConfig
        }),
        ["Schemas"] => only_get(m, Route::Schemas, || Target::Schemas(None)),
        ["Schemas", urn] if !urn.is_empty() => only_get(m, Route::Schemas, || {
            Target::Schemas(Some((*urn).to_owned()))
        }),
        ["ResourceTypes"] => only_get(m, Route::ResourceTypes, || Target::ResourceTypes(None)),
        ["ResourceTypes", name] if !name.is_empty() => only_get(m, Route::ResourceTypes, || {
            Target::ResourceTypes(Some((*name).to_owned()))
        }),
        ["Users"] => match *m {
            Method::GET => (Route::ListUsers, Target::Users),
            Method::POST => (Route::CreateUser, Target::Users),
            _ => (Route::Other, Target::MethodNotAllowed),
        },
        ["Users", id] if !id.is_empty() => {
            let t = Target::User((*id).to_owned());
            match *m {
                Method::GET => (Route::GetUser, t),
                Method::PUT => (Route::ReplaceUser, t),
                Method::PATCH => (Route::PatchUser, t),
                Method::DELETE => (Route::DeleteUser, t),
                _ => (Route::Other, Target::MethodNotAllowed),
            }
        }
        ["Groups"] => match *m {
            Method::GET => (Route::ListGroups, Target::Groups),
            Method::POST => (Route::CreateGroup, Target::Groups),
            _ => (Route::Other, Target::MethodNotAllowed),
        },
        ["Groups", id] if !id.is_empty() => {
            let t = Target::Group((*id).to_owned());
            match *m {
                Method::GET => (Route::GetGroup, t),
                Method::PUT => (Route::ReplaceGroup, t),
                Method::PATCH => (Route::PatchGroup, t),
                Method::DELETE => (Route::DeleteGroup, t),
                _ => (Route::Other, Target::MethodNotAllowed),
            }
        }
        _ => (Route::Other, Target::NotFound),
    };
    Classified {
        route,
        target,
        directory: Some(dir.to_owned()),
    }
}

fn only_get(m: &Method, route: Route, target: impl FnOnce() -> Target) -> (Route, Target) {
    if *m == Method::GET {
        (route, target())
    } else {
        (Route::Other, Target::MethodNotAllowed)
    }
}

/// Request counters since start (or since the last reset).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// Every SCIM request received, whatever the outcome (401s and faults included).
    pub total: u64,
    /// Requests on write routes (see [`Route::is_write`]).
    pub writes: u64,
    /// Requests per route.
    pub by_route: BTreeMap<Route, u64>,
    /// Responses answered with 429, from the rate limiter or from an injected fault.
    pub throttled: u64,
}

impl RequestCounts {
    /// The number of requests seen on `route`.
    pub fn get(&self, route: Route) -> u64 {
        self.by_route.get(&route).copied().unwrap_or(0)
    }

    pub(crate) fn record(&mut self, route: Route) {
        self.total += 1;
        if route.is_write() {
            self.writes += 1;
        }
        *self.by_route.entry(route).or_insert(0) += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths() {
        let c = classify(&Method::GET, "/scim/directory/abc/Users");
        assert_eq!(c.route, Route::ListUsers);
        assert_eq!(c.directory.as_deref(), Some("abc"));
        let c = classify(&Method::PATCH, "/scim/directory/abc/Groups/g1");
        assert_eq!(c.route, Route::PatchGroup);
        assert_eq!(c.target, Target::Group("g1".into()));
        let c = classify(&Method::DELETE, "/scim/directory/abc/Users");
        assert_eq!(c.route, Route::Other);
        assert_eq!(c.target, Target::MethodNotAllowed);
        let c = classify(&Method::GET, "/scim/directory/abc/Bulk");
        assert_eq!(c.target, Target::NotFound);
        let c = classify(&Method::GET, "/elsewhere");
        assert_eq!(c.directory, None);
        let c = classify(&Method::GET, "/scim/directory/abc/Users/");
        assert_eq!(c.target, Target::NotFound);
        assert!(Route::DeleteUser.is_write());
        assert!(!Route::ListGroups.is_write());
    }
}
