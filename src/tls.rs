//! Serving an axum [`Router`] over rustls with SPIFFE client certificates, and a reqwest client
//! that presents the workload's SVID and authorizes the server's SPIFFE ID (feature `tls`).
//!
//! [`TlsServer::serve`] runs the accept loop: each connection's handshake is checked by
//! `portcullis-identity`'s verifiers (a presented certificate that does not verify fails the
//! handshake), then the peer's SPIFFE ID — and, with [`TlsServer::authenticate_peers`], the
//! [`Principal`] the auth chain makes of it — is worked out **once per connection** and put
//! into every request's extensions as a [`PeerIdentity`] and a [`Principal`]. An
//! [`AuthenticateLayer`](crate::http::AuthenticateLayer) or a
//! [`guard`](crate::http::guard) then uses that principal; a request on a connection without
//! a client certificate goes on to the chain's token methods with its `Authorization` header.
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::{Extension, Router, routing::get};
//! use portcullis::tls::identity::{
//!     ClientAuth, FileSource, IdentityFiles, PeerIds, SpiffeAuthenticator, crypto_provider,
//! };
//! use portcullis::tls::{PeerIdentity, TlsServer};
//! use portcullis::token::AuthChain;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let files = IdentityFiles::new()
//!     .svid("/run/spiffe/svid.pem", "/run/spiffe/svid_key.pem")
//!     .bundle("prod.example".parse()?, "/run/spiffe/bundle.pem");
//! let files = Arc::new(FileSource::load(files, crypto_provider())?);
//! let _watch = files.watch(std::time::Duration::from_secs(5));
//! let chain = Arc::new(AuthChain::new(vec![Arc::new(
//!     SpiffeAuthenticator::new().group("spiffe://prod.example/ci/*", "ci")?,
//! )]));
//! let app = Router::new().route(
//!     "/whoami",
//!     get(|Extension(peer): Extension<PeerIdentity>| async move { peer.spiffe_id().to_string() }),
//! );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
//! TlsServer::from_source(files.source(), ClientAuth::Optional, PeerIds::Any)?
//!     .authenticate_peers(chain)
//!     .serve(listener, app, portcullis::http::shutdown_signal())
//!     .await?;
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, header};
use axum::response::IntoResponse as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use portcullis_core::Principal;
use portcullis_identity::rustls::ServerConfig;
use portcullis_identity::rustls::pki_types::{CertificateDer, UnixTime};
use portcullis_identity::{
    ClientAuth, Forwarded, IdentitySource, LeafInfo, Material, PeerIds, SpiffeId, SvidUsage,
    TlsConfigError, XFCC_HEADER, XfccError, XfccPolicy, client_config, peer_svid, server_config,
    verify_svid,
};
use portcullis_token::{AuthError, Authenticator, VerifiedPeer};
use tokio::net::TcpListener;
use tower_service::Service as _;

use crate::gate::GateError;

/// Workload identity (crate `portcullis-identity`): SPIFFE IDs, X.509-SVID verification,
/// rotating SVID and bundle files, rustls verifiers, the peer authenticator and XFCC.
pub use portcullis_identity as identity;

/// The XFCC header's name, parsed once.
static XFCC: header::HeaderName = header::HeaderName::from_static(XFCC_HEADER);

/// How long a client may take to finish the TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The verified SPIFFE identity of the caller, in the extensions of every request that
/// arrived with one (`Extension<PeerIdentity>`): the mTLS peer itself, or the client a trusted
/// proxy forwarded in `x-forwarded-client-cert`. Cloning is a reference count.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerIdentity(Arc<PeerInner>);

#[derive(PartialEq, Eq)]
struct PeerInner {
    spiffe_id: SpiffeId,
    forwarded_by: Option<SpiffeId>,
}

impl PeerIdentity {
    /// A verified identity. Only code that verified it (a TLS verifier, a trusted proxy's
    /// header) should make one.
    pub fn new(spiffe_id: SpiffeId, forwarded_by: Option<SpiffeId>) -> Self {
        PeerIdentity(Arc::new(PeerInner {
            spiffe_id,
            forwarded_by,
        }))
    }

    /// The caller's SPIFFE ID.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.0.spiffe_id
    }

    /// The proxy that forwarded it, when it came in `x-forwarded-client-cert`.
    pub fn forwarded_by(&self) -> Option<&SpiffeId> {
        self.0.forwarded_by.as_ref()
    }
}

