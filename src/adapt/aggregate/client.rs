//! The edge side of Algorithm 1: pull the global link, compute a local update, upload it.
//!
//! The client speaks HTTP/1.1 over plain TCP (one connection per request: a round is a
//! couple of requests per minute, not a stream) and counts the bytes it writes to and reads
//! from its sockets, headers included, so the traffic of a round can be measured as it is on
//! the wire ([`AggregatorClient::wire_bytes`]).
//!
//! It is async (tokio); a thread of the engine calls it through `Runtime::block_on`.

use super::messages::{
    ErrorBody, ErrorCode, GlobalLink, PROTOCOL_VERSION, ParamVec, StateView, UpdateAccepted,
    UpdateRequest,
};
use super::tokens::Token;
use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid aggregator URL {url:?}: {message}")]
    InvalidUrl { url: String, message: String },
    #[error("connecting to the aggregator at {authority}: {source}")]
    Connect {
        authority: String,
        source: std::io::Error,
    },
    #[error("HTTP exchange with the aggregator: {0}")]
    Http(#[from] hyper::Error),
    #[error("the aggregator did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the aggregator refused the request ({status}, {}): {message}", code.map_or("unknown", ErrorCode::as_str))]
    Rejected {
        status: u16,
        code: Option<ErrorCode>,
        message: String,
    },
    #[error("unexpected answer from the aggregator: {0}")]
    BadResponse(String),
    #[error("local update value {index} is not finite; nothing was sent")]
    NonFinite { index: usize },
    #[error("local update has {got} values, the link has {expected} parameters; nothing was sent")]
    LengthMismatch { expected: usize, got: usize },
    #[error("computing the local update: {0}")]
    LocalUpdate(Box<dyn std::error::Error + Send + Sync>),
    #[error("link {link_id:?} did not reach round {round} within {waited:?}")]
    RoundWait {
        link_id: String,
        round: u64,
        waited: Duration,
    },
}

impl ClientError {
    /// The server's error code, when the server refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Rejected { code, .. } => *code,
            _ => None,
        }
    }
}

/// Bytes a client has written to and read from the network, HTTP headers included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WireBytes {
    pub sent: u64,
    pub received: u64,
}

#[derive(Default, Debug)]
struct WireCounters {
    sent: AtomicU64,
    received: AtomicU64,
}

/// What an edge computed on its local samples for one round.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalUpdate {
    /// `theta_local - theta_global` (see [`UpdateRequest`]).
    pub delta: Vec<f32>,
    pub n_samples: Option<u64>,
}

/// An edge's connection settings to one aggregator.
#[derive(Clone, Debug)]
pub struct AggregatorClient {
    url: String,
    host: String,
    port: u16,
    prefix: String,
    edge_id: String,
    token: Token,
    timeout: Duration,
    wire: Arc<WireCounters>,
}

impl AggregatorClient {
    /// `url` is `http://HOST[:PORT][/PREFIX]`.
    pub fn new(url: &str, edge_id: impl Into<String>, token: Token) -> Result<Self, ClientError> {
        let invalid = |message: &str| ClientError::InvalidUrl {
            url: url.to_string(),
            message: message.to_string(),
        };
        let rest = if let Some(r) = url.strip_prefix("http://") {
            r
        } else if url.starts_with("https://") {
            return Err(invalid(
                "this client speaks plain HTTP; reach a TLS endpoint through a local proxy or tunnel",
            ));
        } else {
            return Err(invalid("expected http://HOST[:PORT][/PREFIX]"));
        };
        let (authority, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, tail) = v6
                .split_once(']')
                .ok_or_else(|| invalid("unclosed '[' in host"))?;
            (h.to_string(), tail.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let port = match port {
            Some(p) => p
                .parse()
                .map_err(|_| invalid("the port is not a number from 1 to 65535"))?,
            None => 80,
        };
        Ok(Self {
            url: url.to_string(),
            host,
            port,
            prefix: prefix.trim_end_matches('/').to_string(),
            edge_id: edge_id.into(),
            token,
            timeout: Duration::from_secs(30),
            wire: Arc::default(),
        })
    }

    /// Limit for one whole request (connect, send, receive).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn edge_id(&self) -> &str {
        &self.edge_id
    }

