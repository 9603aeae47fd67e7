//! A typed client of ipam-server's `/v1` API, for the CNI plugin in server
//! mode and for ipamctl. It speaks HTTP/1.1 over TCP (`http://HOST:PORT`)
//! or a unix socket (`unix:PATH`), sends the bearer token when one is set,
//! and bounds every call by a deadline: a CNI plugin must never hang, and
//! an operator's command must say when the server does not answer.
//!
//! One connection per call: the plugin makes one or two calls per run and
//! the CLI a handful, so a pool would only keep sockets open for nothing.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use ipam_api::labels::{NodeLabelsBody, NodeLabelsResponse};
use ipam_api::{
    AddressInfo, AffinityListItem, AssignBody, AssignIpBody, AssignIpResponse, AssignResponse,
    BlockDetail, CheckResponse, ConfigBody, ErrorBody, ErrorCode, HandleAddresses, PoolBody,
    PoolSpecBody, ReleaseBody, ReleaseResponse, ReservationBody, SplitBody, SplitResponse,
    UsageResponse,
};
pub use ipam_api::{Endpoint, EndpointError};
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// Everything a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server address does not parse.
    #[error(transparent)]
    InvalidEndpoint(#[from] EndpointError),
    /// The token file cannot be read.
    #[error("token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The token file holds no token.
    #[error("token file {path} is empty")]
    EmptyToken {
        /// The file.
        path: PathBuf,
    },
    /// No connection could be made.
    #[error("cannot reach ipam-server at {endpoint}: {source}")]
    Unreachable {
        /// Where.
        endpoint: Endpoint,
        /// Why.
        source: std::io::Error,
    },
    /// The connection broke or spoke something other than HTTP/1.1.
    #[error("ipam-server at {endpoint} broke off the exchange: {source}")]
    Protocol {
        /// Where.
        endpoint: Endpoint,
        /// Why.
        source: hyper::Error,
    },
    /// No full answer within the deadline.
    #[error("ipam-server at {endpoint} did not answer within {timeout:?}")]
    Timeout {
        /// Where.
        endpoint: Endpoint,
        /// The deadline.
        timeout: Duration,
    },
    /// The server answered with an error.
    #[error("ipam-server refused {method} {path} ({status}, {code}): {message}")]
    Api {
        /// The request's method.
        method: Method,
        /// The request's path.
        path: String,
        /// The HTTP status.
        status: StatusCode,
        /// The API's error code (`pool_exhausted`, `datastore_unavailable` ...).
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The answer is not the JSON the API documents.
    #[error("ipam-server's answer to {path} is not the documented JSON: {reason}")]
    Decode {
        /// The request's path.
        path: String,
        /// What did not parse.
        reason: String,
    },
}

impl ClientError {
    /// True when trying again later may succeed: the server or its
    /// datastore could not be reached or did not answer in time (CNI's
    /// error 11, "try again later").
    pub fn is_unavailable(&self) -> bool {
        match self {
            ClientError::Unreachable { .. }
            | ClientError::Protocol { .. }
            | ClientError::Timeout { .. } => true,
            ClientError::Api { status, .. } => *status == StatusCode::SERVICE_UNAVAILABLE,
            _ => false,
        }
    }

    /// The API's error code when the server answered with one.
    pub fn api_code(&self) -> Option<&ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A client of one server.
#[derive(Clone)]
pub struct Client {
    endpoint: Endpoint,
    token: Option<String>,
    timeout: Duration,
}

// The token stays out of logs and panics.
impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Reads a bearer token from a file: surrounding white space is dropped,
/// an empty file is an error (it would silently send no token).
pub fn read_token_file(path: &Path) -> Result<String, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|source| ClientError::TokenFile {
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ClientError::EmptyToken {
            path: path.to_path_buf(),
        });
    }
    Ok(token.to_string())
}

impl Client {
    /// A client whose every call ends within `timeout`.
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Client {
        Client {
            endpoint,
            token: None,
            timeout,
        }
    }

    /// Sends `token` as a bearer token.
    pub fn with_token(mut self, token: String) -> Client {
        self.token = Some(token);
        self
    }

    /// Where it connects.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// `POST /v1/assign`.
    pub async fn assign(&self, body: &AssignBody) -> Result<AssignResponse, ClientError> {
        self.call(Method::POST, "/v1/assign".into(), Some(body))
            .await
    }

    /// `POST /v1/assign-ip`.
    pub async fn assign_ip(&self, body: &AssignIpBody) -> Result<AssignIpResponse, ClientError> {
        self.call(Method::POST, "/v1/assign-ip".into(), Some(body))
            .await
    }

    /// `POST /v1/release`.
    pub async fn release(&self, body: &ReleaseBody) -> Result<ReleaseResponse, ClientError> {
        self.call(Method::POST, "/v1/release".into(), Some(body))
            .await
    }

    /// `DELETE /v1/handles/{handle}`: an unknown handle releases nothing.
    pub async fn release_handle(&self, handle: &str) -> Result<ReleaseResponse, ClientError> {
        let path = format!("/v1/handles/{}", encode(handle));
        self.call::<(), _>(Method::DELETE, path, None).await
    }

