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

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// One step of two nodes publishing two livestreams while time passes.
    #[derive(Debug, Clone)]
    enum Step {
        Publish { node: usize, stream: usize },
        End { node: usize, stream: usize },
        Renew { node: usize, stream: usize },
        Sweep,
        Wait(i64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..2usize, 0..2usize).prop_map(|(node, stream)| Step::Publish { node, stream }),
            (0..2usize, 0..2usize).prop_map(|(node, stream)| Step::End { node, stream }),
            (0..2usize, 0..2usize).prop_map(|(node, stream)| Step::Renew { node, stream }),
            Just(Step::Sweep),
            (0..LEASE * 2).prop_map(Step::Wait),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Whatever the nodes do and however time passes: one live holder per livestream at
        /// most, `active` exactly while a lease runs, and each livestream's webhooks alternate
        /// `active`, `idle`, `active`, ... (never two starts or two ends in a row).
        #[test]
        fn leases_and_events_stay_consistent(steps in proptest::collection::vec(step(), 1..40)) {
            let mut db = db();
            let t = targets();
            let keys = [created(&mut db, "ls_0"), created(&mut db, "ls_1")];
            let nodes = ["n0", "n1"];
            // The token each node holds per livestream, once its publish was allowed.
            let mut held: [[Option<String>; 2]; 2] = Default::default();
            let mut now = T0;
            for (i, step) in steps.iter().enumerate() {
                let token = format!("t{i}");
                match *step {
                    Step::Publish { node, stream } => {
                        let h = holder(nodes[node], &token);
                        if authorize(&mut db, &keys[stream], &h, now, &t).expect("db").is_ok() {
                            held[node][stream] = Some(token.clone());
                        }
                    }
                    Step::End { node, stream } => {
                        if let Some(token) = held[node][stream].take() {
                            release(&mut db, &format!("ls_{stream}"), &token, now, &t).expect("db");
                        }
                    }
                    Step::Renew { node, stream } => {
                        if let Some(token) = held[node][stream].clone() {
                            let hash = key::hash(&keys[stream]);
                            let stats = SessionStats::default();
                            let renewal = Renewal {
                                id: &format!("ls_{stream}"),
                                holder: holder(nodes[node], &token),
                                key_hash: &hash,
                                since: now,
                                stats: &stats,
                            };
                            if renew(&mut db, &renewal, now, &t).expect("db").is_some() {
                                held[node][stream] = None;
                            }
                        }
                    }
                    Step::Sweep => {
                        expire(&mut db, now, &t).expect("db");
                    }
                    Step::Wait(ms) => now += ms,
                }
                for stream in 0..2 {
                    let id = format!("ls_{stream}");
                    let rows = db
                        .query("SELECT expires_at FROM sessions WHERE livestream_id = $1", &[id.as_str().into()])
                        .expect("sessions");
                    prop_assert!(rows.len() <= 1);
                    let live = rows.first().is_some_and(|r| r[0].int() > now);
                    let status = get(&mut db, &id, now).expect("get").expect("exists").status;
                    prop_assert_eq!(status == Status::Active, live);
                }
            }
            for stream in 0..2 {
                let id = format!("ls_{stream}");
                let kinds: Vec<String> = db
                    .query("SELECT body FROM outbox WHERE livestream_id = $1 ORDER BY seq", &[id.as_str().into()])
                    .expect("outbox")
                    .iter()
                    .map(|r| {
                        let body: serde_json::Value = serde_json::from_str(&r[0].text()).expect("json");
                        body["type"].as_str().unwrap_or_default().to_owned()
                    })
                    .collect();
                for (i, kind) in kinds.iter().enumerate() {
                    let want = if i % 2 == 0 { "livestream.active" } else { "livestream.idle" };
                    prop_assert_eq!(kind.as_str(), want, "{:?}", kinds);
                }
            }
        }
    }
}
