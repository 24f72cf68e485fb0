//! End-to-end tests: a real server on 127.0.0.1:0 driven with reqwest.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, LOCATION, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::*;

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

struct Harness {
    rs: RunningSandbox,
    http: reqwest::Client,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Harness {
    async fn new() -> Self {
        Self::with(SandboxConfig::default()).await
    }

    async fn with(cfg: SandboxConfig) -> Self {
        let rs = Sandbox::start(cfg).await.expect("start sandbox");
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        Harness { rs, http }
    }

    fn sb(&self) -> &Sandbox {
        &self.rs.sandbox
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.rs.base_url())
    }

    async fn send(&self, rb: reqwest::RequestBuilder, body: Option<&Value>) -> Answer {
        let rb = match body {
            Some(b) => rb
                .header(CONTENT_TYPE, "application/scim+json; charset=utf-8")
                .body(serde_json::to_vec(b).unwrap()),
            None => rb,
        };
        let resp = rb.send().await.expect("send");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let rb = self
            .http
            .request(method, self.url(path))
            .bearer_auth(DEFAULT_API_KEY);
        self.send(rb, body.as_ref()).await
    }

    async fn list(&self, path: &str, query: &[(&str, &str)]) -> Answer {
        let rb = self
            .http
            .get(self.url(path))
            .bearer_auth(DEFAULT_API_KEY)
            .query(query);
        self.send(rb, None).await
    }

    async fn create_user(&self, name: &str) -> String {
        let a = self
            .call(Method::POST, "/Users", Some(user_body(name)))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        a.body["id"].as_str().unwrap().to_owned()
    }

    async fn patch(&self, path: &str, ops: Value) -> Answer {
        self.call(
            Method::PATCH,
            path,
            Some(json!({"schemas": [PATCH_OP], "Operations": ops})),
        )
        .await
    }
}

fn user_body(name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
        "userName": name,
        "externalId": format!("ext-{name}"),
        "name": {"givenName": "Given", "familyName": name},
        "displayName": format!("Given {name}"),
        "title": "Engineer",
        "timezone": "Europe/Paris",
        "phoneNumbers": [{"value": "+33 1 23", "type": "work", "primary": true}],
        "emails": [{"value": format!("{name}@example.com"), "type": "work", "primary": true}],
        ENTERPRISE: {"department": "Ops", "organization": "Acme"}
    })
}

fn assert_scim_error(a: &Answer, status: u16, scim_type: Option<&str>) {
    assert_eq!(a.status.as_u16(), status, "{}", a.body);
    assert_eq!(
        a.headers[CONTENT_TYPE], "application/scim+json",
        "{:?}",
        a.headers
    );
    assert_eq!(a.body["schemas"], json!([error::ERROR_URN]));
    assert_eq!(a.body["status"], json!(status.to_string()));
    assert_eq!(a.body["scimType"].as_str(), scim_type, "{}", a.body);
    assert!(a.body["detail"].is_string());
}

