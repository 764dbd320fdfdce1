//! Authorization as types: a handler that takes an [`OperatorSession`] cannot run for
//! anyone else. Sessions come from the `wharf_session` cookie.

use std::future::Future;
use std::pin::Pin;

use actix_web::{FromRequest, HttpRequest, web};

use crate::accounts::{self, SESSION_COOKIE};
use crate::model::Role;
use crate::store::Session;

use super::{AdminError, AdminState};

/// Any logged-in user.
pub struct AnySession {
    pub session: Session,
    pub token: String,
}

impl AnySession {
    /// Who this is, for changes made through `service`.
    pub fn actor(&self) -> crate::service::Actor {
        crate::service::Actor::User {
            id: self.session.user_id,
            name: self.session.user.clone(),
            role: self.session.role,
        }
    }

    /// Refuse a form whose CSRF token is not this session's.
    pub fn check_csrf(&self, token: &str) -> Result<(), AdminError> {
        use subtle::ConstantTimeEq;
        let same: bool = self.session.csrf.as_bytes().ct_eq(token.as_bytes()).into();
        if same { Ok(()) } else { Err(AdminError::Csrf) }
    }
}

impl FromRequest for AnySession {
    type Error = AdminError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AdminError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AdminState>>().cloned();
        let token = req.cookie(SESSION_COOKIE).map(|c| c.value().to_owned());
        Box::pin(async move {
            let state = state.ok_or_else(|| AdminError::Internal("admin state missing".into()))?;
            let token = token.ok_or(AdminError::LoginRequired)?;
            let now = state.clock.now();
            let session = accounts::current_session(state.store(), &token, now, state.policy)
                .await?
                .ok_or(AdminError::LoginRequired)?;
            Ok(AnySession { session, token })
        })
    }
}

/// An operator.
pub struct OperatorSession(pub AnySession);

impl FromRequest for OperatorSession {
    type Error = AdminError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AdminError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let any = AnySession::from_request(req, payload);
        Box::pin(async move {
            let s = any.await?;
            if s.session.role == Role::Operator {
                Ok(OperatorSession(s))
            } else {
                Err(AdminError::Forbidden)
            }
        })
    }
}

/// A mirror admin (operators may act as one too).
pub struct MirrorAdminSession(pub AnySession);

impl FromRequest for MirrorAdminSession {
    type Error = AdminError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AdminError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let any = AnySession::from_request(req, payload);
        Box::pin(async move { any.await.map(MirrorAdminSession) })
    }
}
