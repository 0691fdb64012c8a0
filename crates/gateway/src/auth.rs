//! Who may call the edge: the authentication middleware, the route policy and the caller the
//! handlers see. It sits between the origin check (`origin`, outermost) and the routes.
//!
//! With auth on, [`authenticate`] verifies the bearer token (`Authorization: Bearer` or
//! `?token=`) of every route that needs one *before* the handler runs, so a refused request
//! reaches no handler and changes nothing; it answers 401 `unauthorized` (with
//! `WWW-Authenticate`) or 403 `forbidden`, and otherwise puts the verified [`Identity`] into the
//! request's extensions, where later layers (per-client limits key on `identity.subject`) and
//! the handlers ([`Caller`]) find it. Which scope each route needs is [`need`], one table.
//! Ownership of a session is checked by the handlers, which know the session's owner.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tickstream_api::ErrorCode;
use tickstream_auth::{AuthError, Identity, Scope, Scopes, Verifier, bearer};

use crate::AppState;
use crate::error::ApiError;
use crate::origin::AllowedOrigins;

/// The edge's authentication settings: off, or a token verifier; and the allowed origins.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    verifier: Option<Arc<Verifier>>,
    pub origins: AllowedOrigins,
}

impl Auth {
    /// No authentication (`--auth off`): every route is open, sessions have no owner.
    pub fn off() -> Self {
        Self::default()
    }

    /// Bearer tokens checked by `verifier` (`--auth jwt`).
    pub fn jwt(verifier: Verifier) -> Self {
        Self { verifier: Some(Arc::new(verifier)), origins: AllowedOrigins::default() }
    }

    /// The same, with `origins` allowed cross-origin access.
    #[must_use]
    pub fn with_origins(mut self, origins: AllowedOrigins) -> Self {
        self.origins = origins;
        self
    }

    /// Whether tokens are required.
    pub fn is_on(&self) -> bool {
        self.verifier.is_some()
    }

    /// The verifier, with auth on.
    pub fn verifier(&self) -> Option<&Arc<Verifier>> {
        self.verifier.as_ref()
    }
}

/// What a route requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing (health checks, the board page, unknown routes' 404).
    Open,
    /// Any valid token, whatever its scopes.
    Token,
    /// A valid token with this scope.
    Scope(Scope),
    /// `stream` (the caller's own sessions) or `admin` (any session).
    StreamOrAdmin,
}

impl Need {
    fn allows(self, scopes: Scopes) -> bool {
        match self {
            Need::Open | Need::Token => true,
            Need::Scope(s) => scopes.contains(s),
            Need::StreamOrAdmin => scopes.contains(Scope::Stream) || scopes.contains(Scope::Admin),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Need::Open | Need::Token => "",
            Need::Scope(s) => s.as_str(),
            Need::StreamOrAdmin => "stream admin",
        }
    }
}

/// The route policy (README "Security"). `GET /` only serves the page (it fetches everything
/// else with the token), and the ticker list names symbols, not prices, but still needs a
/// valid token so that nothing under `/api` is anonymous.
pub fn need(method: &Method, path: &str) -> Need {
    match path {
        "/" | "/healthz" | "/readyz" => Need::Open,
        "/metrics" => Need::Scope(Scope::Admin),
        "/api/v1/prices" | "/api/v1/status" => Need::Scope(Scope::Publish),
        "/api/v1/tickers" => Need::Token,
        // Creating needs `stream` (admin acts on sessions, it does not own them); other methods
        // get their 405 once authenticated.
        "/api/v1/sessions" if method == Method::POST => Need::Scope(Scope::Stream),
        "/api/v1/sessions" => Need::Token,
        "/ws" => Need::StreamOrAdmin,
        p if p.starts_with("/api/v1/sessions/") => Need::StreamOrAdmin,
        _ => Need::Open,
    }
}

