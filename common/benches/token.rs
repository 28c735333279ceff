//! Token verification, the cost every `token`-mode publish and play pays once (target: at
//! most 5 µs): a valid play token for `live/cam1`, a forged one (same length, refused at the
//! MAC), and minting one (`corecast token`, edges' pull tokens).

use std::hint::black_box;
use std::time::Duration;

use corecast_common::token::{Action, Claims, Expected, Key, KeyState, Keyring};
use criterion::{criterion_group, criterion_main, Criterion};

const NOW: u64 = 1_700_000_000;

fn keyring() -> Keyring {
    Keyring::new(vec![
        Key::new("k2", *b"the new secret, 32 bytes long..!", KeyState::Active),
        Key::new(
            "k1",
            *b"the old secret, 32 bytes long..!",
            KeyState::VerifyOnly,
        ),
    ])
    .expect("keyring")
}

fn claims() -> Claims {
    Claims {
        key_id: "k2".to_owned(),
        action: Action::Play,
        app: "live".to_owned(),
        stream: "cam1".to_owned(),
        not_before: NOW - 60,
        expires: NOW + 3600,
    }
}

fn token_benches(c: &mut Criterion) {
    let ring = keyring();
    let token = ring.sign(&claims()).expect("signs");
    // The last signature character changed: decodes, parses, fails the MAC.
    let mut forged = token.clone();
    let last = forged.pop().expect("non-empty");
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let expected = Expected {
        action: Action::Play,
        app: "live",
        stream: "cam1",
        now: NOW,
        skew_secs: 30,
    };
    let mut group = c.benchmark_group("token");
    group.bench_function("verify_play_token", |b| {
        b.iter(|| ring.verify(black_box(&token), &expected).expect("valid"));
    });
    group.bench_function("verify_forged_token", |b| {
        b.iter(|| {
            ring.verify(black_box(&forged), &expected)
                .expect_err("forged")
        });
    });
    group.bench_function("sign", |b| {
        b.iter(|| ring.sign(black_box(&claims())).expect("signs"));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: these are regression checks, not publication numbers.
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = token_benches
}
criterion_main!(benches);
