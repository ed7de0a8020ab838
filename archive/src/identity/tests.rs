use super::*;

fn store() -> (crate::testdir::TempDir, IdentityStore) {
    let d = crate::testdir::tempdir("identity");
    let s = IdentityStore::open(&d.join("identity.sqlite")).unwrap();
    (d, s)
}

fn name(s: &str) -> UserName {
    UserName::new(s).unwrap()
}

#[test]
fn tokens_authenticate_until_revoked_or_expired() {
    let (_d, s) = store();
    let alice = name("alice");
    s.ensure_user(&alice, false).unwrap();
    let t = s
        .issue_token(&alice, "topcat", Scopes::parse("read").unwrap(), 30)
        .unwrap();
    assert!(t.token.starts_with("aster_") && t.token.len() > 40);
    let p = s.authenticate_token(&t.token).unwrap().unwrap();
    assert_eq!(p.user, alice);
    assert!(p.scopes.read && !p.scopes.write);

    // A token with one character changed is unknown.
    let mut tampered = t.token.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        s.authenticate_token(&tampered).unwrap(),
        Err(CredentialError::Unknown)
    );

    let listed = s.tokens(&alice).unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].last_used.is_some());
    s.revoke_token(&alice, &t.info.id).unwrap();
    assert_eq!(
        s.authenticate_token(&t.token).unwrap(),
        Err(CredentialError::Revoked)
    );
    // Someone else cannot revoke (or learn of) alice's tokens.
    let bob = name("bob");
    s.ensure_user(&bob, false).unwrap();
    assert!(matches!(
        s.revoke_token(&bob, &t.info.id),
        Err(IdentityError::NoToken(_))
    ));

    let old = s
        .issue_token_until(
            &alice,
            "old",
            Scopes::ALL,
            Utc::now() - Duration::seconds(1),
        )
        .unwrap();
    assert_eq!(
        s.authenticate_token(&old.token).unwrap(),
        Err(CredentialError::Expired)
    );
    assert!(matches!(
        s.issue_token(&alice, "x", Scopes::ALL, 0),
        Err(IdentityError::Lifetime(0))
    ));
}

#[test]
fn groups_are_changed_by_their_owner_only() {
    let (_d, s) = store();
    for u in ["alice", "bob", "carol"] {
        s.ensure_user(&name(u), false).unwrap();
    }
    let g = GroupName::new("wg-transients").unwrap();
    s.create_group(&g, &name("alice"), "transient working group")
        .unwrap();
    assert!(matches!(
        s.create_group(&g, &name("bob"), ""),
        Err(IdentityError::GroupExists(_))
    ));
    let alice = s.principal(&name("alice")).unwrap();
    let bob = s.principal(&name("bob")).unwrap();
    s.add_member(&g, &name("bob"), &alice).unwrap();
    assert!(matches!(
        s.add_member(&g, &name("carol"), &bob),
        Err(IdentityError::NotGroupOwner(_))
    ));
    assert_eq!(s.groups_of(&name("bob")).unwrap(), vec![g.clone()]);
    assert!(s.groups_of(&name("carol")).unwrap().is_empty());
    assert!(s.principal(&name("bob")).unwrap().in_group("wg-transients"));
    let group = s.group(&g).unwrap().unwrap();
    assert_eq!(group.members, vec![name("alice"), name("bob")]);
    s.remove_member(&g, &name("bob"), &alice).unwrap();
    assert!(!s.principal(&name("bob")).unwrap().in_group("wg-transients"));
}

#[test]
fn oidc_subjects_keep_their_user_and_never_take_anothers() {
    let (_d, s) = store();
    let a = s
        .oidc_user(
            "https://idp",
            "sub-1",
            "Alice@example.org",
            Some("alice@example.org"),
            None,
        )
        .unwrap();
    assert_eq!(a.name.as_str(), "alice");
    // The same subject again is the same user; a different subject with the same hint gets
    // a new name.
    let again = s
        .oidc_user("https://idp", "sub-1", "renamed", None, None)
        .unwrap();
    assert_eq!(again.name.as_str(), "alice");
    let other = s
        .oidc_user("https://idp", "sub-2", "alice", None, None)
        .unwrap();
    assert_eq!(other.name.as_str(), "alice2");
    let elsewhere = s
        .oidc_user("https://other", "sub-1", "alice", None, None)
        .unwrap();
    assert_eq!(elsewhere.name.as_str(), "alice3");
    // A local account made by an operator is claimed by the first sign-in with its name.
    s.ensure_user(&name("dave"), true).unwrap();
    let d = s
        .oidc_user("https://idp", "sub-9", "dave", None, None)
        .unwrap();
    assert_eq!(d.name.as_str(), "dave");
    assert!(d.admin);
}

#[test]
fn sessions_end() {
    let (_d, s) = store();
    let alice = name("alice");
    s.ensure_user(&alice, false).unwrap();
    let c = s.open_session(&alice, Duration::hours(1)).unwrap();
    assert_eq!(s.session(&c).unwrap().unwrap().user, alice);
    s.close_session(&c).unwrap();
    assert_eq!(s.session(&c).unwrap(), Err(CredentialError::Unknown));
    let gone = s.open_session(&alice, Duration::seconds(-1)).unwrap();
    assert_eq!(s.session(&gone).unwrap(), Err(CredentialError::Expired));
}

#[test]
fn scopes_parse() {
    assert_eq!(Scopes::parse("write").unwrap(), Scopes::ALL);
    assert_eq!(Scopes::parse("read, write").unwrap(), Scopes::ALL);
    assert!(Scopes::parse("").is_err());
    assert!(Scopes::parse("admin").is_err());
}
