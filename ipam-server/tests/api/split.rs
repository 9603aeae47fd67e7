//! `POST /v1/pool-splits`: calicoctl's `ipam split` through the API, its
//! refusals with their codes and the field and value they name.

use super::*;

#[tokio::test]
async fn a_pool_is_split_by_name_or_cidr_and_its_addresses_stay() {
    let app = App::with_pool(AppConfig::default()).await;
    let held = app.assign("h1", "node-a", 2).await;
    let (status, split) = app
        .post(
            "/v1/pool-splits",
            json!({"parts": 2, "cidr": "10.0.0.0/24"}),
        )
        .await;
    assert_eq!(status, 200, "{split}");
    assert_eq!(split["parent"]["name"], "pool-a");
    let children: Vec<(&str, &str)> = split["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap(),
                c["spec"]["cidr"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        children,
        [
            ("split-pool-a-0", "10.0.0.0/25"),
            ("split-pool-a-1", "10.0.0.128/25")
        ]
    );
    let (_, pools) = app.get("/v1/pools").await;
    let names: Vec<&str> = pools
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["split-pool-a-0", "split-pool-a-1"]);
    assert_eq!(app.get("/v1/handles/h1").await.1["addresses"], held["ipv4"]);
    // A child split again, by name.
    let (status, again) = app
        .post(
            "/v1/pool-splits",
            json!({"parts": 2, "name": "split-pool-a-1"}),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["children"][1]["name"], "split-split-pool-a-1-1");
    assert_eq!(again["children"][1]["spec"]["cidr"], "10.0.0.192/26");
}

#[tokio::test]
async fn split_refusals_name_the_field_and_value() {
    let app = App::with_pool(AppConfig::default()).await;
    let split = |body| app.post("/v1/pool-splits", body);
    refused(
        split(json!({"parts": 3, "name": "pool-a"})).await,
        400,
        "invalid_value",
        "not a valid power of 2: 3",
    );
    refused(
        split(json!({"parts": 8, "name": "pool-a"})).await,
        400,
        "pool_smaller_than_block",
        "into 8 parts makes /27 pools, smaller than its blockSize 26",
    );
    refused(
        split(json!({"parts": 2, "cidr": "10.9.0.0/24"})).await,
        404,
        "pool_not_found",
        "unable to find IP pool covering the specified CIDR 10.9.0.0/24",
    );
    refused(
        split(json!({"parts": 2, "name": "nope"})).await,
        404,
        "pool_not_found",
        "unable to find IP pool with name nope",
    );
    refused(
        split(json!({"parts": 2})).await,
        400,
        "missing_value",
        "no name or CIDR provided",
    );
    refused(
        split(json!({"parts": 2, "name": "pool-a", "cidr": "10.0.0.0/24"})).await,
        400,
        "invalid_value",
        "not both (name \"pool-a\", cidr 10.0.0.0/24)",
    );
    refused(
        split(json!({"parts": 2, "name": "Pool_A"})).await,
        400,
        "invalid_value",
        "Pool_A",
    );
    let (_, pools) = app.get("/v1/pools").await;
    assert_eq!(
        pools.as_array().unwrap().len(),
        1,
        "nothing changed: {pools}"
    );
}