impl fmt::Debug for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerIdentity")
            .field("spiffe_id", &self.0.spiffe_id)
            .field("forwarded_by", &self.0.forwarded_by)
            .finish()
    }
}

/// Serves axum routers over TLS; see the [module docs](self).
#[derive(Clone)]
pub struct TlsServer {
    config: Arc<ServerConfig>,
    /// With [`TlsServer::from_source`]: whose rotations open connections are re-checked
    /// against.
    source: Option<Arc<IdentitySource>>,
    peers: Option<Arc<dyn Authenticator>>,
    xfcc: Arc<XfccPolicy>,
    handshake_timeout: Duration,
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer")
            .field("authenticates_peers", &self.peers.is_some())
            .field("xfcc", &self.xfcc)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Serves with a rustls configuration built elsewhere (it should come from
    /// [`portcullis_identity::server_config`] for SPIFFE client certificates).
    pub fn new(config: ServerConfig) -> Self {
        TlsServer {
            config: Arc::new(config),
            source: None,
            peers: None,
            xfcc: Arc::new(XfccPolicy::new()),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Serves the SVID of `source`, with client certificates per `client_auth`, admitting
    /// only the client IDs `accepted_clients` accepts. When `source`'s bundles rotate, each
    /// open connection's client chain is verified again against the new ones at its next
    /// request (refused with 401 if it no longer verifies), so a rotated-out CA loses its
    /// kept-alive connections too.
    ///
    /// # Errors
    ///
    /// A [`TlsConfigError`] (no SVID; client certificates without a bundle).
    pub fn from_source(
        source: &Arc<IdentitySource>,
        client_auth: ClientAuth,
        accepted_clients: PeerIds,
    ) -> Result<Self, TlsConfigError> {
        let mut server = TlsServer::new(server_config(source, client_auth, accepted_clients)?);
        server.source = Some(source.clone());
        Ok(server)
    }

    /// Makes a [`Principal`] of each verified peer with `chain`'s
    /// [`Authenticator::authenticate_peer`] (once per connection) and puts it in the requests'
    /// extensions. A chain that does not recognise the peer leaves the request to its token
    /// methods; one that refuses it answers every request on the connection with 401.
    #[must_use]
    pub fn authenticate_peers(mut self, chain: Arc<dyn Authenticator>) -> Self {
        self.peers = Some(chain);
        self
    }

    /// Believes `x-forwarded-client-cert` from the proxies `policy` names. From any other
    /// peer (and always without this) the header is refused with 401.
    #[must_use]
    pub fn forwarded_by(mut self, policy: XfccPolicy) -> Self {
        self.xfcc = Arc::new(policy);
        self
    }

    /// How long a client may take to finish its handshake (default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Accepts connections on `listener` until `shutdown` resolves, then lets requests in
    /// flight finish (connections are told to close after their current request).
    ///
    /// # Errors
    ///
    /// Never for a single bad connection (those are logged and dropped); an error only if the
    /// listener's address cannot be read.
    pub async fn serve<F>(
        self,
        listener: TcpListener,
        router: Router,
        shutdown: F,
    ) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let local = listener.local_addr()?;
        tracing::info!(address = %local, "serving TLS");
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.clone());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut connections = tokio::task::JoinSet::new();
        let shutdown = shutdown;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => {
                    let (stream, remote) = match accepted {
                        Ok(accepted) => accepted,
                        Err(err) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            tracing::warn!(error = %err, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let server = self.clone();
                    let acceptor = acceptor.clone();
                    let router = router.clone();
                    let stop = stop_rx.clone();
                    connections.spawn(async move {
                        server.connection(acceptor, stream, remote, router, stop).await;
                    });
                }
            }
        }
        let _ = stop_tx.send(true);
        while connections.join_next().await.is_some() {}
        Ok(())
    }

    async fn connection(
        self,
        acceptor: tokio_rustls::TlsAcceptor,
        stream: tokio::net::TcpStream,
        remote: SocketAddr,
        router: Router,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let tls = match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(err)) => {
                tracing::debug!(%remote, error = %err, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%remote, "TLS handshake timed out");
                return;
            }
        };
        let presented = tls.get_ref().1.peer_certificates();
        let peer = peer_svid(presented).ok();
        let mut state = ConnectionIdentity::establish(&self, peer, remote).await;
        if let (Some(source), Some(chain)) = (&self.source, presented) {
            state.recheck = Some(Recheck {
                verified: Mutex::new(source.current()),
                source: source.clone(),
                chain: chain.to_vec(),
            });
        }
        let state = Arc::new(state);
        let service = hyper::service::service_fn(move |request| {
            let state = state.clone();
            let router = router.clone();
            async move { Ok::<_, Infallible>(state.handle(router, request).await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            // One flat buffer per response: head and body in one TLS record, not two.
            .writev(false)
            // A client must send each request's head within hyper's default 30 s.
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(tls), service);
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%remote, error = %err, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|stopped| *stopped) => {}
        }
        connection.as_mut().graceful_shutdown();
        if let Err(err) = connection.await {
            tracing::debug!(%remote, error = %err, "connection ended with an error");
        }
    }
}

