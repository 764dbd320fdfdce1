//! Changes to mirrors: one function for every surface (admin UI, CLI, control socket), so a
//! rule cannot be forgotten on one path. A change is a typed request; it is authorized and
//! held to the mirror admin limits, written in one store transaction (which sees the
//! owner's other mirrors), followed by a selection refresh (redirects follow at once), and
//! recorded in the audit log with its actor.
//! Imports `model`, `store` and `scheduler`; never actix.

use crate::model::{
    AuditEntry, Mirror, MirrorName, MirrorPatch, MirrorStatus, Role, UserName, check_admin_totals,
    needs_reapproval,
};
use crate::scheduler::Jobs;
use crate::store::MirrorEditError;

/// Who asks for a change.
#[derive(Debug, Clone)]
pub enum Actor {
    /// The local command line (directly or through the control socket): an operator.
    Cli,
    /// A logged-in user of the admin UI.
    User { id: u64, name: UserName, role: Role },
}

impl Actor {
    /// A mirror admin's user id; `None` for operators.
    fn mirror_admin(&self) -> Option<u64> {
        match self {
            Actor::User { id, role: Role::MirrorAdmin, .. } => Some(*id),
            _ => None,
        }
    }

    /// The name the audit log records.
    pub fn label(&self) -> String {
        match self {
            Actor::Cli => "cli".into(),
            Actor::User { name, .. } => name.to_string(),
        }
    }
}

/// What to do to a mirror.
#[derive(Debug, Clone)]
pub enum MirrorChange {
    /// Register a new mirror. A mirror admin's is theirs and pending until approved.
    Add(MirrorPatch),
    /// Change fields; a mirror admin may change only their own mirrors, and a change of
    /// URLs, netblocks or ASNs on an approved mirror waits for an operator's approval again.
    Set(MirrorPatch),
    Remove,
}

/// Carry out `change` on mirror `name` for `actor`; `action` names it in the audit log
/// (`mirror.edit`, `mirror.opt-out`, ...). Returns the mirror as it now is (`None` once
/// removed).
pub async fn change_mirror(
    jobs: &Jobs,
    actor: &Actor,
    name: &MirrorName,
    change: MirrorChange,
    action: &str,
) -> Result<Option<MirrorStatus>, MirrorEditError> {
    let store = jobs.store();
    let owner = actor.mirror_admin();
    let detail = match &change {
        MirrorChange::Add(p) | MirrorChange::Set(p) => p.summary(),
        MirrorChange::Remove => String::new(),
    };
    let add = matches!(change, MirrorChange::Add(_));
    let result = match change {
        MirrorChange::Remove => {
            if let Some(id) = owner {
                let m = store.mirror(name).await?;
                if m.is_none_or(|m| m.mirror.owner != Some(id)) {
                    return Err(MirrorEditError::Unknown(name.clone()));
                }
            }
            store.remove_mirror(name).await?;
            None
        }
        MirrorChange::Add(patch) | MirrorChange::Set(patch) => {
            let n = name.clone();
            let status = store
                .edit_mirror(name, move |current, others| {
                    edit(n, owner, current, others, patch, add)
                })
                .await?;
            Some(status)
        }
    };
    let entry = AuditEntry {
        at: jobs.sync_ctx().clock.now(),
        actor: actor.label(),
        action: action.to_owned(),
        target: name.to_string(),
        detail,
    };
    tracing::info!(actor = %entry.actor, action, target = %name, detail = %entry.detail, "mirror change");
    if let Err(e) = store.record_audit(entry).await {
        tracing::error!(error = %e, "recording the audit log");
    }
    // The change is stored and audited; should the snapshot not rebuild now, the next
    // sync, crawl or edit rebuilds it.
    if let Err(e) = jobs.refresh_selection().await {
        tracing::error!(error = %e, "rebuilding the selection after a mirror change");
    }
    Ok(result)
}

/// The mirror an add or set leaves, inside the store's write transaction.
fn edit(
    name: MirrorName,
    owner: Option<u64>,
    current: Option<&Mirror>,
    others: &[Mirror],
    patch: MirrorPatch,
    add: bool,
) -> Result<Mirror, MirrorEditError> {
    let before = match (current, add) {
        (Some(_), true) => return Err(MirrorEditError::Exists(name)),
        (None, false) => return Err(MirrorEditError::Unknown(name)),
        (Some(m), false) if owner.is_some() && m.owner != owner => {
            return Err(MirrorEditError::Unknown(name));
        }
        (c, _) => c,
    };
    let mut next = before.cloned().unwrap_or_else(|| Mirror::new(name));
    if owner.is_some() {
        let current_nets = before.map(|b| b.netblocks.as_slice()).unwrap_or_default();
        patch
            .check_mirror_admin_limits(current_nets)
            .map_err(|(field, e)| MirrorEditError::Limit(field, e))?;
    }
    patch.apply(&mut next)?;
    if let Some(id) = owner {
        if before.is_none() {
            next.owner = Some(id);
            next.enabled = false;
            next.pending = true;
        }
        let siblings: Vec<&Mirror> =
            others.iter().filter(|m| m.owner == Some(id) && m.name != next.name).collect();
        check_admin_totals(before, &next, &siblings)
            .map_err(|(field, e)| MirrorEditError::Limit(field, e))?;
        if before.is_some_and(|b| needs_reapproval(b, &next)) {
            next.enabled = false;
            next.pending = true;
        }
    }
    Ok(next)
}
