//! User management for operators: create, disable and enable, reset a password, change a
//! role. A generated password is shown once, on the page that created it.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::accounts;
use crate::model::{EmailAddress, Role, UserName};
use crate::store::UserChange;

use super::{AdminError, AdminState, Frame, OperatorSession, render, when};

pub struct UserRow {
    name: String,
    email: String,
    role: String,
    disabled: bool,
    created: String,
    last_login: String,
}

#[derive(Default, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
}

#[derive(Template)]
#[template(path = "admin/users/list.html")]
pub struct ListPage {
    frame: Frame,
    users: Vec<UserRow>,
    form: CreateForm,
    error: Option<String>,
    /// (user, generated password): shown once.
    password: Option<(String, String)>,
}

async fn page(
    state: &AdminState,
    session: &OperatorSession,
    form: CreateForm,
    error: Option<String>,
    password: Option<(String, String)>,
) -> Result<ListPage, AdminError> {
    let users = state
        .store()
        .users()
        .await?
        .into_iter()
        .map(|u| UserRow {
            name: u.name.to_string(),
            email: u.email.map(String::from).unwrap_or_default(),
            role: u.role.to_string(),
            disabled: u.disabled,
            created: when(u.created_at),
            last_login: u.last_login.map(when).unwrap_or_else(|| "never".into()),
        })
        .collect();
    Ok(ListPage { frame: Frame::of(&session.0), users, form, error, password })
}

pub async fn list(
    session: OperatorSession,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, AdminError> {
    let form = CreateForm { role: "mirror-admin".into(), ..Default::default() };
    Ok(render(StatusCode::OK, &page(&state, &session, form, None, None).await?))
}

/// Create a user with a generated password (shown once).
pub async fn create(
    session: OperatorSession,
    state: web::Data<AdminState>,
    form: web::Form<CreateForm>,
) -> Result<HttpResponse, AdminError> {
    session.0.check_csrf(&form.csrf)?;
    let form = form.into_inner();
    let parsed = form
        .name
        .trim()
        .parse::<UserName>()
        .and_then(|n| form.role.parse::<Role>().map(|r| (n, r)))
        .map_err(|e| e.to_string());
    let created = match parsed {
        Ok((name, role)) => accounts::add_user(state.store(), &name, role, None, state.clock.now())
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match created {
        Ok((user, password)) => {
            let name = user.name.to_string();
            state.audit(&session.0, "user.create", &name, format!("role={}", user.role)).await;
            let shown = password.map(|p| (name, p));
            let form = CreateForm { role: "mirror-admin".into(), ..Default::default() };
            Ok(render(StatusCode::OK, &page(&state, &session, form, None, shown).await?))
        }
        Err(e) => {
            let page = page(&state, &session, form, Some(e), None).await?;
            Ok(render(StatusCode::UNPROCESSABLE_ENTITY, &page))
        }
    }
}

#[derive(Deserialize)]
pub struct ChangeForm {
    csrf: String,
    /// `disable`, `enable`, `reset-password`, `role` or `email`.
    action: String,
    #[serde(default)]
    role: String,
    /// For `email`; empty removes the address.
    #[serde(default)]
    email: String,
}

/// Disable, enable, reset the password of, or change the role of a user.
pub async fn change(
    session: OperatorSession,
    state: web::Data<AdminState>,
    name: web::Path<String>,
    form: web::Form<ChangeForm>,
) -> Result<HttpResponse, AdminError> {
    session.0.check_csrf(&form.csrf)?;
    let name: UserName = name.parse().map_err(|_| AdminError::NotFound)?;
    let store = state.store();
    let refuse = |e: String| async {
        let form = CreateForm { role: "mirror-admin".into(), ..Default::default() };
        let page = page(&state, &session, form, Some(e), None).await?;
        Ok::<_, AdminError>(render(StatusCode::UNPROCESSABLE_ENTITY, &page))
    };
    if store.user_credentials(&name).await?.is_none() {
        return Err(AdminError::NotFound);
    }
    let own = name == session.0.session.user;
    let mut shown = None;
    let detail = match form.action.as_str() {
        "disable" | "enable" => {
            if own {
                return refuse("you cannot disable yourself".into()).await;
            }
            let disabled = form.action == "disable";
            let change = UserChange { disabled: Some(disabled), ..Default::default() };
            store
                .update_user(&name, change)
                .await
                .map_err(|e| AdminError::Internal(e.to_string()))?;
            String::new()
        }
        "reset-password" => {
            let (_, password) = accounts::set_password(store, &name, None)
                .await
                .map_err(|e| AdminError::Internal(e.to_string()))?;
            shown = password.map(|p| (name.to_string(), p));
            String::new()
        }
        "role" => {
            let role = match form.role.parse::<Role>() {
                Ok(r) => r,
                Err(e) => return refuse(e.to_string()).await,
            };
            if own && role != Role::Operator {
                return refuse("you cannot take your own operator role".into()).await;
            }
            let change = UserChange { role: Some(role), ..Default::default() };
            store
                .update_user(&name, change)
                .await
                .map_err(|e| AdminError::Internal(e.to_string()))?;
            format!("role={role}")
        }
        "email" => {
            let email = match EmailAddress::optional(&form.email) {
                Ok(e) => e,
                Err(e) => return refuse(e.to_string()).await,
            };
            let detail = email.as_ref().map(EmailAddress::to_string).unwrap_or_default();
            accounts::set_email(store, &name, email)
                .await
                .map_err(|e| AdminError::Internal(e.to_string()))?;
            detail
        }
        _ => return Err(AdminError::NotFound),
    };
    state.audit(&session.0, &format!("user.{}", form.action), name.as_str(), detail).await;
    let form = CreateForm { role: "mirror-admin".into(), ..Default::default() };
    let mut page = page(&state, &session, form, None, shown).await?;
    page.frame.notice = Some("Saved.".into());
    Ok(render(StatusCode::OK, &page))
}
