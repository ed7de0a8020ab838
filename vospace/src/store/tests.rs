use super::*;

struct Scratch(std::path::PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn store(quota: u64) -> (Scratch, NodeStore) {
    let dir = std::env::temp_dir().join(format!("aster-vospace-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("objects")).unwrap();
    let objects = Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(dir.join("objects")).unwrap(),
    );
    let s = NodeStore::open(&dir, objects, quota).unwrap();
    (Scratch(dir), s)
}

fn p(s: &str) -> NodePath {
    NodePath::from_raw(s).unwrap()
}

async fn put(s: &NodeStore, path: &str, bytes: &[u8]) -> Result<Node, StoreError> {
    let up = s.begin_upload(&p(path), Some(bytes.len() as u64))?;
    let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(
        bytes::Bytes::copy_from_slice(bytes),
    )]);
    s.finish_upload(up, "alice", None, None, body)
        .await
        .map(|(n, _)| n)
}

async fn read_all(s: &NodeStore, path: &str) -> Vec<u8> {
    let n = s.require(&p(path)).unwrap();
    s.read_all(&n).await.unwrap().to_vec()
}

#[tokio::test]
async fn upload_move_copy_delete() {
    let (_d, s) = store(1 << 20);
    s.ensure_home("alice").unwrap();
    s.create(
        &p("alice/dir"),
        Kind::Container,
        "alice",
        BTreeMap::new(),
        None,
    )
    .unwrap();
    let n = put(&s, "alice/dir/a.txt", b"hello").await.unwrap();
    assert_eq!(n.length, 5);
    assert_eq!(n.md5.as_deref(), Some("5d41402abc4b2a76b9719d911017c592"));
    assert_eq!(s.require(&p("alice")).unwrap().length, 5);
    // Replacing keeps one node with the new bytes.
    put(&s, "alice/dir/a.txt", b"hello, world").await.unwrap();
    assert_eq!(read_all(&s, "alice/dir/a.txt").await, b"hello, world");

    // A move of the container carries its subtree; a move onto a container goes into it.
    s.create(
        &p("alice/other"),
        Kind::Container,
        "alice",
        BTreeMap::new(),
        None,
    )
    .unwrap();
    let to = s.move_node(&p("alice/dir"), &p("alice/other")).unwrap();
    assert_eq!(to.key(), "/alice/other/dir");
    assert!(s.get(&p("alice/dir/a.txt")).unwrap().is_none());
    assert_eq!(read_all(&s, "alice/other/dir/a.txt").await, b"hello, world");
    let kids = s
        .children(&p("alice/other/dir"), Sort::Name, false, None, None)
        .unwrap();
    assert_eq!(kids.len(), 1);
    assert!(matches!(
        s.move_node(&p("alice/other"), &p("alice/other/dir/x")),
        Err(StoreError::InvalidArgument(_))
    ));

    let c = s
        .copy_node(&p("alice/other/dir"), &p("alice/copy"), "alice")
        .await
        .unwrap();
    assert_eq!(c.key(), "/alice/copy");
    assert_eq!(read_all(&s, "alice/copy/a.txt").await, b"hello, world");
    assert_eq!(s.require(&p("alice")).unwrap().length, 24);

    s.delete(&p("alice/other")).await.unwrap();
    assert!(s.get(&p("alice/other/dir/a.txt")).unwrap().is_none());
    assert_eq!(read_all(&s, "alice/copy/a.txt").await, b"hello, world");
    assert!(s.delete(&p("alice")).await.is_err());
}

#[tokio::test]
async fn quota_and_missing_parents() {
    let (_d, s) = store(10);
    s.ensure_home("alice").unwrap();
    put(&s, "alice/a", b"12345678").await.unwrap();
    assert!(matches!(
        put(&s, "alice/b", b"123").await,
        Err(StoreError::Quota { .. })
    ));
    // Replacing a file counts only the difference.
    put(&s, "alice/a", b"1234567890").await.unwrap();
    assert!(matches!(
        put(&s, "alice/nodir/x", b"1").await,
        Err(StoreError::ContainerNotFound(_))
    ));
    assert!(matches!(
        s.create(
            &p("alice/a"),
            Kind::Container,
            "alice",
            BTreeMap::new(),
            None
        ),
        Err(StoreError::Duplicate(_))
    ));
    // Names with SQL wildcards stay apart from their look-alikes.
    s.create(
        &p("alice/d_1"),
        Kind::Container,
        "alice",
        BTreeMap::new(),
        None,
    )
    .unwrap();
    s.create(
        &p("alice/dx1"),
        Kind::Container,
        "alice",
        BTreeMap::new(),
        None,
    )
    .unwrap();
    s.delete(&p("alice/d_1")).await.unwrap();
    assert!(s.get(&p("alice/dx1")).unwrap().is_some());
}

#[tokio::test]
async fn new_nodes_inherit_their_parents_access() {
    let (_d, s) = store(1000);
    s.ensure_home("alice").unwrap();
    let shared = Access {
        public: false,
        group_read: vec![GroupName::new("wg").unwrap()],
        group_write: vec![],
    };
    s.create(
        &p("alice/shared"),
        Kind::Container,
        "alice",
        BTreeMap::new(),
        Some(shared.clone()),
    )
    .unwrap();
    let n = put(&s, "alice/shared/f", b"x").await.unwrap();
    assert_eq!(n.access, shared);
}
