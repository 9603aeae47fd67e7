//! etcd's KV service over gRPC: the channel to a cluster and the four
//! calls the backend makes (a read of one key or a prefix, a count, a put,
//! a transaction).
//!
//! Written here rather than taken from the etcd-client crate because that
//! crate compiles etcd's protocol files with protoc in its build script, so
//! that building anything which linked ipam-store needed Debian's
//! protobuf-compiler and libprotobuf-dev. The messages and the gRPC stub
//! are generated from `ipam-store/proto/etcd_kv.proto` by `cargo xtask gen`
//! (a protobuf compiler written in Rust) and checked in as `rpc.rs`; this
//! module adds what a stub lacks: endpoints, timeouts, keep-alive, and
//! etcd's require-leader header.

use std::time::Duration;

use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};

use super::rpc::kv_client::KvClient;
use super::rpc::{KeyValue, PutRequest, RangeRequest, RangeResponse, TxnRequest, TxnResponse};

/// Calico's Go client accepts responses up to 2 GiB (clientv3's default
/// MaxCallRecvMsgSize); tonic's default of 4 MiB would fail a list of a
/// few thousand busy blocks.
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

/// The metadata etcd reads to refuse a request when its member has lost
/// the cluster's leader (clientv3's `WithRequireLeader`), so that a member
/// cut off from its cluster fails fast ("no leader") instead of holding the
/// request until it times out.
const REQUIRE_LEADER: (&str, &str) = ("hasleader", "true");

/// How to reach etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// The longest any one call (connecting included) may take before it
    /// fails as unavailable.
    pub timeout: Duration,
    /// How often an idle connection is probed, so that a dead etcd is
    /// noticed before the next call waits on it (Calico: 30 s).
    pub keep_alive_interval: Duration,
    /// How long a probe may go unanswered (Calico: 10 s).
    pub keep_alive_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            timeout: Duration::from_secs(5),
            keep_alive_interval: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a list of endpoints cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// No endpoint was given.
    #[error("no etcd endpoint given")]
    Empty,
    /// An endpoint is not an `http://HOST:PORT` URL.
    #[error("etcd endpoint {endpoint:?}: {problem}")]
    Invalid {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// Why a call did not complete.
#[derive(Debug)]
pub enum CallError {
    /// No answer within the call's time limit.
    TimedOut(Duration),
    /// etcd, or the transport to it, answered with a gRPC status.
    Status(tonic::Status),
}

/// A client of one etcd cluster's KV service. Cheap to clone; connections
/// are made on first use and made again after a failure, so an etcd that
/// is down shows as a failed call, not here.
#[derive(Debug, Clone)]
pub struct EtcdKv {
    client: KvClient<Channel>,
    timeout: Duration,
}

impl EtcdKv {
    /// A client of the cluster at `endpoints` (`http://host:2379`; a bare
    /// `host:port` means http). With several endpoints, calls are spread
    /// over those that answer. Must be called within a tokio runtime.
    pub fn new(endpoints: &[String], options: &EtcdOptions) -> Result<EtcdKv, EndpointError> {
        let endpoints = endpoints
            .iter()
            .map(|endpoint| parse_endpoint(endpoint, options))
            .collect::<Result<Vec<_>, _>>()?;
        let channel = match endpoints.as_slice() {
            [] => return Err(EndpointError::Empty),
            [one] => one.connect_lazy(),
            _ => Channel::balance_list(endpoints.into_iter()),
        };
        Ok(EtcdKv {
            client: KvClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES),
            timeout: options.timeout,
        })
    }

    /// The value of `key`, if it exists.
    pub async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, CallError> {
        let response = self
            .range(RangeRequest {
                key: key.to_vec(),
                ..RangeRequest::default()
            })
            .await?;
        Ok(response.kvs.into_iter().next())
    }

    /// Every key that starts with `prefix`, in key order.
    pub async fn get_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, CallError> {
        let response = self
            .range(RangeRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                ..RangeRequest::default()
            })
            .await?;
        Ok(response.kvs)
    }

    /// Writes `value` under `key`, unconditionally.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), CallError> {
        let request = PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
        };
        self.bounded(self.client.clone().put(with_leader(request)))
            .await?;
        Ok(())
    }

    /// Runs `txn` atomically.
    pub async fn txn(&self, txn: TxnRequest) -> Result<TxnResponse, CallError> {
        self.bounded(self.client.clone().txn(with_leader(txn)))
            .await
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, CallError> {
        self.bounded(self.client.clone().range(with_leader(request)))
            .await
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(CallError::Status(status)),
            Err(_) => Err(CallError::TimedOut(self.timeout)),
        }
    }
}

fn parse_endpoint(endpoint: &str, options: &EtcdOptions) -> Result<Endpoint, EndpointError> {
    let invalid = |problem: String| EndpointError::Invalid {
        endpoint: endpoint.to_string(),
        problem,
    };
    let url = if endpoint.starts_with("https://") {
        return Err(invalid(
            "https is not supported; etcd must be reached over http".into(),
        ));
    } else if endpoint.starts_with("http://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let parsed = Endpoint::from_shared(url).map_err(|e| invalid(e.to_string()))?;
    if parsed.uri().host().is_none() {
        return Err(invalid("names no host".into()));
    }
    Ok(parsed
        .timeout(options.timeout)
        .connect_timeout(options.timeout)
        .http2_keep_alive_interval(options.keep_alive_interval)
        .keep_alive_timeout(options.keep_alive_timeout)
        .keep_alive_while_idle(true))
}

fn with_leader<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        REQUIRE_LEADER.0,
        AsciiMetadataValue::from_static(REQUIRE_LEADER.1),
    );
    request
}

/// The end of the range of keys that start with `prefix`: the prefix with
/// its last byte below 0xff raised by one and what follows it dropped
/// (etcd's `GetPrefixRangeEnd`); `\0` — every key — when every byte is 0xff.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_ends_just_past_the_prefix() {
        assert_eq!(prefix_end(b"/calico/"), b"/calico0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[tokio::test]
    async fn endpoints_are_http_urls_or_host_and_port() {
        let options = EtcdOptions::default();
        assert!(EtcdKv::new(&["http://127.0.0.1:2379".into()], &options).is_ok());
        assert!(EtcdKv::new(&["127.0.0.1:2379".into()], &options).is_ok());
        assert!(matches!(
            EtcdKv::new(&[], &options),
            Err(EndpointError::Empty)
        ));
        for bad in ["https://etcd:2379", "http://", "http://exa mple:1"] {
            match EtcdKv::new(&[bad.to_string()], &options) {
                Err(EndpointError::Invalid { endpoint, .. }) => assert_eq!(endpoint, bad),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
