//! Wiring of identity: the identity store of the data directory, the sign-in provider (a
//! configured OpenID Connect provider, or the development one), administrators from the
//! configuration, and the `aster users|groups|token` commands operators manage them with.
use anyhow::{Context, Result, bail};
use aster_archive::identity::{GroupName, IdentityStore, MAX_TOKEN_DAYS, Scopes, UserName};
use aster_protocols::auth::{Auth, DevIdp, OidcSettings};
use base64::Engine;

use crate::config::Config;

pub fn open_store(config: &Config) -> Result<IdentityStore> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    IdentityStore::open(&config.data_dir.join("identity.sqlite"))
        .context("opening the identity store")
}

/// The users the development provider offers when the configuration lists none.
pub const DEMO_USERS: [&str; 4] = ["alice", "bob", "carol", "admin"];

/// The authentication service, and the development provider when it is on.
pub fn build(config: &Config, demo: bool) -> Result<(Auth, Option<DevIdp>)> {
    let store = open_store(config)?;
    let a = &config.auth;
    for name in &a.admins {
        let n = UserName::new(name).with_context(|| format!("auth.admins: {name}"))?;
        store.ensure_user(&n, true)?;
    }
    let dev = a.dev_provider || (demo && a.oidc_issuer.is_none());
    let (settings, idp) = if dev {
        let issuer = format!("{}/dev-idp", config.links_base());
        let mut secret = [0u8; 24];
        rand::Rng::fill(&mut rand::rng(), &mut secret);
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        let users: Vec<String> = if a.dev_users.is_empty() {
            DEMO_USERS.iter().map(|s| s.to_string()).collect()
        } else {
            a.dev_users.clone()
        };
        let prefixes = config
            .own_base_urls()
            .into_iter()
            .map(|b| format!("{}/auth/callback", b.trim_end_matches('/')))
            .collect();
        let idp = DevIdp::new(&issuer, "aster-dev", &secret, users, prefixes)
            .map_err(anyhow::Error::msg)?;
        tracing::warn!(
            issuer,
            "the development sign-in provider is on: anyone can sign in as its users without a password"
        );
        (
            Some(OidcSettings {
                issuer,
                client_id: "aster-dev".into(),
                client_secret: Some(secret),
                scopes: Vec::new(),
            }),
            Some(idp),
        )
    } else if let Some(issuer) = &a.oidc_issuer {
        let Some(client_id) = &a.oidc_client_id else {
            bail!("auth.oidc_issuer is set but auth.oidc_client_id is not");
        };
        (
            Some(OidcSettings {
                issuer: issuer.clone(),
                client_id: client_id.clone(),
                client_secret: a.oidc_client_secret.clone(),
                scopes: a.oidc_scopes.clone(),
            }),
            None,
        )
    } else {
        (None, None)
    };
    // The observatory posts the visit schedule with a token of its own (`schedule_token`).
    let auth =
        Auth::new(store, config.public_url.clone(), settings).with_own_credentials("/api/schedule");
    Ok((auth, idp))
}

/// The demo's people: the development provider's users, `admin` an administrator, and
/// alice's group `demo-collab` with bob in it (carol is outside it).
pub fn seed_demo(store: &IdentityStore) -> Result<()> {
    for u in DEMO_USERS {
        store.ensure_user(&UserName::new(u)?, u == "admin")?;
    }
    let g = GroupName::new("demo-collab")?;
    let alice = UserName::new("alice")?;
    if store.group(&g)?.is_none() {
        store.create_group(&g, &alice, "the demo's collaboration: alice and bob")?;
        store.add_member(&g, &UserName::new("bob")?, &store.principal(&alice)?)?;
    }
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum UsersCommand {
    /// List the users.
    List,
    /// Add a local user (one an OpenID subject of the same name claims at first sign-in).
    Add {
        name: String,
        #[arg(long)]
        admin: bool,
    },
    /// Make a user an administrator, or (`--off`) no longer one.
    Admin {
        name: String,
        #[arg(long)]
        off: bool,
    },
}

#[derive(clap::Subcommand)]
pub enum GroupsCommand {
    /// Make a group owned by a user.
    Create {
        name: String,
        #[arg(long)]
        owner: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Add a member.
    Add { group: String, user: String },
    /// Show a group's owner and members.
    Show { group: String },
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Issue a personal API token for a user; prints the secret (shown once).
    Create {
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "cli")]
        label: String,
        /// `read`, or `read write`.
        #[arg(long, default_value = "read write")]
        scopes: String,
        #[arg(long, default_value_t = 30, conflicts_with = "expires")]
        days: i64,
        /// An exact expiry (RFC 3339) instead of a number of days.
        #[arg(long)]
        expires: Option<String>,
    },
    /// List a user's tokens.
    List {
        #[arg(long)]
        user: String,
    },
    /// Revoke a token by its id.
    Revoke {
        #[arg(long)]
        user: String,
        id: String,
    },
}