    /// `GET /v1/handles/{handle}`: `None` when the handle holds nothing.
    pub async fn handle_addresses(
        &self,
        handle: &str,
    ) -> Result<Option<HandleAddresses>, ClientError> {
        let path = format!("/v1/handles/{}", encode(handle));
        not_found_is_none(self.call::<(), _>(Method::GET, path, None).await)
    }

    /// `GET /v1/handles?node=&prefix=`: the handles recorded for a node
    /// whose id starts with `prefix`.
    pub async fn handles_on_node(
        &self,
        node: &str,
        prefix: &str,
    ) -> Result<Vec<HandleAddresses>, ClientError> {
        let path = format!(
            "/v1/handles?node={}&prefix={}",
            encode(node),
            encode(prefix)
        );
        self.call::<(), _>(Method::GET, path, None).await
    }

    /// `GET /v1/addresses/{address}`.
    pub async fn address(&self, address: IpAddr) -> Result<AddressInfo, ClientError> {
        self.call::<(), _>(Method::GET, format!("/v1/addresses/{address}"), None)
            .await
    }

    /// `GET /v1/pools`.
    pub async fn pools(&self) -> Result<Vec<PoolBody>, ClientError> {
        self.call::<(), _>(Method::GET, "/v1/pools".into(), None)
            .await
    }

    /// `POST /v1/pools`.
    pub async fn create_pool(&self, pool: &PoolBody) -> Result<PoolBody, ClientError> {
        self.call(Method::POST, "/v1/pools".into(), Some(pool))
            .await
    }

    /// `PUT /v1/pools/{name}`.
    pub async fn update_pool(
        &self,
        name: &str,
        spec: &PoolSpecBody,
    ) -> Result<PoolBody, ClientError> {
        let path = format!("/v1/pools/{}", encode(name));
        self.call(Method::PUT, path, Some(spec)).await
    }

    /// `DELETE /v1/pools/{name}`.
    pub async fn delete_pool(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/v1/pools/{}", encode(name));
        self.exchange::<()>(Method::DELETE, path, None).await?;
        Ok(())
    }

    /// `GET /v1/reservations`.
    pub async fn reservations(&self) -> Result<Vec<ReservationBody>, ClientError> {
        self.call::<(), _>(Method::GET, "/v1/reservations".into(), None)
            .await
    }

    /// `GET /v1/reservations/{name}`: `None` when there is none.
    pub async fn reservation(&self, name: &str) -> Result<Option<ReservationBody>, ClientError> {
        let path = format!("/v1/reservations/{}", encode(name));
        not_found_is_none(self.call::<(), _>(Method::GET, path, None).await)
    }

    /// `POST /v1/reservations`.
    pub async fn create_reservation(
        &self,
        reservation: &ReservationBody,
    ) -> Result<ReservationBody, ClientError> {
        self.call(Method::POST, "/v1/reservations".into(), Some(reservation))
            .await
    }

    /// `DELETE /v1/reservations/{name}`.
    pub async fn delete_reservation(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/v1/reservations/{}", encode(name));
        self.exchange::<()>(Method::DELETE, path, None).await?;
        Ok(())
    }

    /// `POST /v1/pool-splits`.
    pub async fn split_pool(&self, body: &SplitBody) -> Result<SplitResponse, ClientError> {
        self.call(Method::POST, "/v1/pool-splits".into(), Some(body))
            .await
    }

    /// `GET /v1/config`.
    pub async fn config(&self) -> Result<ConfigBody, ClientError> {
        self.call::<(), _>(Method::GET, "/v1/config".into(), None)
            .await
    }

    /// `PUT /v1/config`.
    pub async fn set_config(&self, config: &ConfigBody) -> Result<ConfigBody, ClientError> {
        self.call(Method::PUT, "/v1/config".into(), Some(config))
            .await
    }

    /// `GET /v1/usage`.
    pub async fn usage(&self) -> Result<UsageResponse, ClientError> {
        self.call::<(), _>(Method::GET, "/v1/usage".into(), None)
            .await
    }

    /// `GET /v1/blocks?cidr=`: `None` when there is no such block.
    pub async fn block(&self, cidr: IpNet) -> Result<Option<BlockDetail>, ClientError> {
        let path = format!("/v1/blocks?cidr={}", encode(&cidr.to_string()));
        not_found_is_none(self.call::<(), _>(Method::GET, path, None).await)
    }

    /// `GET /v1/affinities`.
    pub async fn affinities(&self) -> Result<Vec<AffinityListItem>, ClientError> {
        self.call::<(), _>(Method::GET, "/v1/affinities".into(), None)
            .await
    }

    /// `GET /v1/check`.
    pub async fn check(&self) -> Result<CheckResponse, ClientError> {
        self.call::<(), _>(Method::GET, "/v1/check".into(), None)
            .await
    }

