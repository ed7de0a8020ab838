//! Resource allocation (DMS-REQ-0119): what each caller may use: async jobs running at once
//! and waiting, execution time, storage, and the priority of their waiting jobs. Defaults
//! apply to everyone signed in (anonymous callers share one smaller allocation); a group's
//! settings raise its members' (the most generous group wins, field by field), and a
//! user's own settings override both.
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{IdentityStore, UserName};

/// Settings that override the defaults for a user or a group.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitOverrides {
    pub async_jobs: Option<usize>,
    pub queued_jobs: Option<usize>,
    pub execution_secs: Option<u64>,
    pub quota_gib: Option<u64>,
    pub priority: Option<i32>,
}

/// A caller's allocation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Limits {
    /// Async jobs (TAP, SODA, VOSpace transfers) running at once; more wait in the queue.
    pub async_jobs: usize,
    /// Jobs waiting at most; asking to run more is refused.
    pub queued_jobs: usize,
    /// Longest execution duration an async job may have, seconds.
    pub execution_secs: u64,
    /// Bytes the VOSpace home may hold.
    pub quota_bytes: u64,
    /// Waiting jobs of higher priority start first.
    pub priority: i32,
    /// Where the allocation comes from: `default`, `anonymous`, `group G`, `user U`.
    pub source: String,
}

impl Limits {
    fn apply(&mut self, o: &LimitOverrides, generous: bool, source: String) {
        let pick = |cur: usize, new: Option<usize>| match new {
            Some(n) if !generous || n > cur => n,
            _ => cur,
        };
        let pick64 = |cur: u64, new: Option<u64>| match new {
            Some(n) if !generous || n > cur => n,
            _ => cur,
        };
        let before = self.clone();
        self.async_jobs = pick(self.async_jobs, o.async_jobs);
        self.queued_jobs = pick(self.queued_jobs, o.queued_jobs);
        self.execution_secs = pick64(self.execution_secs, o.execution_secs);
        self.quota_bytes = pick64(self.quota_bytes, o.quota_gib.map(|g| g << 30));
        self.priority = match o.priority {
            Some(p) if !generous || p > self.priority => p,
            _ => self.priority,
        };
        if *self != before {
            self.source = source;
        }
    }
}

#[derive(Clone)]
pub struct LimitPolicy {
    default: Limits,
    anonymous: Limits,
    users: HashMap<String, LimitOverrides>,
    groups: HashMap<String, LimitOverrides>,
    identity: Option<IdentityStore>,
}

impl LimitPolicy {
    pub fn new(
        default: Limits,
        anonymous: Limits,
        users: HashMap<String, LimitOverrides>,
        groups: HashMap<String, LimitOverrides>,
        identity: Option<IdentityStore>,
    ) -> Self {
        Self {
            default,
            anonymous,
            users,
            groups,
            identity,
        }
    }

    /// The allocation of `user` (None: anonymous).
    pub fn for_user(&self, user: Option<&str>) -> Limits {
        let Some(user) = user else {
            return self.anonymous.clone();
        };
        let mut l = self.default.clone();
        let groups = UserName::new(user)
            .ok()
            .and_then(|u| self.identity.as_ref().and_then(|i| i.groups_of(&u).ok()))
            .unwrap_or_default();
        for g in groups {
            if let Some(o) = self.groups.get(g.as_str()) {
                l.apply(o, true, format!("group {g}"));
            }
        }
        if let Some(o) = self.users.get(user) {
            l.apply(o, false, format!("user {user}"));
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::GroupName;

    fn base(jobs: usize, source: &str) -> Limits {
        Limits {
            async_jobs: jobs,
            queued_jobs: 10,
            execution_secs: 3600,
            quota_bytes: 1 << 30,
            priority: 0,
            source: source.into(),
        }
    }

    #[test]
    fn groups_raise_and_users_override() {
        let dir = crate::testdir::tempdir("limits");
        let ids = IdentityStore::open(&dir.join("identity.sqlite")).unwrap();
        for u in ["alice", "bob", "carol"] {
            ids.ensure_user(&UserName::new(u).unwrap(), false).unwrap();
        }
        let g = GroupName::new("core").unwrap();
        ids.create_group(&g, &UserName::new("alice").unwrap(), "")
            .unwrap();
        ids.add_member(
            &g,
            &UserName::new("bob").unwrap(),
            &ids.principal(&UserName::new("alice").unwrap()).unwrap(),
        )
        .unwrap();
        let policy = LimitPolicy::new(
            base(2, "default"),
            base(1, "anonymous"),
            HashMap::from([(
                "bob".to_string(),
                LimitOverrides {
                    async_jobs: Some(1),
                    ..Default::default()
                },
            )]),
            HashMap::from([(
                "core".to_string(),
                LimitOverrides {
                    async_jobs: Some(8),
                    priority: Some(5),
                    quota_gib: Some(100),
                    ..Default::default()
                },
            )]),
            Some(ids),
        );
        assert_eq!(policy.for_user(None).async_jobs, 1);
        assert_eq!(policy.for_user(Some("carol")), base(2, "default"));
        let alice = policy.for_user(Some("alice"));
        assert_eq!(
            (alice.async_jobs, alice.priority, alice.quota_bytes),
            (8, 5, 100 << 30)
        );
        assert_eq!(alice.source, "group core");
        // A user's own setting wins, even when it is lower than the group's.
        let bob = policy.for_user(Some("bob"));
        assert_eq!((bob.async_jobs, bob.priority), (1, 5));
        assert_eq!(bob.source, "user bob");
    }
}