    /// Bytes this client (and its clones) sent and received so far.
    pub fn wire_bytes(&self) -> WireBytes {
        WireBytes {
            sent: self.wire.sent.load(Ordering::Relaxed),
            received: self.wire.received.load(Ordering::Relaxed),
        }
    }

    /// Fetches the global link and its open round, checking that the weights fit the spec.
    pub async fn pull(&self, link_id: &str) -> Result<GlobalLink, ClientError> {
        let path = format!("/v1/links/{}", percent_encode(link_id));
        let body = self.request(Method::GET, &path, None).await?;
        check_global(link_id, &body)
    }

    /// Uploads `update` (a delta, see [`UpdateRequest`]) for `round` of `link_id`. Non-finite
    /// values are refused here, before anything is sent.
    pub async fn push(
        &self,
        link_id: &str,
        round: u64,
        update: &[f32],
        n_samples: Option<u64>,
    ) -> Result<UpdateAccepted, ClientError> {
        self.push_with(link_id, None, round, update, n_samples)
            .await
    }

    /// Like [`push`](Self::push) for the link just pulled: also checks the length and lets the
    /// server verify the spec fingerprint.
    pub async fn push_for(
        &self,
        global: &GlobalLink,
        update: &LocalUpdate,
    ) -> Result<UpdateAccepted, ClientError> {
        if update.delta.len() != global.params.0.len() {
            return Err(ClientError::LengthMismatch {
                expected: global.params.0.len(),
                got: update.delta.len(),
            });
        }
        self.push_with(
            &global.spec.link_id,
            Some(global.fingerprint.clone()),
            global.round,
            &update.delta,
            update.n_samples,
        )
        .await
    }

    async fn push_with(
        &self,
        link_id: &str,
        fingerprint: Option<String>,
        round: u64,
        update: &[f32],
        n_samples: Option<u64>,
    ) -> Result<UpdateAccepted, ClientError> {
        if let Some(index) = update.iter().position(|v| !v.is_finite()) {
            return Err(ClientError::NonFinite { index });
        }
        let req = UpdateRequest {
            version: PROTOCOL_VERSION,
            edge_id: self.edge_id.clone(),
            fingerprint,
            round,
            n_samples,
            delta: ParamVec(update.to_vec()),
        };
        let body = serde_json::to_vec(&req)
            .map_err(|e| ClientError::BadResponse(format!("encoding the update: {e}")))?;
        let path = format!("/v1/links/{}/updates", percent_encode(link_id));
        let answer = self.request(Method::POST, &path, Some(body)).await?;
        decode(&answer)
    }

    /// The server's rounds, pending edges and weight hashes.
    pub async fn state(&self) -> Result<StateView, ClientError> {
        decode(&self.request(Method::GET, "/v1/state", None).await?)
    }

    /// Pulls until the link's open round is at least `round` (the previous round closed),
    /// polling every `poll` for at most `max_wait`.
    pub async fn wait_for_round(
        &self,
        link_id: &str,
        round: u64,
        poll: Duration,
        max_wait: Duration,
    ) -> Result<GlobalLink, ClientError> {
        let start = Instant::now();
        loop {
            let g = self.pull(link_id).await?;
            if g.round >= round {
                return Ok(g);
            }
            if start.elapsed() >= max_wait {
                return Err(ClientError::RoundWait {
                    link_id: link_id.to_string(),
                    round,
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(poll).await;
        }
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        match tokio::time::timeout(self.timeout, self.exchange(method, path, body)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout(self.timeout)),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let authority = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| ClientError::Connect {
                authority: authority.clone(),
                source,
            })?;
        // Small requests must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(CountingStream {
            inner: stream,
            wire: self.wire.clone(),
        });
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        let conn = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(header::HOST, authority)
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.token.secret()),
            )
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::BadResponse(format!("building the request: {e}")))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        drop(sender);
        // The connection ends once the sender is gone; its error no longer matters.
        let _ = conn.await;
        if status == StatusCode::OK {
            return Ok(bytes);
        }
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => ClientError::Rejected {
                status: status.as_u16(),
                code: Some(e.error),
                message: e.message,
            },
            Err(_) => ClientError::Rejected {
                status: status.as_u16(),
                code: None,
                message: String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned(),
            },
        })
    }
}