pub fn users(config: &Config, cmd: UsersCommand) -> Result<()> {
    let store = open_store(config)?;
    match cmd {
        UsersCommand::List => {
            for u in store.users()? {
                println!(
                    "{}\t{}\t{}",
                    u.name,
                    if u.admin { "admin" } else { "user" },
                    u.email.unwrap_or_default()
                );
            }
        }
        UsersCommand::Add { name, admin } => {
            let u = store.ensure_user(&UserName::new(&name)?, admin)?;
            println!("{}", u.name);
        }
        UsersCommand::Admin { name, off } => store.set_admin(&UserName::new(&name)?, !off)?,
    }
    Ok(())
}

pub fn groups(config: &Config, cmd: GroupsCommand) -> Result<()> {
    let store = open_store(config)?;
    match cmd {
        GroupsCommand::Create {
            name,
            owner,
            description,
        } => store.create_group(
            &GroupName::new(&name)?,
            &UserName::new(&owner)?,
            &description,
        )?,
        GroupsCommand::Add { group, user } => {
            let g = GroupName::new(&group)?;
            let owner = store
                .group(&g)?
                .with_context(|| format!("no group '{group}'"))?
                .owner;
            // The command line acts for the group's owner.
            store.add_member(&g, &UserName::new(&user)?, &store.principal(&owner)?)?
        }
        GroupsCommand::Show { group } => {
            let g = store
                .group(&GroupName::new(&group)?)?
                .with_context(|| format!("no group '{group}'"))?;
            println!("{}\towner {}\t{}", g.name, g.owner, g.description);
            for m in g.members {
                println!("  {m}");
            }
        }
    }
    Ok(())
}

pub fn token(config: &Config, cmd: TokenCommand) -> Result<()> {
    let store = open_store(config)?;
    match cmd {
        TokenCommand::Create {
            user,
            label,
            scopes,
            days,
            expires,
        } => {
            let (user_name, scopes) = (UserName::new(&user)?, Scopes::parse(&scopes)?);
            let t = match expires {
                None => store.issue_token(&user_name, &label, scopes, days)?,
                Some(e) => {
                    let at = chrono::DateTime::parse_from_rfc3339(&e)
                        .with_context(|| format!("--expires {e}: not an RFC 3339 time"))?
                        .with_timezone(&chrono::Utc);
                    if at > chrono::Utc::now() + chrono::Duration::days(MAX_TOKEN_DAYS) {
                        bail!("--expires {e}: tokens live at most {MAX_TOKEN_DAYS} days");
                    }
                    store.issue_token_until(&user_name, &label, scopes, at)?
                }
            };
            eprintln!(
                "token {} for {user}, {}, expires {}",
                t.info.id,
                t.info.scopes.as_str(),
                t.info.expires
            );
            println!("{}", t.token);
        }
        TokenCommand::List { user } => {
            for t in store.tokens(&UserName::new(&user)?)? {
                println!(
                    "{}\t{}\t{}\texpires {}\t{}",
                    t.id,
                    t.label,
                    t.scopes.as_str(),
                    t.expires,
                    if t.revoked { "revoked" } else { "" }
                );
            }
        }
        TokenCommand::Revoke { user, id } => store.revoke_token(&UserName::new(&user)?, &id)?,
    }
    Ok(())
}
