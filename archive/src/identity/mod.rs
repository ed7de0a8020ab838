//! Who is who (DMS-REQ-0340, 0345, 0119): users (local, or linked to an OpenID Connect
//! subject), groups and their members, personal API tokens with scopes and expiry, and
//! browser sessions, in SQLite. Secrets are never stored: tokens and session keys are kept
//! as SHA-256 digests, so a copy of the database gives no way in.
pub mod limits;
mod names;

use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use rand::TryRngCore;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use names::{GroupName, NameError, UserName};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("identity store lock poisoned")]
    Poisoned,
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("no user '{0}'")]
    NoUser(String),
    #[error("no group '{0}'")]
    NoGroup(String),
    #[error("group '{0}' already exists")]
    GroupExists(String),
    #[error("only the owner of group '{0}' or an administrator may change it")]
    NotGroupOwner(String),
    #[error("no token '{0}' of yours")]
    NoToken(String),
    #[error("unknown scope '{0}': use read or write")]
    Scope(String),
    #[error("a token lifetime must be between 1 and {max} days, not {0}", max = MAX_TOKEN_DAYS)]
    Lifetime(i64),
    #[error("the system's random number source failed: {0}")]
    Random(String),
}

/// The longest a personal API token may live.
pub const MAX_TOKEN_DAYS: i64 = 366;

/// What a credential allows: `read` (queries, downloads, listings) and `write` (creating
/// jobs, uploading, changing nodes and tables). Browser sessions hold both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Scopes {
    pub read: bool,
    pub write: bool,
}

impl Scopes {
    pub const ALL: Scopes = Scopes {
        read: true,
        write: true,
    };

    /// Parses a space- or comma-separated list; `write` implies `read`.
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        let mut out = Scopes {
            read: false,
            write: false,
        };
        for w in s.split([' ', ',']).filter(|w| !w.is_empty()) {
            match w {
                "read" => out.read = true,
                "write" => {
                    out.read = true;
                    out.write = true;
                }
                other => return Err(IdentityError::Scope(other.to_string())),
            }
        }
        if !out.read {
            return Err(IdentityError::Scope(s.to_string()));
        }
        Ok(out)
    }

    pub fn as_str(&self) -> &'static str {
        if self.write { "read write" } else { "read" }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User {
    pub name: UserName,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub admin: bool,
    pub created: String,
}

/// An authenticated caller: who, in which groups, and what the credential allows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Principal {
    pub user: UserName,
    pub groups: Vec<GroupName>,
    pub admin: bool,
    pub scopes: Scopes,
}

impl Principal {
    pub fn in_group(&self, g: &str) -> bool {
        self.groups.iter().any(|x| x.as_str() == g)
    }
}

/// Why a presented credential was refused. The HTTP layer answers all of them alike (401),
/// so that a guess learns nothing, but logs which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("unknown credential")]
    Unknown,
    #[error("expired credential")]
    Expired,
    #[error("revoked credential")]
    Revoked,
}

/// A token as listed to its owner: never the secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub user: UserName,
    pub label: String,
    pub scopes: Scopes,
    pub created: String,
    pub expires: String,
    pub revoked: bool,
    pub last_used: Option<String>,
}

/// A newly issued token: the secret is shown once, here, and never again.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedToken {
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub name: GroupName,
    pub owner: UserName,
    pub description: String,
    pub members: Vec<UserName>,
}