/// A connection's client chain and the identity material it was last verified against.
struct Recheck {
    source: Arc<IdentitySource>,
    chain: Vec<CertificateDer<'static>>,
    verified: Mutex<Arc<Material>>,
}

impl Recheck {
    /// Verifies the chain again if the material rotated since the last verification (one
    /// pointer comparison otherwise).
    fn still_verifies(&self) -> Result<(), GateError> {
        let current = self.source.current();
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if Arc::ptr_eq(&current, &verified) {
            return Ok(());
        }
        let algorithms = self.source.provider().signature_verification_algorithms.all;
        match verify_svid(
            &self.chain,
            &current.bundles,
            SvidUsage::Client,
            UnixTime::now(),
            algorithms,
        ) {
            Ok(_) => {
                *verified = current;
                Ok(())
            }
            Err(err) => Err(peer_refusal(format!(
                "the trust bundles changed since the connection was opened and the client certificate no longer verifies ({err}); reconnect with a current SVID"
            ))),
        }
    }
}

/// The chain's answer for a verified peer: a principal, nothing (not recognised: the request
/// goes on to token methods), or why it was refused.
async fn authenticate(
    chain: &dyn Authenticator,
    id: &SpiffeId,
) -> Result<Option<Principal>, String> {
    match chain
        .authenticate_peer(&VerifiedPeer::new(id.as_str()))
        .await
    {
        Ok(principal) => Ok(Some(principal)),
        Err(err) if err.is_not_mine() => Ok(None),
        Err(err) => {
            tracing::info!(spiffe_id = %id, error = %err, "verified peer refused by the auth chain");
            Err(format!("client certificate {id} refused: {err}"))
        }
    }
}

fn peer_refusal(reason: String) -> GateError {
    GateError::Unauthenticated(AuthError::InvalidRequest(reason))
}

/// What one connection established after its handshake, shared by its requests: the peer's
/// verified SPIFFE ID and the chain's principal for it, worked out once.
/// [`TlsServer::serve`] uses it; an accept loop of your own can too.
pub struct ConnectionIdentity {
    peer: Option<PeerIdentity>,
    recheck: Option<Recheck>,
    valid_until: Option<SystemTime>,
    principal: Result<Option<Principal>, String>,
    remote: ConnectInfo<SocketAddr>,
    peers: Option<Arc<dyn Authenticator>>,
    xfcc: Arc<XfccPolicy>,
}

impl fmt::Debug for ConnectionIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionIdentity")
            .field("peer", &self.peer)
            .field(
                "principal",
                &self
                    .principal
                    .as_ref()
                    .ok()
                    .and_then(Option::as_ref)
                    .map(ToString::to_string),
            )
            .field("remote", &self.remote.0)
            .finish_non_exhaustive()
    }
}

