//! The contract around the routes: the OpenAPI document, the token, a
//! datastore that fails, and methods a route lacks.

use super::*;

/// The `(method, path)` pairs app.rs routes under `/v1`, read from its
/// source, so that a route added there without an OpenAPI entry fails here.
fn v1_routes_of_app_rs() -> BTreeSet<(String, String)> {
    let source = include_str!("../../src/app.rs");
    let mut routes = BTreeSet::new();
    for (at, _) in source.match_indices(".route(") {
        // The call's arguments: up to the parenthesis that closes it.
        let rest = &source[at + ".route(".len()..];
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find_map(|(i, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                (depth == 0).then_some(i)
            })
            .expect("a closed .route( call");
        let call = &rest[..end];
        let path = call.split('"').nth(1).expect("a quoted path");
        if !path.starts_with("/v1/") {
            continue;
        }
        for method in ["get", "post", "put", "delete", "patch"] {
            let named = call.match_indices(&format!("{method}(")).any(|(i, _)| {
                !call[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
            });
            if named {
                routes.insert((method.to_string(), path.to_string()));
            }
        }
    }
    routes
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let app = App::with_pool(AppConfig::default()).await;
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, 200, "{doc}");
    let mut documented = BTreeSet::new();
    // The probes and /metrics are documented too; app.rs's /v1 routes are
    // compared here.
    let v1 = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .filter(|(path, _)| path.starts_with("/v1/"));
    for (path, item) in v1 {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    let served = v1_routes_of_app_rs();
    assert!(served.len() >= 20, "app.rs parsed badly: {served:?}");
    assert_eq!(documented, served, "OpenAPI paths and app.rs routes differ");
    // And each of them is served: nothing answers no_such_route or 405.
    for (method, path) in &served {
        let path = path
            .replace("{handle}", "h")
            .replace("{address}", "10.0.0.1")
            .replace("{name}", "pool-a")
            .replace("{node}", "node-1");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let (status, body) = app.call(method.clone(), &path, None).await;
        assert!(
            status != 405 && body["code"] != "no_such_route",
            "{method} {path} is not served: {status} {body}"
        );
    }
    refused(
        app.get("/v1/nope").await,
        404,
        "no_such_route",
        "GET /v1/nope",
    );
}

#[tokio::test]
async fn the_token_guards_the_api_but_not_the_probes() {
    let app = App::with_pool(AppConfig {
        token: Some("t0ken".to_string()),
        ..AppConfig::default()
    })
    .await;
    assert_eq!(app.get("/v1/pools").await.0, 200, "with the token");
    for path in ["/v1/pools", "/openapi.json"] {
        let bare = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(bare.status(), 401, "{path} without a token");
        let body: Value = bare.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized");
        let wrong = app
            .client
            .get(format!("{}{path}", app.base))
            .bearer_auth("t0kem")
            .send()
            .await
            .unwrap();
        let status = wrong.status().as_u16();
        let body: Value = wrong.json().await.unwrap();
        refused((status, body), 401, "unauthorized", "Authorization: Bearer");
    }
    // RFC 9110: the scheme is case-insensitive.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let r = app
            .client
            .get(format!("{}/v1/pools", app.base))
            .header("authorization", format!("{scheme} t0ken"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "scheme {scheme:?}");
    }
    for path in ["/healthz", "/readyz"] {
        let bare = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(bare.status(), 200, "{path} stays open for kubelet");
        assert_eq!(bare.text().await.unwrap(), "ok\n");
    }
}

#[tokio::test]
async fn an_unreachable_or_slow_datastore_is_503() {
    let flaky = Arc::new(Flaky::default());
    let app = App::over(
        flaky.clone(),
        AppConfig {
            request_timeout: Duration::from_millis(300),
            ..AppConfig::default()
        },
    )
    .await;
    assert_eq!(app.get("/readyz").await.0, 200);
    flaky.down.store(true, Ordering::SeqCst);
    refused(
        app.get("/readyz").await,
        503,
        "datastore_unavailable",
        "connection refused",
    );
    refused(
        app.get("/v1/pools").await,
        503,
        "datastore_unavailable",
        "connection refused",
    );
    assert_eq!(
        app.get("/healthz").await.0,
        200,
        "the process is up all the same"
    );
    flaky.down.store(false, Ordering::SeqCst);
    flaky.slow.store(true, Ordering::SeqCst);
    refused(
        app.get("/v1/config").await,
        503,
        "timeout",
        "longer than 0.3 s",
    );
}

#[tokio::test]
async fn a_method_a_route_lacks_is_a_json_405_with_allow() {
    let app = App::with_pool(AppConfig::default()).await;
    for (method, path, allow) in [
        (Method::PATCH, "/v1/pools/pool-a", "GET,HEAD,PUT,DELETE"),
        (Method::DELETE, "/v1/assign", "POST"),
        (Method::POST, "/healthz", "GET,HEAD"),
    ] {
        let r = app
            .client
            .request(method.clone(), format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "method_not_allowed", "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("{method} is not a method of {path}")),
            "{message}"
        );
    }
}