#[derive(Clone)]
pub struct IdentityStore {
    conn: Arc<Mutex<Connection>>,
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn digest(secret: &str) -> String {
    let d = Sha256::digest(secret.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_bytes<const N: usize>() -> Result<[u8; N], IdentityError> {
    let mut b = [0u8; N];
    rand::rngs::OsRng
        .try_fill_bytes(&mut b)
        .map_err(|e| IdentityError::Random(e.to_string()))?;
    Ok(b)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl IdentityStore {
    pub fn open(path: &Path) -> Result<Self, IdentityError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON;
             CREATE TABLE IF NOT EXISTS users (
               name TEXT PRIMARY KEY, issuer TEXT, subject TEXT, email TEXT, display_name TEXT,
               admin INTEGER NOT NULL DEFAULT 0, created TEXT NOT NULL,
               UNIQUE (issuer, subject));
             CREATE TABLE IF NOT EXISTS groups (
               name TEXT PRIMARY KEY, owner TEXT NOT NULL REFERENCES users(name),
               description TEXT NOT NULL DEFAULT '', created TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS members (
               grp TEXT NOT NULL REFERENCES groups(name) ON DELETE CASCADE,
               user TEXT NOT NULL REFERENCES users(name), PRIMARY KEY (grp, user));
             CREATE TABLE IF NOT EXISTS tokens (
               id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE,
               user TEXT NOT NULL REFERENCES users(name), label TEXT NOT NULL,
               scopes TEXT NOT NULL, created TEXT NOT NULL, expires TEXT NOT NULL,
               revoked INTEGER NOT NULL DEFAULT 0, last_used TEXT);
             CREATE TABLE IF NOT EXISTS sessions (
               digest TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(name),
               created TEXT NOT NULL, expires TEXT NOT NULL);",
        )?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, IdentityError> {
        self.conn.lock().map_err(|_| IdentityError::Poisoned)
    }

    /// A local user (made by an operator or the demo), created if missing.
    pub fn ensure_user(&self, name: &UserName, admin: bool) -> Result<User, IdentityError> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO users (name, admin, created) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET admin = max(admin, excluded.admin)",
            params![name.as_str(), admin, stamp(now())],
        )?;
        user_row(&conn, name.as_str())?.ok_or_else(|| IdentityError::NoUser(name.to_string()))
    }

    /// The user an OpenID Connect subject signs in as: the one linked to (issuer, subject),
    /// or a new one named after the provider's hint, with a number added when the name is
    /// taken by someone else.
    pub fn oidc_user(
        &self,
        issuer: &str,
        subject: &str,
        hint: &str,
        email: Option<&str>,
        display_name: Option<&str>,
    ) -> Result<User, IdentityError> {
        let conn = self.conn()?;
        let linked: Option<String> = conn
            .query_row(
                "SELECT name FROM users WHERE issuer = ?1 AND subject = ?2",
                params![issuer, subject],
                |r| r.get(0),
            )
            .optional()?;
        let name = match linked {
            Some(n) => {
                conn.execute(
                    "UPDATE users SET email = ?2, display_name = ?3 WHERE name = ?1",
                    params![n, email, display_name],
                )?;
                n
            }
            None => {
                let base = UserName::derive(hint);
                let mut candidate = base.as_str().to_string();
                let mut i = 1;
                // An unlinked local user of that name (made by an operator) is claimed by
                // the first subject that signs in with it.
                loop {
                    let taken: Option<(Option<String>, Option<String>)> = conn
                        .query_row(
                            "SELECT issuer, subject FROM users WHERE name = ?1",
                            params![candidate],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .optional()?;
                    match taken {
                        None => {
                            conn.execute(
                                "INSERT INTO users (name, issuer, subject, email, display_name, created)
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                                params![candidate, issuer, subject, email, display_name, stamp(now())],
                            )?;
                            break;
                        }
                        Some((None, None)) => {
                            conn.execute(
                                "UPDATE users SET issuer = ?2, subject = ?3, email = ?4, display_name = ?5 WHERE name = ?1",
                                params![candidate, issuer, subject, email, display_name],
                            )?;
                            break;
                        }
                        Some(_) => {
                            i += 1;
                            let mut b = base.as_str().to_string();
                            let suffix = i.to_string();
                            b.truncate(32 - suffix.len());
                            candidate = format!("{b}{suffix}");
                        }
                    }
                }
                candidate
            }
        };
        user_row(&conn, &name)?.ok_or(IdentityError::NoUser(name))
    }

    pub fn user(&self, name: &str) -> Result<Option<User>, IdentityError> {
        let conn = self.conn()?;
        user_row(&conn, name)
    }

    pub fn users(&self) -> Result<Vec<User>, IdentityError> {
        let conn = self.conn()?;
        let mut st = conn
            .prepare("SELECT name, email, display_name, admin, created FROM users ORDER BY name")?;
        let rows = st.query_map([], user_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn set_admin(&self, name: &UserName, admin: bool) -> Result<(), IdentityError> {
        let conn = self.conn()?;
        let n = conn.execute(
            "UPDATE users SET admin = ?2 WHERE name = ?1",
            params![name.as_str(), admin],
        )?;
        if n == 0 {
            return Err(IdentityError::NoUser(name.to_string()));
        }
        Ok(())
    }

    // ---- groups ----

    /// Creates a group owned (and joined) by `owner`.
    pub fn create_group(
        &self,
        name: &GroupName,
        owner: &UserName,
        description: &str,
    ) -> Result<(), IdentityError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        if user_row(&tx, owner.as_str())?.is_none() {
            return Err(IdentityError::NoUser(owner.to_string()));
        }
        let n = tx.execute(
            "INSERT INTO groups (name, owner, description, created) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO NOTHING",
            params![name.as_str(), owner.as_str(), description, stamp(now())],
        )?;
        if n == 0 {
            return Err(IdentityError::GroupExists(name.to_string()));
        }
        tx.execute(
            "INSERT INTO members (grp, user) VALUES (?1, ?2)",
            params![name.as_str(), owner.as_str()],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn check_group_owner(
        conn: &Connection,
        group: &GroupName,
        by: &Principal,
    ) -> Result<(), IdentityError> {
        let owner: Option<String> = conn
            .query_row(
                "SELECT owner FROM groups WHERE name = ?1",
                params![group.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        match owner {
            None => Err(IdentityError::NoGroup(group.to_string())),
            Some(o) if o == by.user.as_str() || by.admin => Ok(()),
            Some(_) => Err(IdentityError::NotGroupOwner(group.to_string())),
        }
    }

    /// Adds a member; only the group's owner or an administrator may.
    pub fn add_member(
        &self,
        group: &GroupName,
        user: &UserName,
        by: &Principal,
    ) -> Result<(), IdentityError> {
        let conn = self.conn()?;
        Self::check_group_owner(&conn, group, by)?;
        if user_row(&conn, user.as_str())?.is_none() {
            return Err(IdentityError::NoUser(user.to_string()));
        }
        conn.execute(
            "INSERT OR IGNORE INTO members (grp, user) VALUES (?1, ?2)",
            params![group.as_str(), user.as_str()],
        )?;
        Ok(())
    }

    pub fn remove_member(
        &self,
        group: &GroupName,
        user: &UserName,
        by: &Principal,
    ) -> Result<(), IdentityError> {
        let conn = self.conn()?;
        Self::check_group_owner(&conn, group, by)?;
        conn.execute(
            "DELETE FROM members WHERE grp = ?1 AND user = ?2",
            params![group.as_str(), user.as_str()],
        )?;
        Ok(())
    }

    pub fn groups_of(&self, user: &UserName) -> Result<Vec<GroupName>, IdentityError> {
        let conn = self.conn()?;
        groups_of(&conn, user.as_str())
    }

    pub fn group(&self, name: &GroupName) -> Result<Option<Group>, IdentityError> {
        let conn = self.conn()?;
        let row: Option<(String, String)> = conn
            .query_row(
                "SELECT owner, description FROM groups WHERE name = ?1",
                params![name.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((owner, description)) = row else {
            return Ok(None);
        };
        let mut st = conn.prepare("SELECT user FROM members WHERE grp = ?1 ORDER BY user")?;
        let members = st
            .query_map(params![name.as_str()], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(|m| UserName::new(&m))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Group {
            name: name.clone(),
            owner: UserName::new(&owner)?,
            description,
            members,
        }))
    }

    // ---- tokens ----

    /// Issues a personal API token. The secret is `aster_` and 43 URL-safe characters
    /// (256 random bits); only its digest is stored.
    pub fn issue_token(
        &self,
        user: &UserName,
        label: &str,
        scopes: Scopes,
        lifetime_days: i64,
    ) -> Result<IssuedToken, IdentityError> {
        if !(1..=MAX_TOKEN_DAYS).contains(&lifetime_days) {
            return Err(IdentityError::Lifetime(lifetime_days));
        }
        self.issue_token_until(user, label, scopes, now() + Duration::days(lifetime_days))
    }

    /// Issues a token that expires at a given time (the past included, for tests of
    /// expiry).
    pub fn issue_token_until(
        &self,
        user: &UserName,
        label: &str,
        scopes: Scopes,
        expires: DateTime<Utc>,
    ) -> Result<IssuedToken, IdentityError> {
        let secret = format!("aster_{}", b64(&random_bytes::<32>()?));
        let id = hex(&random_bytes::<6>()?);
        let conn = self.conn()?;
        if user_row(&conn, user.as_str())?.is_none() {
            return Err(IdentityError::NoUser(user.to_string()));
        }
        let created = stamp(now());
        conn.execute(
            "INSERT INTO tokens (id, digest, user, label, scopes, created, expires)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id,
                digest(&secret),
                user.as_str(),
                label,
                scopes.as_str(),
                created,
                stamp(expires)
            ],
        )?;
        Ok(IssuedToken {
            token: secret,
            info: TokenInfo {
                id,
                user: user.clone(),
                label: label.to_string(),
                scopes,
                created,
                expires: stamp(expires),
                revoked: false,
                last_used: None,
            },
        })
    }

    pub fn tokens(&self, user: &UserName) -> Result<Vec<TokenInfo>, IdentityError> {
        let conn = self.conn()?;
        let mut st = conn.prepare(
            "SELECT id, user, label, scopes, created, expires, revoked, last_used
             FROM tokens WHERE user = ?1 ORDER BY created DESC, id",
        )?;
        let rows = st.query_map(params![user.as_str()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, bool>(6)?,
                r.get::<_, Option<String>>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, user, label, scopes, created, expires, revoked, last_used) = row?;
            out.push(TokenInfo {
                id,
                user: UserName::new(&user)?,
                label,
                scopes: Scopes::parse(&scopes)?,
                created,
                expires,
                revoked,
                last_used,
            });
        }
        Ok(out)
    }

    /// Revokes one of the user's tokens.
    pub fn revoke_token(&self, user: &UserName, id: &str) -> Result<(), IdentityError> {
        let conn = self.conn()?;
        let n = conn.execute(
            "UPDATE tokens SET revoked = 1 WHERE id = ?1 AND user = ?2",
            params![id, user.as_str()],
        )?;
        if n == 0 {
            return Err(IdentityError::NoToken(id.to_string()));
        }
        Ok(())
    }

    /// The principal a bearer token stands for.
    pub fn authenticate_token(
        &self,
        secret: &str,
    ) -> Result<Result<Principal, CredentialError>, IdentityError> {
        let conn = self.conn()?;
        let row: Option<(String, String, String, String, bool)> = conn
            .query_row(
                "SELECT id, user, scopes, expires, revoked FROM tokens WHERE digest = ?1",
                params![digest(secret)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((id, user, scopes, expires, revoked)) = row else {
            return Ok(Err(CredentialError::Unknown));
        };
        if revoked {
            return Ok(Err(CredentialError::Revoked));
        }
        if expired(&expires) {
            return Ok(Err(CredentialError::Expired));
        }
        // Every request of a script carries its token: the time of use is written at most
        // once a minute, not on each of them.
        let t = now();
        conn.execute(
            "UPDATE tokens SET last_used = ?2 WHERE id = ?1 AND (last_used IS NULL OR last_used < ?3)",
            params![id, stamp(t), stamp(t - Duration::minutes(1))],
        )?;
        principal(&conn, &user, Scopes::parse(&scopes)?).map(Ok)
    }

    // ---- sessions ----

    /// Opens a browser session; returns the cookie value.
    pub fn open_session(
        &self,
        user: &UserName,
        lifetime: Duration,
    ) -> Result<String, IdentityError> {
        let secret = b64(&random_bytes::<32>()?);
        let conn = self.conn()?;
        let t = now();
        // Sessions end on their own; the sweep keeps the table small.
        conn.execute("DELETE FROM sessions WHERE expires < ?1", params![stamp(t)])?;
        conn.execute(
            "INSERT INTO sessions (digest, user, created, expires) VALUES (?1, ?2, ?3, ?4)",
            params![
                digest(&secret),
                user.as_str(),
                stamp(t),
                stamp(t + lifetime)
            ],
        )?;
        Ok(secret)
    }

    pub fn session(
        &self,
        secret: &str,
    ) -> Result<Result<Principal, CredentialError>, IdentityError> {
        let conn = self.conn()?;
        let row: Option<(String, String)> = conn
            .query_row(
                "SELECT user, expires FROM sessions WHERE digest = ?1",
                params![digest(secret)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match row {
            None => Ok(Err(CredentialError::Unknown)),
            Some((_, expires)) if expired(&expires) => Ok(Err(CredentialError::Expired)),
            Some((user, _)) => principal(&conn, &user, Scopes::ALL).map(Ok),
        }
    }

    pub fn close_session(&self, secret: &str) -> Result<(), IdentityError> {
        let conn = self.conn()?;
        conn.execute(
            "DELETE FROM sessions WHERE digest = ?1",
            params![digest(secret)],
        )?;
        Ok(())
    }

    /// The principal of a user named by trusted code (the command line, the demo).
    pub fn principal(&self, user: &UserName) -> Result<Principal, IdentityError> {
        let conn = self.conn()?;
        principal(&conn, user.as_str(), Scopes::ALL)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn expired(expires: &str) -> bool {
    DateTime::parse_from_rfc3339(expires)
        .map(|t| t.with_timezone(&Utc) <= now())
        .unwrap_or(true)
}

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let name: String = r.get(0)?;
    Ok(User {
        // Names are validated before they are stored.
        name: UserName::new(&name).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })?,
        email: r.get(1)?,
        display_name: r.get(2)?,
        admin: r.get(3)?,
        created: r.get(4)?,
    })
}

fn user_row(conn: &Connection, name: &str) -> Result<Option<User>, IdentityError> {
    Ok(conn
        .query_row(
            "SELECT name, email, display_name, admin, created FROM users WHERE name = ?1",
            params![name],
            user_from_row,
        )
        .optional()?)
}

fn groups_of(conn: &Connection, user: &str) -> Result<Vec<GroupName>, IdentityError> {
    let mut st = conn.prepare("SELECT grp FROM members WHERE user = ?1 ORDER BY grp")?;
    let names = st
        .query_map(params![user], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names
        .iter()
        .map(|g| GroupName::new(g))
        .collect::<Result<Vec<_>, _>>()?)
}

fn principal(conn: &Connection, user: &str, scopes: Scopes) -> Result<Principal, IdentityError> {
    let u = user_row(conn, user)?.ok_or_else(|| IdentityError::NoUser(user.to_string()))?;
    Ok(Principal {
        groups: groups_of(conn, user)?,
        admin: u.admin,
        user: u.name,
        scopes,
    })
}

#[cfg(test)]
mod tests;