#[tokio::test]
async fn unauthorized_has_atlassian_failure_shape_and_never_echoes_the_key() {
    let h = Harness::new().await;
    let none = h.send(h.http.get(h.url("/Users")), None).await;
    let wrong = h
        .send(
            h.http
                .get(h.url("/Users"))
                .bearer_auth("presented-secret-123"),
            None,
        )
        .await;
    let basic = h
        .send(
            h.http
                .get(h.url("/Users"))
                .header("authorization", "Basic sandbox-key"),
            None,
        )
        .await;
    for a in [&none, &wrong, &basic] {
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert_eq!(a.headers[CONTENT_TYPE], "application/json");
        let obj = a.body.as_object().unwrap();
        assert_eq!(obj.len(), 2, "{}", a.body);
        assert_eq!(obj["error"], "Unauthorized");
        let trace = obj["traceId"].as_str().unwrap();
        assert!(!trace.is_empty() && trace.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(!a.body.to_string().contains("presented-secret"));
        assert!(!format!("{:?}", a.headers).contains("presented-secret"));
    }
    assert_ne!(none.body["traceId"], wrong.body["traceId"]);
    let c = h.sb().counts();
    assert_eq!(c.total, 3);
    assert_eq!(c.get(Route::ListUsers), 3);
}

#[tokio::test]
async fn wrong_directory_and_unknown_paths_are_404() {
    let h = Harness::new().await;
    let url = format!("{}/scim/directory/not-my-directory/Users", h.rs.origin());
    let a = h
        .send(h.http.get(url).bearer_auth(DEFAULT_API_KEY), None)
        .await;
    assert_scim_error(&a, 404, None);
    assert!(a.body["detail"].as_str().unwrap().contains("directory"));
    assert!(a.body["detail"].as_str().unwrap().contains("not found"));
    for path in ["/Bulk", "/Me", "/Users/.search", "/Users/"] {
        let a = h.call(Method::GET, path, None).await;
        assert_scim_error(&a, 404, None);
    }
    let a = h.call(Method::GET, "/Users/no-such-id", None).await;
    assert_scim_error(&a, 404, None);
    let a = h.call(Method::DELETE, "/Users", None).await;
    assert_scim_error(&a, 404, None);
    assert_eq!(h.sb().counts().get(Route::Other), 4);
}

#[tokio::test]
async fn create_user_keeps_attributes_and_enforces_uniqueness() {
    let h = Harness::new().await;
    let a = h
        .call(Method::POST, "/Users", Some(user_body("alice")))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.headers[CONTENT_TYPE], "application/scim+json");
    let u = &a.body;
    let id = u["id"].as_str().unwrap();
    assert_eq!(id.len(), 36);
    let location = a.headers[LOCATION].to_str().unwrap();
    assert_eq!(location, format!("{}/Users/{id}", h.rs.base_url()));
    assert_eq!(u["meta"]["location"], location);
    assert_eq!(u["meta"]["resourceType"], "User");
    assert!(u["meta"]["created"].is_string() && u["meta"]["lastModified"].is_string());
    assert_eq!(u["active"], true);
    assert!(
        u["urn:scim:schemas:extension:atlassian-external:1.0"]["atlassianAccountId"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert_eq!(u[ENTERPRISE]["department"], "Ops");
    assert_eq!(u["name"]["familyName"], "alice");
    assert_eq!(u["phoneNumbers"][0]["value"], "+33 1 23");
    assert_eq!(u["timezone"], "Europe/Paris");
    assert_eq!(u["title"], "Engineer");

    // Same userName in another case.
    let mut dup = user_body("ALICE");
    dup["emails"][0]["value"] = json!("other@example.com");
    let a = h.call(Method::POST, "/Users", Some(dup)).await;
    assert_scim_error(&a, 409, Some("uniqueness"));
    assert_eq!(
        a.body["detail"],
        "Resource [USER]: with userName[ALICE] already exists."
    );
    // Same primary email in another case.
    let mut dup = user_body("bob");
    dup["emails"][0]["value"] = json!("Alice@Example.com");
    let a = h.call(Method::POST, "/Users", Some(dup)).await;
    assert_scim_error(&a, 409, Some("uniqueness"));
    assert!(a.body["detail"].as_str().unwrap().contains("email["));
    // externalId is not unique.
    let mut same_ext = user_body("carol");
    same_ext["externalId"] = json!("ext-alice");
    let a = h.call(Method::POST, "/Users", Some(same_ext)).await;
    assert_eq!(a.status, StatusCode::CREATED);

    // Validation.
    let mut no_primary = user_body("dave");
    no_primary["emails"][0]["primary"] = json!(false);
    let a = h.call(Method::POST, "/Users", Some(no_primary)).await;
    assert_scim_error(&a, 400, Some("invalidValue"));
    assert_eq!(
        a.body["detail"],
        "One email address need to be marked as primary"
    );
    let mut two_primary = user_body("dave");
    two_primary["emails"] = json!([
        {"value": "d1@example.com", "primary": true},
        {"value": "d2@example.com", "primary": true}
    ]);
    let a = h.call(Method::POST, "/Users", Some(two_primary)).await;
    assert_scim_error(&a, 400, Some("invalidValue"));
    let mut no_name = user_body("dave");
    no_name.as_object_mut().unwrap().remove("userName");
    let a = h.call(Method::POST, "/Users", Some(no_name)).await;
    assert_scim_error(&a, 400, Some("invalidValue"));
    let mut bad_active = user_body("dave");
    bad_active["active"] = json!("true");
    let a = h.call(Method::POST, "/Users", Some(bad_active)).await;
    assert_scim_error(&a, 400, Some("invalidValue"));

    // Invalid JSON, sent as plain application/json.
    let rb = h
        .http
        .post(h.url("/Users"))
        .bearer_auth(DEFAULT_API_KEY)
        .header(CONTENT_TYPE, "application/json")
        .body("{\"userName\": ");
    let a = h.send(rb, None).await;
    assert_scim_error(&a, 400, Some("invalidSyntax"));
    // application/json bodies are accepted.
    let rb = h
        .http
        .post(h.url("/Users"))
        .bearer_auth(DEFAULT_API_KEY)
        .json(&user_body("erin"));
    assert_eq!(h.send(rb, None).await.status, StatusCode::CREATED);
    assert_eq!(h.sb().users().len(), 3);
}

#[tokio::test]
async fn user_filters() {
    let h = Harness::new().await;
    let alice = h.create_user("alice").await;
    h.create_user("bob").await;

    let a = h
        .list("/Users", &[("filter", r#"userName eq "ALICE""#)])
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["totalResults"], 1);
    assert_eq!(a.body["Resources"][0]["id"], json!(alice));
    assert_eq!(
        a.body["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:ListResponse"])
    );
    let a = h
        .list("/Users", &[("filter", r#"USERNAME Eq "alice""#)])
        .await;
    assert_eq!(a.body["totalResults"], 1);

    let a = h
        .list("/Users", &[("filter", r#"externalId eq "ext-alice""#)])
        .await;
    assert_eq!(a.body["totalResults"], 1);
    assert_eq!(a.body["Resources"][0]["id"], json!(alice));
    // externalId is case-sensitive.
    let a = h
        .list("/Users", &[("filter", r#"externalId eq "EXT-ALICE""#)])
        .await;
    assert_eq!(a.body["totalResults"], 0);
    assert_eq!(a.body["Resources"], json!([]));

    for bad in [
        r#"emails[type eq "work"].value eq "alice@example.com""#,
        r#"emails.value eq "alice@example.com""#,
        r#"emails eq "alice@example.com""#,
        r#"userName co "ali""#,
        r#"userName eq "alice" or userName eq "bob""#,
        r#"userName eq "alice" and externalId eq "ext-alice""#,
        r#"displayName eq "Given alice""#,
        "userName eq alice",
    ] {
        let a = h.list("/Users", &[("filter", bad)]).await;
        assert_scim_error(&a, 400, Some("invalidFilter"));
    }
}

#[tokio::test]
async fn paging_250_users_in_three_pages_with_misleading_items_per_page() {
    let h = Harness::new().await;
    let mut created = Vec::new();
    for i in 0..250 {
        let mut u = user_body(&format!("user{i:03}"));
        u["externalId"] = json!(format!("e{i}"));
        created.push(h.sb().insert_user(u).unwrap());
    }
    let mut seen = Vec::new();
    for (start, expect) in [("1", 100), ("101", 100), ("201", 50)] {
        let a = h
            .list("/Users", &[("startIndex", start), ("count", "100")])
            .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body["totalResults"], 250);
        assert_eq!(a.body["startIndex"], start.parse::<u64>().unwrap());
        assert_eq!(a.body["itemsPerPage"], 100);
        let res = a.body["Resources"].as_array().unwrap();
        assert_eq!(res.len(), expect);
        seen.extend(res.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
    }
    assert_eq!(seen, created, "creation order, no gaps or repeats");
    let a = h.list("/Users", &[("startIndex", "251")]).await;
    assert_eq!(a.body["Resources"], json!([]));
    // No count: 100 resources, itemsPerPage 10000.
    let a = h.list("/Users", &[]).await;
    assert_eq!(a.body["Resources"].as_array().unwrap().len(), 100);
    assert_eq!(a.body["itemsPerPage"], 10000);
    assert_eq!(a.body["startIndex"], 1);
    // count above the cap: capped, but echoed.
    let a = h
        .list("/Users", &[("count", "500"), ("startIndex", "0")])
        .await;
    assert_eq!(a.body["Resources"].as_array().unwrap().len(), 100);
    assert_eq!(a.body["itemsPerPage"], 500);
    assert_eq!(a.body["startIndex"], 1);
    // A small page.
    let a = h
        .list("/Users", &[("count", "7"), ("startIndex", "3")])
        .await;
    assert_eq!(a.body["Resources"].as_array().unwrap().len(), 7);
    assert_eq!(a.body["Resources"][0]["id"], json!(created[2]));
    let a = h.list("/Users", &[("count", "abc")]).await;
    assert_scim_error(&a, 400, Some("invalidValue"));
    // Deleting keeps the order of the rest.
    let a = h
        .call(Method::DELETE, &format!("/Users/{}", created[0]), None)
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = h.list("/Users", &[("count", "1")]).await;
    assert_eq!(a.body["Resources"][0]["id"], json!(created[1]));
    assert_eq!(a.body["totalResults"], 249);
}

#[tokio::test]
async fn patch_user_paths() {
    let h = Harness::new().await;
    let id = h.create_user("alice").await;
    let path = format!("/Users/{id}");
    let a = h
        .patch(
            &path,
            json!([
                {"op": "replace", "path": "name.givenName", "value": "Alicia"},
                {"op": "Replace", "path": format!("{ENTERPRISE}:department"), "value": "R&D"},
                {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "alicia@example.com"},
                {"op": "replace", "path": "phoneNumbers[type eq \"work\"].value", "value": "+1 555"},
                {"op": "replace", "path": "active", "value": false},
                {"op": "add", "path": "nickName", "value": "Ali"},
                {"op": "remove", "path": "title"}
            ]),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let u = &a.body;
    assert_eq!(u["name"]["givenName"], "Alicia");
    assert_eq!(u["name"]["familyName"], "alice");
    assert_eq!(u[ENTERPRISE]["department"], "R&D");
    assert_eq!(u[ENTERPRISE]["organization"], "Acme");
    assert_eq!(
        u["emails"],
        json!([{"value": "alicia@example.com", "type": "work", "primary": true}])
    );
    assert_eq!(u["phoneNumbers"][0]["value"], "+1 555");
    assert_eq!(u["active"], false);
    assert_eq!(u["nickName"], "Ali");
    assert!(u.get("title").is_none());
    assert_eq!(h.call(Method::GET, &path, None).await.body, *u);

    // The new email is now the identity: old address is free, new one is taken.
    let mut other = user_body("bob");
    other["emails"][0]["value"] = json!("ALICIA@example.com");
    let a = h.call(Method::POST, "/Users", Some(other)).await;
    assert_scim_error(&a, 409, Some("uniqueness"));

    // Lowercase `operations`, no-path merge.
    let a = h
        .call(
            Method::PATCH,
            &path,
            Some(json!({"schemas": [PATCH_OP], "operations": [
                {"op": "add", "value": {"name": {"familyName": "Smith"}, "title": "Lead", "active": true}}
            ]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        a.body["name"],
        json!({"givenName": "Alicia", "familyName": "Smith"})
    );
    assert_eq!(a.body["title"], "Lead");
    assert_eq!(a.body["active"], true);

    // Atomic: the valid first op is not applied when the second fails.
    let a = h
        .patch(
            &path,
            json!([
                {"op": "replace", "path": "title", "value": "Changed"},
                {"op": "replace", "path": "active", "value": "false"}
            ]),
        )
        .await;
    assert_scim_error(&a, 400, Some("invalidValue"));
    let now = h.call(Method::GET, &path, None).await.body;
    assert_eq!(now["title"], "Lead");
    assert_eq!(now["active"], true);

    let a = h.patch(&path, json!([{"op": "remove"}])).await;
    assert_scim_error(&a, 400, Some("noTarget"));
    let a = h
        .patch(
            &path,
            json!([{"op": "replace", "path": "favouriteColour", "value": "red"}]),
        )
        .await;
    assert_scim_error(&a, 400, Some("invalidPath"));
    let a = h
        .patch(&path, json!([{"op": "remove", "path": "emails"}]))
        .await;
    assert_scim_error(&a, 400, Some("invalidValue"));
    let a = h
        .patch("/Users/nope", json!([{"op": "remove", "path": "title"}]))
        .await;
    assert_scim_error(&a, 404, None);
}

#[tokio::test]
async fn put_user_replaces_everything() {
    let h = Harness::new().await;
    let id = h.create_user("alice").await;
    h.create_user("bob").await;
    let before = h
        .sb()
        .users()
        .into_iter()
        .find(|u| u["id"] == json!(id))
        .unwrap();
    let path = format!("/Users/{id}");
    let body = json!({
        "userName": "alice",
        "emails": [{"value": "alice@example.com", "primary": true}],
        "displayName": "Only this"
    });
    let a = h.call(Method::PUT, &path, Some(body)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body.get("title").is_none() && a.body.get(ENTERPRISE).is_none());
    assert_eq!(a.body["displayName"], "Only this");
    assert_eq!(a.body["meta"]["created"], before["meta"]["created"]);
    assert_eq!(
        a.body["urn:scim:schemas:extension:atlassian-external:1.0"],
        before["urn:scim:schemas:extension:atlassian-external:1.0"]
    );
    let clash =
        json!({"userName": "bob", "emails": [{"value": "alice@example.com", "primary": true}]});
    let a = h.call(Method::PUT, &path, Some(clash)).await;
    assert_scim_error(&a, 409, Some("uniqueness"));
}

#[tokio::test]
async fn delete_user_then_404_and_memberships_gone() {
    let h = Harness::new().await;
    let id = h.create_user("alice").await;
    let g = h
        .call(
            Method::POST,
            "/Groups",
            Some(json!({"displayName": "devs", "members": [{"value": id}]})),
        )
        .await;
    assert_eq!(g.status, StatusCode::CREATED, "{}", g.body);
    let gid = g.body["id"].as_str().unwrap().to_owned();
    let path = format!("/Users/{id}");
    let a = h.call(Method::DELETE, &path, None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(a.body, Value::Null);
    assert_scim_error(&h.call(Method::GET, &path, None).await, 404, None);
    assert_scim_error(&h.call(Method::DELETE, &path, None).await, 404, None);
    let a = h
        .patch(
            &path,
            json!([{"op": "replace", "path": "active", "value": false}]),
        )
        .await;
    assert_scim_error(&a, 404, None);
    let g = h.call(Method::GET, &format!("/Groups/{gid}"), None).await;
    assert_eq!(g.body["members"], json!([]));
    // The userName and email are free again; a new POST gets a new id.
    let again = h.create_user("alice").await;
    assert_ne!(again, id);
}

#[tokio::test]
async fn groups_lifecycle() {
    let h = Harness::new().await;
    let u1 = h.create_user("u1").await;
    let u2 = h.create_user("u2").await;
    let a = h
        .call(
            Method::POST,
            "/Groups",
            Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Engineering", "externalId": "g-ext"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let gid = a.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        a.headers[LOCATION].to_str().unwrap(),
        format!("{}/Groups/{gid}", h.rs.base_url())
    );
    assert_eq!(a.body["members"], json!([]));
    assert_eq!(a.body["externalId"], "g-ext");
    let path = format!("/Groups/{gid}");

    let a = h
        .call(
            Method::POST,
            "/Groups",
            Some(json!({"displayName": "ENGINEERING"})),
        )
        .await;
    assert_scim_error(&a, 409, Some("uniqueness"));
    let a = h
        .call(
            Method::POST,
            "/Groups",
            Some(json!({"displayName": "x", "members": [{"value": "ghost"}]})),
        )
        .await;
    assert_scim_error(&a, 404, None);
    let a = h
        .call(Method::POST, "/Groups", Some(json!({"externalId": "x"})))
        .await;
    assert_scim_error(&a, 400, Some("invalidValue"));

    // Add members (duplicates ignored).
    let a = h
        .patch(
            &path,
            json!([{"op": "add", "path": "members", "value": [{"value": u1}, {"value": u2}, {"value": u1}]}]),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let members = a.body["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    assert!(members.contains(&json!({"value": u1, "display": "u1"})));
    // Unknown user: 404, nothing applied.
    let a = h
        .patch(
            &path,
            json!([
                {"op": "remove", "path": format!("members[value eq \"{u1}\"]")},
                {"op": "add", "path": "members", "value": [{"value": "ghost"}]}
            ]),
        )
        .await;
    assert_scim_error(&a, 404, None);
    assert!(
        a.body["detail"]
            .as_str()
            .unwrap()
            .contains("does not exist")
    );
    assert_eq!(h.sb().groups()[0]["members"].as_array().unwrap().len(), 2);

    // Remove with a value filter; removing a non-member is a no-op.
    let a = h
        .patch(
            &path,
            json!([
                {"op": "remove", "path": format!("members[value eq \"{u1}\"]")},
                {"op": "remove", "path": "members[value eq \"not-a-member\"]"}
            ]),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["members"], json!([{"value": u2, "display": "u2"}]));
    // Okta form: remove members with a value array.
    let a = h
        .patch(
            &path,
            json!([{"op": "remove", "path": "members", "value": [{"value": u2}]}]),
        )
        .await;
    assert_eq!(a.body["members"], json!([]));

    // Renames are refused, however they are attempted.
    for ops in [
        json!([{"op": "replace", "path": "displayName", "value": "Eng"}]),
        json!([{"op": "replace", "value": {"displayName": "Eng"}}]),
    ] {
        let a = h.patch(&path, ops).await;
        assert_scim_error(&a, 400, Some("mutability"));
    }
    let a = h
        .call(Method::PUT, &path, Some(json!({"displayName": "Eng"})))
        .await;
    assert_scim_error(&a, 400, Some("mutability"));
    // PUT with the same name replaces members.
    let a = h
        .call(
            Method::PUT,
            &path,
            Some(json!({"displayName": "Engineering", "members": [{"value": u1}]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["members"], json!([{"value": u1, "display": "u1"}]));
    assert!(a.body.get("externalId").is_none());

    // Deactivated users stay members.
    let a = h
        .patch(
            &format!("/Users/{u1}"),
            json!([{"op": "replace", "path": "active", "value": false}]),
        )
        .await;
    assert_eq!(a.body["groups"][0]["value"], json!(gid));
    assert_eq!(h.sb().groups()[0]["members"].as_array().unwrap().len(), 1);

    // Filter and list.
    let a = h
        .list("/Groups", &[("filter", r#"displayName eq "engineering""#)])
        .await;
    assert_eq!(a.body["totalResults"], 1);
    assert_eq!(a.body["itemsPerPage"], 10000);
    assert_eq!(a.body["Resources"][0]["members"][0]["value"], json!(u1));
    let a = h
        .list("/Groups", &[("filter", r#"externalId eq "g-ext""#)])
        .await;
    assert_scim_error(&a, 400, Some("invalidFilter"));

    // Delete.
    assert_eq!(
        h.call(Method::DELETE, &path, None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_scim_error(&h.call(Method::GET, &path, None).await, 404, None);
    let u = h.call(Method::GET, &format!("/Users/{u1}"), None).await;
    assert!(u.body.get("groups").is_none());
}

#[tokio::test]
async fn big_group_membership_changes() {
    let h = Harness::new().await;
    let n = 20_000;
    let ids: Vec<String> = (0..n + 100)
        .map(|i| {
            h.sb()
                .insert_user(json!({"userName": format!("m{i}"), "emails": [{"value": format!("m{i}@x.io"), "primary": true}]}))
                .unwrap()
        })
        .collect();
    let members: Vec<Value> = ids[..n].iter().map(|id| json!({"value": id})).collect();
    let gid = h
        .sb()
        .insert_group(json!({"displayName": "everyone", "members": members}))
        .unwrap();
    let add: Vec<Value> = ids[n..].iter().map(|id| json!({"value": id})).collect();
    let a = h
        .patch(
            &format!("/Groups/{gid}"),
            json!([{"op": "add", "path": "members", "value": add}]),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["members"].as_array().unwrap().len(), n + 100);
    let a = h
        .call(Method::DELETE, &format!("/Users/{}", ids[5]), None)
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(
        h.sb().group(&gid).unwrap()["members"]
            .as_array()
            .unwrap()
            .len(),
        n + 99
    );
}

#[tokio::test]
async fn discovery_endpoints() {
    let h = Harness::new().await;
    let a = h.call(Method::GET, "/ServiceProviderConfig", None).await;
    assert_eq!(a.status, StatusCode::OK);
    let spc = &a.body;
    assert_eq!(spc["patch"]["supported"], true);
    assert_eq!(spc["bulk"]["supported"], false);
    assert_eq!(spc["bulk"]["maxOperations"], 0);
    assert_eq!(spc["filter"]["supported"], true);
    assert_eq!(spc["filter"]["maxResults"], 100);
    assert_eq!(spc["changePassword"]["supported"], false);
    assert_eq!(spc["sort"]["supported"], false);
    assert_eq!(spc["etag"]["supported"], false);
    assert_eq!(spc["authenticationSchemes"][0]["type"], "oauthbearertoken");
    let a = h.call(Method::GET, "/Schemas", None).await;
    assert_eq!(a.body["totalResults"], 3);
    let a = h
        .call(Method::GET, &format!("/Schemas/{ENTERPRISE}"), None)
        .await;
    assert_eq!(a.body["id"], ENTERPRISE);
    let a = h.call(Method::GET, "/ResourceTypes/User", None).await;
    assert_eq!(a.body["endpoint"], "/Users");
    assert_scim_error(
        &h.call(Method::GET, "/ResourceTypes/Nope", None).await,
        404,
        None,
    );
    let c = h.sb().counts();
    assert_eq!(c.get(Route::ServiceProviderConfig), 1);
    assert_eq!(c.get(Route::Schemas), 2);
    assert_eq!(c.get(Route::ResourceTypes), 2);
}

#[tokio::test]
async fn fault_429_with_retry_after_then_success() {
    let h = Harness::new().await;
    h.sb().inject(FaultRule::new(
        Some(Route::CreateUser),
        Fault::Status {
            status: 429,
            retry_after: Some("2".into()),
            body: None,
            content_type: None,
        },
        1,
    ));
    // Other routes are not affected.
    assert_eq!(h.list("/Users", &[]).await.status, StatusCode::OK);
    let a = h
        .call(Method::POST, "/Users", Some(user_body("alice")))
        .await;
    assert_scim_error(&a, 429, None);
    assert_eq!(a.headers[RETRY_AFTER], "2");
    assert!(h.sb().users().is_empty(), "a before-fault does not write");
    let a = h
        .call(Method::POST, "/Users", Some(user_body("alice")))
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let c = h.sb().counts();
    assert_eq!(c.throttled, 1);
    assert_eq!(c.get(Route::CreateUser), 2);
    assert_eq!(c.writes, 2);
    assert!(h.sb().faults().is_empty());
}

#[tokio::test]
async fn fault_after_write_is_in_doubt() {
    let h = Harness::new().await;
    h.sb()
        .inject(FaultRule::status(Some(Route::CreateUser), 503, 1).after_operation());
    let a = h
        .call(Method::POST, "/Users", Some(user_body("alice")))
        .await;
    assert_scim_error(&a, 503, None);
    assert_eq!(h.sb().users().len(), 1, "the write happened");
    // The retry now conflicts, which is what a careless client would see.
    let a = h
        .call(Method::POST, "/Users", Some(user_body("alice")))
        .await;
    assert_scim_error(&a, 409, Some("uniqueness"));
}

#[tokio::test]
async fn fault_kinds_reset_malformed_empty_html_delay_skip() {
    let h = Harness::new().await;
    let id = h.create_user("alice").await;
    let path = format!("/Users/{id}");

    // Reset: the head arrives, reading the body fails.
    h.sb()
        .inject(FaultRule::new(Some(Route::GetUser), Fault::Reset, 1));
    let resp = h
        .http
        .get(h.url(&path))
        .bearer_auth(DEFAULT_API_KEY)
        .send()
        .await
        .expect("head is sent");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.bytes().await.is_err());

    // Malformed JSON.
    h.sb().inject(FaultRule::new(
        Some(Route::GetUser),
        Fault::MalformedBody { status: 200 },
        1,
    ));
    let resp = h
        .http
        .get(h.url(&path))
        .bearer_auth(DEFAULT_API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()[CONTENT_TYPE], "application/scim+json");
    let text = resp.text().await.unwrap();
    assert_eq!(text, r#"{"schemas":["urn:ietf:params:scim:api:"#);
    assert!(serde_json::from_str::<Value>(&text).is_err());

    // Empty body.
    h.sb().inject(FaultRule::new(
        Some(Route::GetUser),
        Fault::EmptyBody { status: 502 },
        1,
    ));
    let a = h.call(Method::GET, &path, None).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(a.body, Value::Null);

    // An HTML gateway page with an HTTP-date Retry-After.
    h.sb().inject(FaultRule::new(
        None,
        Fault::Status {
            status: 503,
            retry_after: Some("Wed, 21 Oct 2015 07:28:00 GMT".into()),
            body: Some("<html><body>Service Unavailable</body></html>".into()),
            content_type: None,
        },
        1,
    ));
    let a = h.call(Method::GET, &path, None).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        a.headers[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(a.headers[RETRY_AFTER], "Wed, 21 Oct 2015 07:28:00 GMT");

    // "200 with a SCIM error inside".
    h.sb().inject(FaultRule::new(
        Some(Route::GetUser),
        Fault::Status {
            status: 200,
            retry_after: None,
            body: Some(r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"500","detail":"oops"}"#.into()),
            content_type: None,
        },
        1,
    ));
    let a = h.call(Method::GET, &path, None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["status"], "500");

    // Delay beyond the client's timeout, after letting one request through.
    h.sb()
        .inject(FaultRule::new(Some(Route::GetUser), Fault::Delay { millis: 400 }, 1).skipping(1));
    let quick = || {
        h.http
            .get(h.url(&path))
            .bearer_auth(DEFAULT_API_KEY)
            .timeout(Duration::from_millis(150))
            .send()
    };
    assert_eq!(quick().await.unwrap().status(), StatusCode::OK);
    let err = quick().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(quick().await.unwrap().status(), StatusCode::OK);

    // Forever rules until cleared.
    h.sb().inject(FaultRule::status(None, 500, 0));
    for _ in 0..3 {
        assert_eq!(h.call(Method::GET, &path, None).await.status.as_u16(), 500);
    }
    h.sb().clear_faults();
    assert_eq!(
        h.call(Method::GET, &path, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn counts_cover_every_request() {
    let h = Harness::new().await;
    let id = h.create_user("alice").await;
    h.sb().reset_counts();
    h.list("/Users", &[]).await;
    h.send(h.http.get(h.url("/Users")), None).await; // 401
    h.patch(
        &format!("/Users/{id}"),
        json!([{"op": "replace", "path": "title", "value": "x"}]),
    )
    .await;
    h.sb()
        .inject(FaultRule::status(Some(Route::DeleteUser), 500, 1));
    h.call(Method::DELETE, &format!("/Users/{id}"), None).await;
    h.call(Method::GET, "/Nope", None).await;
    // Control endpoints are not counted.
    let counts: Value = h
        .http
        .get(format!("{}/_sandbox/counts", h.rs.origin()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counts["total"], 5);
    assert_eq!(counts["writes"], 2);
    assert_eq!(counts["throttled"], 0);
    assert_eq!(counts["by_route"]["list_users"], 2);
    assert_eq!(counts["by_route"]["patch_user"], 1);
    assert_eq!(counts["by_route"]["delete_user"], 1);
    assert_eq!(counts["by_route"]["other"], 1);
    let c = h.sb().counts();
    assert_eq!(c.total, 5);
    assert_eq!(c.get(Route::CreateUser), 0);
    let reset = h
        .http
        .post(format!("{}/_sandbox/reset-counts", h.rs.origin()))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    assert_eq!(h.sb().counts().total, 0);
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let h = Harness::with(SandboxConfig {
        rate_limit: Some(RateLimit {
            per_second: 0.5,
            burst: 2,
            send_retry_after: true,
        }),
        ..SandboxConfig::default()
    })
    .await;
    assert_eq!(h.list("/Users", &[]).await.status, StatusCode::OK);
    assert_eq!(h.list("/Users", &[]).await.status, StatusCode::OK);
    let a = h.list("/Users", &[]).await;
    assert_scim_error(&a, 429, None);
    let secs: u64 = a.headers[RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&secs), "{secs}");
    let c = h.sb().counts();
    assert_eq!((c.total, c.throttled), (3, 1));

    let h = Harness::with(SandboxConfig {
        rate_limit: Some(RateLimit {
            per_second: 0.5,
            burst: 1,
            send_retry_after: false,
        }),
        ..SandboxConfig::default()
    })
    .await;
    h.list("/Users", &[]).await;
    let a = h.list("/Users", &[]).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(a.headers.get(RETRY_AFTER).is_none());
}

#[tokio::test]
async fn control_endpoints() {
    let h = Harness::new().await;
    let origin = h.rs.origin();
    let r = h
        .http
        .post(format!("{origin}/_sandbox/faults"))
        .json(
            &json!({"route": "list_users", "fault": {"kind": "status", "status": 504}, "times": 1}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(h.list("/Users", &[]).await.status.as_u16(), 504);
    assert_eq!(h.list("/Users", &[]).await.status.as_u16(), 200);
    let bad = h
        .http
        .post(format!("{origin}/_sandbox/faults"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    h.http
        .post(format!("{origin}/_sandbox/faults"))
        .json(&json!({"fault": {"kind": "status", "status": 500}}))
        .send()
        .await
        .unwrap();
    let r = h
        .http
        .delete(format!("{origin}/_sandbox/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(h.list("/Users", &[]).await.status.as_u16(), 200);

    let r: Value = h
        .http
        .post(format!("{origin}/_sandbox/users"))
        .json(&user_body("seeded"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = r["id"].as_str().unwrap().to_owned();
    let r = h
        .http
        .post(format!("{origin}/_sandbox/drift"))
        .json(&json!({"id": id, "path": "title", "value": "Changed in admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let state: Value = h
        .http
        .get(format!("{origin}/_sandbox/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["users"][0]["title"], "Changed in admin");
    assert_eq!(state["groups"], json!([]));
}

#[tokio::test]
async fn seeding_and_drift_helpers() {
    let h = Harness::new().await;
    let id = h
        .sb()
        .insert_user(json!({
            "id": "fixed-id-1",
            "userName": "seed",
            "emails": [{"value": "seed@example.com", "primary": true}]
        }))
        .unwrap();
    assert_eq!(id, "fixed-id-1");
    assert!(
        h.sb()
            .insert_user(
                json!({"userName": "SEED", "emails": [{"value": "x@example.com", "primary": true}]})
            )
            .unwrap_err()
            .contains("already exists")
    );
    assert!(h.sb().insert_user(json!({"userName": "nomail"})).is_err());
    assert!(
        h.sb()
            .set_user_attr(&id, "name.givenName", json!("Drifted"))
    );
    assert!(
        h.sb()
            .set_user_attr(&id, ENTERPRISE, json!({"department": "Sales"}))
    );
    assert!(!h.sb().set_user_attr(&id, "active", json!("yes")));
    assert!(!h.sb().set_user_attr("nope", "title", json!("x")));
    let a = h.call(Method::GET, "/Users/fixed-id-1", None).await;
    assert_eq!(a.body["name"]["givenName"], "Drifted");
    assert_eq!(a.body[ENTERPRISE]["department"], "Sales");
    assert_eq!(a.body["active"], true);
    assert!(h.sb().set_user_attr(&id, "name.givenName", Value::Null));
    assert!(h.sb().user(&id).unwrap().get("name").is_none());

    let gid = h
        .sb()
        .insert_group(json!({"displayName": "g", "members": [{"value": id}]}))
        .unwrap();
    assert_eq!(h.sb().groups()[0]["members"][0]["display"], "seed");
    assert!(h.sb().insert_group(json!({"displayName": "G"})).is_err());
    assert!(
        h.sb()
            .insert_group(json!({"displayName": "h", "members": [{"value": "ghost"}]}))
            .is_err()
    );
    assert_eq!(h.sb().sizes(), (1, 1));
    assert_eq!(h.sb().group(&gid).unwrap()["displayName"], "g");
}

#[tokio::test]
async fn stop_shuts_the_server_down() {
    let h = Harness::new().await;
    let url = h.url("/Users");
    assert_eq!(h.list("/Users", &[]).await.status, StatusCode::OK);
    let Harness { rs, http } = h;
    rs.stop().await;
    let fresh = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(fresh.get(&url).send().await.is_err());
    drop(http);
}

#[tokio::test]
async fn groups_are_capped_at_the_member_limit() {
    let h = Harness::with(SandboxConfig {
        max_group_members: 2,
        ..SandboxConfig::default()
    })
    .await;
    let ids = [
        h.create_user("a@x.org").await,
        h.create_user("b@x.org").await,
        h.create_user("c@x.org").await,
    ];
    let member = |id: &str| json!({"value": id});
    let too_big = h
        .call(
            Method::POST,
            "/Groups",
            Some(json!({"displayName": "G", "members": [member(&ids[0]), member(&ids[1]), member(&ids[2])]})),
        )
        .await;
    assert_scim_error(&too_big, 400, Some("tooMany"));
    let g = h
        .call(
            Method::POST,
            "/Groups",
            Some(json!({"displayName": "G", "members": [member(&ids[0])]})),
        )
        .await;
    assert_eq!(g.status, StatusCode::CREATED, "{}", g.body);
    let path = format!("/Groups/{}", g.body["id"].as_str().unwrap());
    // Adding an existing member again does not count.
    let ok = h
        .patch(
            &path,
            json!([{"op": "add", "path": "members", "value": [member(&ids[0]), member(&ids[1])]}]),
        )
        .await;
    assert!(ok.status.is_success(), "{}", ok.body);
    let over = h
        .patch(
            &path,
            json!([{"op": "add", "path": "members", "value": [member(&ids[2])]}]),
        )
        .await;
    assert_scim_error(&over, 400, Some("tooMany"));
}
