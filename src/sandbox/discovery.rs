//! The read-only discovery documents: ServiceProviderConfig, Schemas, ResourceTypes.

use serde_json::{Value, json};

use super::patch::{CORE_GROUP_URN, CORE_USER_URN, ENTERPRISE_URN};

const LIST_URN: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

/// What the server advertises: PATCH yes; bulk, sort, ETags and password change no.
pub(crate) fn service_provider_config(max_results: usize, location: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": max_results},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": false},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication with the directory API key as a bearer token",
            "primary": true
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": location}
    })
}

fn attr(name: &str, ty: &str, multi: bool, required: bool, mutability: &str) -> Value {
    json!({
        "name": name,
        "type": ty,
        "multiValued": multi,
        "required": required,
        "caseExact": false,
        "mutability": mutability,
        "returned": "default",
        "uniqueness": "none"
    })
}

fn complex(name: &str, multi: bool, subs: &[&str]) -> Value {
    let mut a = attr(name, "complex", multi, false, "readWrite");
    a["subAttributes"] = subs
        .iter()
        .map(|s| {
            let ty = if *s == "primary" { "boolean" } else { "string" };
            attr(s, ty, false, false, "readWrite")
        })
        .collect();
    a
}

fn user_schema() -> Value {
    let mut user_name = attr("userName", "string", false, true, "readWrite");
    user_name["uniqueness"] = json!("server");
    let mut attributes = vec![
        user_name,
        complex(
            "name",
            false,
            &[
                "formatted",
                "familyName",
                "givenName",
                "middleName",
                "honorificPrefix",
                "honorificSuffix",
            ],
        ),
    ];
    for simple in [
        "displayName",
        "nickName",
        "title",
        "preferredLanguage",
        "department",
        "organization",
        "timezone",
    ] {
        attributes.push(attr(simple, "string", false, false, "readWrite"));
    }
    attributes.push(attr("active", "boolean", false, false, "readWrite"));
    let mut emails = complex("emails", true, &["value", "type", "primary"]);
    emails["required"] = json!(true);
    attributes.push(emails);
    attributes.push(complex("phoneNumbers", true, &["value", "type", "primary"]));
    let mut groups = complex("groups", true, &["value", "display", "type"]);
    groups["mutability"] = json!("readOnly");
    attributes.push(groups);
    json!({
        "id": CORE_USER_URN,
        "name": "User",
        "description": "User Account",
        "attributes": attributes
    })
}

fn group_schema() -> Value {
    let mut display_name = attr("displayName", "string", false, true, "immutable");
    display_name["uniqueness"] = json!("server");
    json!({
        "id": CORE_GROUP_URN,
        "name": "Group",
        "description": "Group",
        "attributes": [display_name, complex("members", true, &["value", "display"])]
    })
}

fn enterprise_schema() -> Value {
    json!({
        "id": ENTERPRISE_URN,
        "name": "EnterpriseUser",
        "description": "Enterprise User",
        "attributes": [
            attr("organization", "string", false, false, "readWrite"),
            attr("department", "string", false, false, "readWrite")
        ]
    })
}

fn with_meta(mut v: Value, resource_type: &str, location: String) -> Value {
    v["meta"] = json!({"resourceType": resource_type, "location": location});
    v
}

fn list(resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_URN],
        "totalResults": resources.len(),
        "startIndex": 1,
        "itemsPerPage": resources.len(),
        "Resources": resources
    })
}

/// `/Schemas` (all) or `/Schemas/{urn}` (one); `None` for an unknown URN.
pub(crate) fn schemas(which: Option<&str>, base_url: &str) -> Option<Value> {
    let all: Vec<Value> = [user_schema(), group_schema(), enterprise_schema()]
        .into_iter()
        .map(|s| {
            let id = s["id"].as_str().unwrap_or_default().to_owned();
            with_meta(s, "Schema", format!("{base_url}/Schemas/{id}"))
        })
        .collect();
    match which {
        None => Some(list(all)),
        Some(urn) => all.into_iter().find(|s| {
            s["id"]
                .as_str()
                .is_some_and(|id| id.eq_ignore_ascii_case(urn))
        }),
    }
}

/// `/ResourceTypes` (all) or `/ResourceTypes/{name}` (one); `None` if unknown.
pub(crate) fn resource_types(which: Option<&str>, base_url: &str) -> Option<Value> {
    let user = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": "User",
        "name": "User",
        "endpoint": "/Users",
        "description": "User Account",
        "schema": CORE_USER_URN,
        "schemaExtensions": [{"schema": ENTERPRISE_URN, "required": false}]
    });
    let group = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": "Group",
        "name": "Group",
        "endpoint": "/Groups",
        "description": "Group",
        "schema": CORE_GROUP_URN,
        "schemaExtensions": []
    });
    let all: Vec<Value> = [user, group]
        .into_iter()
        .map(|r| {
            let id = r["id"].as_str().unwrap_or_default().to_owned();
            with_meta(r, "ResourceType", format!("{base_url}/ResourceTypes/{id}"))
        })
        .collect();
    match which {
        None => Some(list(all)),
        Some(name) => all.into_iter().find(|r| {
            r["id"]
                .as_str()
                .is_some_and(|id| id.eq_ignore_ascii_case(name))
        }),
    }
}