/// Decodes the body of `GET /v1/links/{link_id}` and checks it: this protocol version, the
/// link asked for, a fingerprint that matches the spec and weights that fit it.
pub fn check_global(link_id: &str, body: &[u8]) -> Result<GlobalLink, ClientError> {
    let g: GlobalLink = decode(body)?;
    if g.version != PROTOCOL_VERSION {
        return Err(ClientError::BadResponse(format!(
            "message version {}",
            g.version
        )));
    }
    if let Err(e) = g.spec.validate() {
        return Err(ClientError::BadResponse(format!("global link: {e}")));
    }
    if g.spec.link_id != link_id
        || g.fingerprint != g.spec.fingerprint()
        || g.params.0.len() != g.spec.num_params()
    {
        return Err(ClientError::BadResponse(format!(
            "global link {:?} is inconsistent (asked for {link_id:?}, {} weights for {} parameters)",
            g.spec.link_id,
            g.params.0.len(),
            g.spec.num_params()
        )));
    }
    Ok(g)
}

/// One round of Algorithm 1 on an edge: pull the global link, compute the local update from
/// it with `local_update`, upload it. Returns the pulled link and the server's answer.
pub async fn run_round<F, E>(
    client: &AggregatorClient,
    link_id: &str,
    local_update: F,
) -> Result<(GlobalLink, UpdateAccepted), ClientError>
where
    F: FnOnce(&GlobalLink) -> Result<LocalUpdate, E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let global = client.pull(link_id).await?;
    let update = local_update(&global).map_err(|e| ClientError::LocalUpdate(e.into()))?;
    let accepted = client.push_for(&global, &update).await?;
    Ok((global, accepted))
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body)
        .map_err(|e| ClientError::BadResponse(format!("invalid JSON body: {e}")))
}

/// Percent-encodes everything but RFC 3986 unreserved characters (link ids contain `->`).
fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A socket that counts the bytes passing through it.
struct CountingStream<T> {
    inner: T,
    wire: Arc<WireCounters>,
}

impl<T: AsyncRead + Unpin> AsyncRead for CountingStream<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        self.wire.received.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountingStream<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.wire.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Token {
        Token::new("0123456789abcdef")
    }

    #[test]
    fn parses_urls_and_refuses_what_it_cannot_speak() {
        let c = AggregatorClient::new("http://127.0.0.1:8080/agg/", "e", token()).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.prefix.as_str()),
            ("127.0.0.1", 8080, "/agg")
        );
        let c = AggregatorClient::new("http://[::1]:9", "e", token()).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 9));
        assert_eq!(
            AggregatorClient::new("http://cloud", "e", token())
                .unwrap()
                .port,
            80
        );
        assert!(
            AggregatorClient::new("https://cloud", "e", token())
                .unwrap_err()
                .to_string()
                .contains("plain HTTP")
        );
        assert!(AggregatorClient::new("cloud:80", "e", token()).is_err());
        assert!(AggregatorClient::new("http://cloud:x", "e", token()).is_err());
        assert!(
            !format!("{c:?}").contains("0123456789abcdef"),
            "the token must not print"
        );
    }

    #[test]
    fn link_ids_are_percent_encoded() {
        assert_eq!(percent_encode("centernet->movenet"), "centernet-%3Emovenet");
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
    }
}
