//! IP reservations through `/v1/reservations`: created, listed, read and
//! deleted; refused input named and without effect; honoured by
//! assignment; one winner among concurrent creates of a name.

use super::*;

fn reservation(name: &str, cidrs: &[&str]) -> Value {
    json!({"name": name, "spec": {"reservedCIDRs": cidrs}})
}

#[tokio::test]
async fn reservations_are_created_listed_read_and_deleted() {
    let app = App::with_pool(AppConfig::default()).await;
    let (status, listed) = app.get("/v1/reservations").await;
    assert_eq!((status, listed), (200, json!([])));
    // Stored as Calico's IPAM reads the entries: a bare address as its
    // /32 or /128, a CIDR with host bits as given.
    let (status, created) = app
        .post(
            "/v1/reservations",
            reservation("gateways", &["10.0.0.1", "10.0.8.5/24", "FD00::1"]),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let stored = reservation("gateways", &["10.0.0.1/32", "10.0.8.5/24", "fd00::1/128"]);
    assert_eq!(created, stored);
    let (status, empty) = app
        .post("/v1/reservations", reservation("another", &[]))
        .await;
    assert_eq!((status, empty), (201, reservation("another", &[])));
    let (_, listed) = app.get("/v1/reservations").await;
    assert_eq!(
        listed,
        json!([reservation("another", &[]), stored.clone()]),
        "by name"
    );
    assert_eq!(app.get("/v1/reservations/gateways").await, (200, stored));
    refused(
        app.get("/v1/reservations/none").await,
        404,
        "reservation_not_found",
        "none",
    );
    let deleted = app
        .call(Method::DELETE, "/v1/reservations/gateways", None)
        .await;
    assert_eq!(deleted.0, 204, "{}", deleted.1);
    refused(
        app.call(Method::DELETE, "/v1/reservations/gateways", None)
            .await,
        404,
        "not_found",
        "IPReservation gateways",
    );
    let (_, listed) = app.get("/v1/reservations").await;
    assert_eq!(listed, json!([reservation("another", &[])]));
}

#[tokio::test]
async fn a_refused_reservation_names_the_field_and_value_and_changes_nothing() {
    let app = App::with_pool(AppConfig::default()).await;
    let (status, _) = app
        .post("/v1/reservations", reservation("kept", &["10.0.0.7"]))
        .await;
    assert_eq!(status, 201);
    let cases = [
        (
            reservation("r", &["10.0.0.0/24", "10.0.0.300/32"]),
            "invalid_cidr",
            "spec.reservedCIDRs[1]: \"10.0.0.300/32\" is neither a CIDR nor an IP address",
        ),
        (
            reservation("r", &["fd00::/129"]),
            "invalid_cidr",
            "spec.reservedCIDRs[0]: \"fd00::/129\"",
        ),
        (
            reservation("r", &["10.0.0.1", "10.0.0.1/32"]),
            "invalid_value",
            "spec.reservedCIDRs[1]: \"10.0.0.1/32\" is 10.0.0.1/32, which reservedCIDRs[0] already lists",
        ),
        (
            reservation("Bad_Name", &["10.0.0.1"]),
            "invalid_value",
            "name: \"Bad_Name\" is not a Kubernetes object name",
        ),
        (
            reservation("", &["10.0.0.1"]),
            "missing_value",
            "name must not be empty",
        ),
        (
            json!({"name": "r", "spec": {"reservedCidrs": ["10.0.0.1"]}}),
            "invalid_body",
            "reservedCidrs",
        ),
        (
            json!({"name": "r", "spec": {"reservedCIDRs": "10.0.0.1"}}),
            "invalid_body",
            "reservedCIDRs",
        ),
    ];
    for (body, code, says) in cases {
        refused(app.post("/v1/reservations", body).await, 400, code, says);
    }
    let many: Vec<String> = (0..1025)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    refused(
        app.post(
            "/v1/reservations",
            json!({"name": "r", "spec": {"reservedCIDRs": many}}),
        )
        .await,
        400,
        "invalid_value",
        "spec.reservedCIDRs: 1025 entries, at most 1024",
    );
    refused(
        app.post("/v1/reservations", reservation("kept", &["10.0.0.9"]))
            .await,
        409,
        "already_exists",
        "IPReservation kept",
    );
    refused(
        app.get("/v1/reservations/Bad_Name").await,
        400,
        "invalid_value",
        "Bad_Name",
    );
    let (_, listed) = app.get("/v1/reservations").await;
    assert_eq!(
        listed,
        json!([reservation("kept", &["10.0.0.7/32"])]),
        "nothing refused was stored, and the name taken kept its entries"
    );
}

fn addresses(answer: &Value) -> Vec<std::net::IpAddr> {
    answer["ipv4"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let net: ipnet::IpNet = a.as_str().unwrap().parse().unwrap();
            net.addr()
        })
        .collect()
}

#[tokio::test]
async fn reserved_addresses_are_never_handed_out_until_the_reservation_goes() {
    let app = App::with_pool(AppConfig::default()).await;
    // Host bits set: reserves all of 10.0.0.0/25, as Calico's IPAM reads
    // it (ParseCIDROrIP), and one address of the other half.
    let (status, _) = app
        .post(
            "/v1/reservations",
            reservation("low-half", &["10.0.0.77/25", "10.0.0.200"]),
        )
        .await;
    assert_eq!(status, 201);
    let got = app.assign("h1", "n", 127).await;
    let got = addresses(&got);
    let lower: ipnet::IpNet = "10.0.0.0/25".parse().unwrap();
    let gateway: std::net::IpAddr = "10.0.0.200".parse().unwrap();
    assert_eq!(got.len(), 127);
    assert!(
        got.iter().all(|a| !lower.contains(a) && *a != gateway),
        "{got:?}"
    );
    refused(
        app.post(
            "/v1/assign",
            json!({"handle": "h2", "node": "n", "ipv4": 1}),
        )
        .await,
        422,
        "pool_exhausted",
        "",
    );
    let (status, _) = app
        .call(Method::DELETE, "/v1/reservations/low-half", None)
        .await;
    assert_eq!(status, 204);
    let more = addresses(&app.assign("h2", "n", 1).await);
    assert_eq!(more.len(), 1);
    assert!(lower.contains(&more[0]) || more[0] == gateway, "{more:?}");
}

#[tokio::test]
async fn of_concurrent_creates_of_one_name_exactly_one_wins() {
    let app = Arc::new(App::with_pool(AppConfig::default()).await);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let cidr = format!("10.0.{i}.0/24");
                let answer = app
                    .post("/v1/reservations", reservation("one", &[cidr.as_str()]))
                    .await;
                (cidr, answer)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (cidr, (status, body)) = task.await.unwrap();
        match status {
            201 => winners.push(cidr),
            409 => assert_eq!(body["code"], "already_exists", "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let (_, stored) = app.get("/v1/reservations/one").await;
    assert_eq!(stored, reservation("one", &[winners[0].as_str()]));
}
