//! The store's rules against an in-memory SQLite, time moved by hand.

use super::*;
use crate::registry::db::Sqlite;
use crate::registry::model::Status;
use crate::registry::schema;
use crate::registry::webhook;

const T0: i64 = 1_700_000_000_000;
const LEASE: i64 = 15_000;

fn db() -> Sqlite {
    let mut db = Sqlite::open(":memory:").expect("open");
    schema::migrate(&mut db).expect("migrate");
    db
}

fn targets() -> Vec<String> {
    vec!["http://127.0.0.1:9/hook".to_owned()]
}

fn holder<'a>(node: &'a str, token: &'a str) -> Holder<'a> {
    Holder {
        node,
        core: 0,
        token,
        lease_ms: LEASE,
    }
}

/// A livestream and its key.
fn created(db: &mut Sqlite, id: &str) -> String {
    let k = key::new_key();
    create(db, id, "show", &key::hash(&k), &json!({}), T0).expect("create");
    k
}

/// The event types queued, oldest first.
fn events(db: &mut Sqlite) -> Vec<String> {
    db.query("SELECT body FROM outbox ORDER BY seq", &[])
        .expect("outbox")
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_str(&r[0].text()).expect("json");
            body["type"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

fn status(db: &mut Sqlite, id: &str, now: i64) -> Status {
    get(db, id, now).expect("get").expect("exists").status
}

#[test]
fn a_created_livestream_is_idle_and_listed() {
    let mut db = db();
    created(&mut db, "ls_a");
    created(&mut db, "ls_b");
    assert_eq!(status(&mut db, "ls_a", T0), Status::Idle);
    let (page, total) = list(&mut db, 1, 1, T0).expect("list");
    assert_eq!((page.len(), total), (1, 2));
    assert_eq!(page[0].id, "ls_b");
    assert!(get(&mut db, "ls_nope", T0).expect("get").is_none());
}

#[test]
fn a_key_authorizes_its_livestream_which_goes_active_then_idle() {
    let mut db = db();
    let k = created(&mut db, "ls_a");
    let t = targets();
    let found = authorize(&mut db, &k, &holder("n1", "t1"), T0, &t)
        .expect("db")
        .expect("authorized");
    assert_eq!(found.id, "ls_a");
    assert_eq!(found.status, Status::Active);
    assert_eq!(found.session.as_ref().map(|s| s.node.as_str()), Some("n1"));
    assert!(release(&mut db, "ls_a", "t1", T0 + 10, &t).expect("release"));
    assert_eq!(status(&mut db, "ls_a", T0 + 10), Status::Idle);
    assert_eq!(events(&mut db), ["livestream.active", "livestream.idle"]);
}

#[test]
fn wrong_disabled_and_elsewhere_keys_are_refused() {
    let mut db = db();
    let k = created(&mut db, "ls_a");
    let t = targets();
    let refused = |db: &mut Sqlite, key: &str, node: &str, now| {
        authorize(db, key, &holder(node, "t"), now, &t)
            .expect("db")
            .err()
    };
    assert_eq!(
        refused(&mut db, &key::new_key(), "n1", T0),
        Some(Refusal::UnknownKey)
    );
    assert_eq!(refused(&mut db, &k, "n1", T0), None);
    assert_eq!(
        refused(&mut db, &k, "n2", T0 + 1),
        Some(Refusal::LiveElsewhere("n1".into()))
    );
    // The same node reconnecting takes its own lease over.
    assert_eq!(refused(&mut db, &k, "n1", T0 + 2), None);
    // Once n1's lease ran out, n2 may.
    assert_eq!(refused(&mut db, &k, "n2", T0 + 2 + LEASE), None);
    set_disabled(&mut db, "ls_a", true, T0, &t).expect("disable");
    assert_eq!(refused(&mut db, &k, "n2", T0), Some(Refusal::Disabled));
    set_disabled(&mut db, "ls_a", false, T0, &t).expect("enable");
    let new = key::new_key();
    reset_key(&mut db, "ls_a", &key::hash(&new), T0).expect("reset");
    assert_eq!(refused(&mut db, &k, "n2", T0), Some(Refusal::UnknownKey));
}

#[test]
fn renewals_keep_a_lease_and_say_when_a_publish_must_end() {
    let mut db = db();
    let k = created(&mut db, "ls_a");
    let t = targets();
    let h = holder("n1", "t1");
    authorize(&mut db, &k, &h, T0, &t).expect("db").expect("ok");
    let hash = key::hash(&k);
    let stats = SessionStats {
        viewers: 3,
        ..SessionStats::default()
    };
    let renewal = Renewal {
        id: "ls_a",
        holder: h.clone(),
        key_hash: &hash,
        since: T0,
        stats: &stats,
    };
    let later = T0 + LEASE - 1;
    assert_eq!(renew(&mut db, &renewal, later, &t).expect("renew"), None);
    // Renewed: still active past the first lease, with the stats reported.
    let found = get(&mut db, "ls_a", T0 + LEASE + 5)
        .expect("get")
        .expect("found");
    assert_eq!(found.status, Status::Active);
    assert_eq!(found.session.map(|s| s.stats.viewers), Some(3));
    set_disabled(&mut db, "ls_a", true, later, &t).expect("disable");
    assert_eq!(
        renew(&mut db, &renewal, later, &t).expect("renew"),
        Some(StopReason::Disabled)
    );
    set_disabled(&mut db, "ls_a", false, later, &t).expect("enable");
    reset_key(&mut db, "ls_a", &key::hash(&key::new_key()), later).expect("reset");
    assert_eq!(
        renew(&mut db, &renewal, later, &t).expect("renew"),
        Some(StopReason::KeyReset)
    );
    delete(&mut db, "ls_a").expect("delete");
    assert_eq!(
        renew(&mut db, &renewal, later, &t).expect("renew"),
        Some(StopReason::Deleted)
    );
}

#[test]
fn a_dead_nodes_lease_runs_out_and_is_swept_idle() {
    let mut db = db();
    let k = created(&mut db, "ls_a");
    let t = targets();
    authorize(&mut db, &k, &holder("n1", "t1"), T0, &t)
        .expect("db")
        .expect("ok");
    assert_eq!(expire(&mut db, T0 + LEASE - 1, &t).expect("sweep"), 0);
    assert_eq!(status(&mut db, "ls_a", T0 + LEASE), Status::Idle);
    assert_eq!(expire(&mut db, T0 + LEASE, &t).expect("sweep"), 1);
    assert_eq!(events(&mut db), ["livestream.active", "livestream.idle"]);
}

#[test]
fn only_the_oldest_event_of_a_livestream_is_due_and_a_claim_is_exclusive() {
    let mut db = db();
    let t = targets();
    let ka = created(&mut db, "ls_a");
    let kb = created(&mut db, "ls_b");
    authorize(&mut db, &ka, &holder("n1", "ta"), T0, &t)
        .expect("db")
        .expect("ok");
    release(&mut db, "ls_a", "ta", T0, &t).expect("release");
    authorize(&mut db, &kb, &holder("n1", "tb"), T0, &t)
        .expect("db")
        .expect("ok");
    let due = webhook::due(&mut db, T0).expect("due");
    assert_eq!(due.len(), 2, "one per livestream: {due:?}");
    assert!(due[0].body.contains("livestream.active"));
    assert!(webhook::claim(&mut db, due[0].seq, T0).expect("claim"));
    assert!(!webhook::claim(&mut db, due[0].seq, T0).expect("claim again"));
    // Claimed, so neither it nor the idle behind it is due.
    assert_eq!(webhook::due(&mut db, T0).expect("due").len(), 1);
    webhook::retry(&mut db, due[0].seq, 1, T0 + 1000).expect("retry");
    assert_eq!(webhook::due(&mut db, T0 + 999).expect("due").len(), 1);
    webhook::remove(&mut db, due[0].seq).expect("delivered");
    let next = webhook::due(&mut db, T0).expect("due");
    assert!(next.iter().any(|d| d.body.contains("livestream.idle")));
}