impl ConnectionIdentity {
    /// Works out a connection's identity once, after the handshake: `peer` is what
    /// [`portcullis_identity::peer_svid`] read from the certificate the TLS verifier accepted,
    /// `remote` the client's address. A configured proxy gets no principal of its own: its
    /// requests carry their clients' identities in XFCC.
    pub async fn establish(server: &TlsServer, peer: Option<LeafInfo>, remote: SocketAddr) -> Self {
        let valid_until = peer.as_ref().map(|leaf| leaf.not_after);
        let peer = peer.and_then(|leaf| leaf.spiffe_id);
        let is_proxy = peer.as_ref().is_some_and(|id| server.xfcc.is_proxy(id));
        let principal = match (&peer, &server.peers) {
            (Some(id), Some(chain)) if !is_proxy => authenticate(chain.as_ref(), id).await,
            _ => Ok(None),
        };
        ConnectionIdentity {
            peer: peer.map(|id| PeerIdentity::new(id, None)),
            recheck: None,
            valid_until,
            principal,
            remote: ConnectInfo(remote),
            peers: server.peers.clone(),
            xfcc: server.xfcc.clone(),
        }
    }

    async fn handle(
        &self,
        mut router: Router,
        request: Request<hyper::body::Incoming>,
    ) -> Response<Body> {
        let mut request = request.map(Body::new);
        match self.identify(&mut request).await {
            Ok(()) => match router.call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            },
            Err(err) => err.into_response(),
        }
    }

    /// Puts the caller's identity into `request`'s extensions — a [`PeerIdentity`] and the
    /// [`Principal`], plus axum's `ConnectInfo<SocketAddr>` — or says why the request is
    /// refused: the client certificate expired since the handshake (401: reconnect with the
    /// current SVID), or no longer verifies against rotated trust bundles (401), `x-forwarded-client-cert` from anyone but a configured proxy (401), a
    /// malformed one (400), a peer the chain refused (401), a client certificate together
    /// with an `Authorization` header (400).
    ///
    /// # Errors
    ///
    /// The [`GateError`] to answer with.
    pub async fn identify(&self, request: &mut Request<Body>) -> Result<(), GateError> {
        if let Some(until) = self.valid_until
            && SystemTime::now() > until
        {
            return Err(peer_refusal(
                "the client certificate has expired since the connection was opened; reconnect with the current SVID".into(),
            ));
        }
        if let Some(recheck) = &self.recheck {
            recheck.still_verifies()?;
        }
        request.extensions_mut().insert(self.remote);
        let direct = self.peer.as_ref().map(PeerIdentity::spiffe_id);
        let judged = {
            let values = request.headers().get_all(&XFCC);
            self.xfcc
                .judge(direct, values.iter().map(HeaderValue::as_bytes))
        };
        let (peer, principal) = match judged.map_err(xfcc_refusal)? {
            Forwarded::Direct => (
                self.peer.clone(),
                self.principal.clone().map_err(peer_refusal)?,
            ),
            Forwarded::Anonymous => (None, None),
            Forwarded::Client(id) => {
                request.headers_mut().remove(&XFCC);
                let principal = match &self.peers {
                    Some(chain) => authenticate(chain.as_ref(), &id)
                        .await
                        .map_err(peer_refusal)?,
                    None => None,
                };
                let proxy = direct.cloned();
                (Some(PeerIdentity::new(id, proxy)), principal)
            }
        };
        if let Some(principal) = principal {
            if request.headers().contains_key(header::AUTHORIZATION) {
                return Err(GateError::BadRequest(
                    "send a client certificate or an Authorization header, not both".into(),
                ));
            }
            request.extensions_mut().insert(principal);
        }
        if let Some(peer) = peer {
            request.extensions_mut().insert(peer);
        }
        Ok(())
    }
}

fn xfcc_refusal(err: XfccError) -> GateError {
    match err {
        XfccError::NotFromProxy
        | XfccError::ByMismatch
        | XfccError::NotSpiffe(_)
        | XfccError::NoUri => {
            GateError::Unauthenticated(AuthError::InvalidRequest(err.to_string()))
        }
        other => GateError::BadRequest(other.to_string()),
    }
}

/// A reqwest client builder that presents `source`'s current SVID and accepts only servers
/// whose SVID verifies against its bundles and whose SPIFFE ID `expected_server` accepts —
/// the server's identity is authorized, not only its CA. (The URL's host name is used to
/// connect, not to check the certificate.)
///
/// # Errors
///
/// [`TlsConfigError::NoBundles`] without a trust bundle.
pub fn reqwest_client(
    source: &Arc<IdentitySource>,
    expected_server: PeerIds,
) -> Result<reqwest::ClientBuilder, TlsConfigError> {
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(client_config(source, expected_server)?))
}