    /// `GET /v1/nodes/{node}/labels`.
    pub async fn node_labels(&self, node: &str) -> Result<NodeLabelsResponse, ClientError> {
        let path = format!("/v1/nodes/{}/labels", encode(node));
        self.call::<(), _>(Method::GET, path, None).await
    }

    /// `PUT /v1/nodes/{node}/labels`.
    pub async fn set_node_labels(
        &self,
        node: &str,
        body: &NodeLabelsBody,
    ) -> Result<NodeLabelsResponse, ClientError> {
        let path = format!("/v1/nodes/{}/labels", encode(node));
        self.call(Method::PUT, path, Some(body)).await
    }

    /// `GET /readyz`: the server answers and its datastore is reachable.
    pub async fn ready(&self) -> Result<(), ClientError> {
        self.exchange::<()>(Method::GET, "/readyz".into(), None)
            .await?;
        Ok(())
    }

    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: String,
        body: Option<&B>,
    ) -> Result<R, ClientError> {
        let bytes = self.exchange(method, path.clone(), body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            path,
            reason: e.to_string(),
        })
    }

    // One request, bounded by the deadline from connect to the last byte;
    // a non-2xx answer becomes `ClientError::Api`.
    async fn exchange<B: Serialize>(
        &self,
        method: Method,
        path: String,
        body: Option<&B>,
    ) -> Result<Bytes, ClientError> {
        let payload = match body {
            Some(body) => serde_json::to_vec(body).map_err(|e| ClientError::Decode {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            None => Vec::new(),
        };
        let host = match &self.endpoint {
            Endpoint::Tcp(authority) => authority.as_str(),
            Endpoint::Unix(_) => "localhost",
        };
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path.as_str())
            .header(HOST, host);
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request =
            request
                .body(Full::new(Bytes::from(payload)))
                .map_err(|e| ClientError::Decode {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
        let work = async {
            match &self.endpoint {
                Endpoint::Tcp(authority) => {
                    let stream = TcpStream::connect(authority.as_str())
                        .await
                        .map_err(|source| self.unreachable(source))?;
                    // Small requests: do not wait for Nagle.
                    stream
                        .set_nodelay(true)
                        .map_err(|source| self.unreachable(source))?;
                    self.send(stream, request).await
                }
                Endpoint::Unix(socket) => {
                    let stream = UnixStream::connect(socket)
                        .await
                        .map_err(|source| self.unreachable(source))?;
                    self.send(stream, request).await
                }
            }
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| ClientError::Timeout {
                endpoint: self.endpoint.clone(),
                timeout: self.timeout,
            })??;
        if status.is_success() {
            return Ok(bytes);
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(error) => (error.code, error.message),
            Err(_) => (
                ErrorCode::Other("unknown".to_string()),
                String::from_utf8_lossy(&bytes).into_owned(),
            ),
        };
        Err(ClientError::Api {
            method,
            path,
            status,
            code,
            message,
        })
    }

    async fn send<S>(
        &self,
        stream: S,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let protocol = |source| ClientError::Protocol {
            endpoint: self.endpoint.clone(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(protocol)?;
        let endpoint = self.endpoint.clone();
        // Owns the sender: dropping it when the answer is in lets the
        // connection future finish.
        let exchange = async move {
            let protocol = |source| ClientError::Protocol {
                endpoint: endpoint.clone(),
                source,
            };
            let response = sender.send_request(request).await.map_err(protocol)?;
            let status = response.status();
            let bytes = match response.into_body().collect().await {
                Ok(body) => body.to_bytes(),
                Err(source) => return Err(protocol(source)),
            };
            Ok::<_, ClientError>((status, bytes))
        };
        let (answer, _) = tokio::join!(exchange, connection);
        answer
    }

    fn unreachable(&self, source: std::io::Error) -> ClientError {
        ClientError::Unreachable {
            endpoint: self.endpoint.clone(),
            source,
        }
    }
}

fn not_found_is_none<T>(result: Result<T, ClientError>) -> Result<Option<T>, ClientError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(ClientError::Api { status, .. }) if status == StatusCode::NOT_FOUND => Ok(None),
        Err(error) => Err(error),
    }
}

// Percent-encodes a path segment or query value: handle ids carry dots and
// dashes only in practice, but a node name or pool name is the operator's.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_unreserved_bytes_and_escapes_the_rest() {
        assert_eq!(encode("k8s-pod-network.abc_1~"), "k8s-pod-network.abc_1~");
        assert_eq!(encode("10.0.0.0/26"), "10.0.0.0%2F26");
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let client = Client::new(Endpoint::Tcp("h:1".into()), Duration::from_secs(1))
            .with_token("s3cret".into());
        assert!(!format!("{client:?}").contains("s3cret"));
    }

    #[test]
    fn token_files_are_trimmed_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  abc\n").unwrap();
        assert_eq!(read_token_file(&path).unwrap(), "abc");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            read_token_file(&path),
            Err(ClientError::EmptyToken { .. })
        ));
        assert!(matches!(
            read_token_file(&dir.path().join("missing")),
            Err(ClientError::TokenFile { .. })
        ));
    }
}