/// The middleware: with auth on, verifies the token of every route [`need`] does not mark
/// open, refuses before the handler, and stores the [`Identity`] in the request's extensions.
pub async fn authenticate(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    let Some(verifier) = auth.verifier() else {
        return next.run(req).await;
    };
    let need = need(req.method(), req.uri().path());
    if need == Need::Open {
        return next.run(req).await;
    }
    let identity = match verify(verifier, req.headers().get(header::AUTHORIZATION), req.uri().query()) {
        Ok(identity) => identity,
        Err(e) => return unauthorized(&e),
    };
    if !need.allows(identity.scopes) {
        return forbidden(need);
    }
    req.extensions_mut().insert(identity);
    next.run(req).await
}

/// The request's one token, verified.
///
/// # Errors
/// Why there is no usable token ([`AuthError::Missing`] when there is none at all).
pub fn verify(
    verifier: &Verifier,
    authorization: Option<&HeaderValue>,
    query: Option<&str>,
) -> Result<Identity, AuthError> {
    let token = bearer::from_request(authorization.map(HeaderValue::as_bytes), query)?;
    verifier.verify(&token)
}

/// 401 `unauthorized` with the RFC 6750 §3 challenge: bare for a missing token,
/// `error="invalid_token"` for a refused one (with a description saying when it has expired).
pub fn unauthorized(e: &AuthError) -> Response {
    let challenge = match e {
        AuthError::Missing => "Bearer",
        AuthError::Expired => r#"Bearer error="invalid_token", error_description="the token has expired""#,
        _ => r#"Bearer error="invalid_token""#,
    };
    let mut resp = ApiError::new(ErrorCode::Unauthorized, e.to_string()).into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    resp
}

fn forbidden(need: Need) -> Response {
    let scopes = need.describe();
    let message = if need == Need::StreamOrAdmin {
        "the token needs the stream or admin scope".to_owned()
    } else {
        format!("the token needs the {scopes} scope")
    };
    let mut resp = ApiError::new(ErrorCode::Forbidden, message).into_response();
    let challenge = format!(r#"Bearer error="insufficient_scope", scope="{scopes}""#);
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// What a WebSocket keeps of its caller's token: enough to accept a refreshed one
/// (`{"type":"auth","token":…}`). Boxed in the connection, so a socket with auth off pays a
/// pointer.
#[derive(Debug)]
pub struct StreamAuth {
    pub verifier: Arc<Verifier>,
    /// Whose token opened the socket: a refresh must be for the same subject.
    pub subject: String,
    /// When the token that opened the socket expires.
    pub expires_at: SystemTime,
}

impl StreamAuth {
    /// Checks a token sent over the socket; returns its expiry.
    ///
    /// # Errors
    /// The token's [`AuthError`]; [`AuthError::InvalidClaim`] (`sub`) for another subject's
    /// token and (`scope`) for one that could not have opened the socket.
    pub fn refresh(&self, token: &str) -> Result<SystemTime, AuthError> {
        let identity = self.verifier.verify(token)?;
        if identity.subject != self.subject {
            return Err(AuthError::InvalidClaim("sub"));
        }
        if !Need::StreamOrAdmin.allows(identity.scopes) {
            return Err(AuthError::InvalidClaim("scope"));
        }
        Ok(identity.expires_at)
    }
}

/// The caller as the handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Auth is off: anyone may do anything, and sessions have no owner.
    Anyone,
    /// A verified token.
    Verified(Identity),
}

impl Caller {
    /// The owner recorded on a session this caller creates.
    pub fn owner(&self) -> Option<String> {
        match self {
            Caller::Anyone => None,
            Caller::Verified(id) => Some(id.subject.clone()),
        }
    }

    /// Whether the caller may read, delete or stream a session owned by `owner`: its owner or
    /// an admin. A session without an owner (created with auth off) is admin-only once auth is on.
    pub fn may_act_on(&self, owner: Option<&str>) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Verified(id) => id.scopes.contains(Scope::Admin) || owner == Some(id.subject.as_str()),
        }
    }

    /// Whether `may_act_on` can be decided without knowing the owner (no lookup needed).
    pub fn acts_on_any(&self) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Verified(id) => id.scopes.contains(Scope::Admin),
        }
    }

    /// When the caller's token expires (`None` with auth off).
    pub fn expires_at(&self) -> Option<SystemTime> {
        match self {
            Caller::Anyone => None,
            Caller::Verified(id) => Some(id.expires_at),
        }
    }
}

/// From the extensions [`authenticate`] filled. With auth on and no identity (a route the
/// policy left open), the request is refused: handlers that take a `Caller` fail closed.
impl<S: Send + Sync> FromRequestParts<AppState<S>> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &AppState<S>) -> Result<Self, Response> {
        if !st.auth.is_on() {
            return Ok(Caller::Anyone);
        }
        match parts.extensions.get::<Identity>() {
            Some(identity) => Ok(Caller::Verified(identity.clone())),
            None => Err(unauthorized(&AuthError::Missing)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn identity(subject: &str, scopes: &str) -> Caller {
        Caller::Verified(Identity {
            subject: subject.into(),
            scopes: Scopes::from_claim(scopes),
            expires_at: SystemTime::now() + Duration::from_secs(60),
        })
    }

    #[test]
    fn the_policy_names_a_scope_for_every_route_that_touches_data() {
        let post = Method::POST;
        let get = Method::GET;
        assert_eq!(need(&post, "/api/v1/prices"), Need::Scope(Scope::Publish));
        assert_eq!(need(&post, "/api/v1/status"), Need::Scope(Scope::Publish));
        assert_eq!(need(&post, "/api/v1/sessions"), Need::Scope(Scope::Stream));
        assert_eq!(need(&get, "/api/v1/sessions/abc"), Need::StreamOrAdmin);
        assert_eq!(need(&Method::DELETE, "/api/v1/sessions/abc"), Need::StreamOrAdmin);
        assert_eq!(need(&get, "/ws"), Need::StreamOrAdmin);
        assert_eq!(need(&get, "/metrics"), Need::Scope(Scope::Admin));
        assert_eq!(need(&get, "/api/v1/tickers"), Need::Token);
        for open in ["/", "/healthz", "/readyz", "/nowhere"] {
            assert_eq!(need(&get, open), Need::Open, "{open}");
        }
    }

    #[test]
    fn scopes_are_independent() {
        let admin = Scopes::from_claim("admin");
        assert!(!Need::Scope(Scope::Publish).allows(admin));
        assert!(!Need::Scope(Scope::Stream).allows(admin));
        assert!(Need::StreamOrAdmin.allows(admin));
        assert!(Need::StreamOrAdmin.allows(Scopes::from_claim("stream")));
        assert!(!Need::StreamOrAdmin.allows(Scopes::from_claim("publish")));
        assert!(Need::Token.allows(Scopes::EMPTY));
    }

    #[test]
    fn only_the_owner_or_an_admin_acts_on_a_session() {
        let alice = identity("alice", "stream");
        assert!(alice.may_act_on(Some("alice")));
        assert!(!alice.may_act_on(Some("bob")));
        assert!(!alice.may_act_on(None), "an ownerless session is admin-only with auth on");
        assert!(!alice.acts_on_any());
        let admin = identity("root", "admin");
        assert!(admin.may_act_on(Some("alice")) && admin.may_act_on(None) && admin.acts_on_any());
        assert!(Caller::Anyone.may_act_on(Some("alice")));
        assert_eq!(Caller::Anyone.owner(), None);
        assert_eq!(alice.owner().as_deref(), Some("alice"));
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        let header = |e: AuthError| unauthorized(&e).headers()[header::WWW_AUTHENTICATE].clone();
        assert_eq!(header(AuthError::Missing), "Bearer");
        assert_eq!(header(AuthError::BadSignature), r#"Bearer error="invalid_token""#);
        assert!(header(AuthError::Expired).to_str().unwrap().contains("expired"));
        let resp = forbidden(Need::Scope(Scope::Publish));
        assert_eq!(resp.status(), axum::http::StatusCode::FORBIDDEN);
        assert_eq!(
            resp.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer error="insufficient_scope", scope="publish""#
        );
    }
}
