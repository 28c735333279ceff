//! What RTMPE costs the server: the Diffie-Hellman work of one handshake (the key pair and
//! the shared secret, two 1024-bit modular exponentiations) and RC4 over the bytes of one
//! connection (every byte in and out, per connection: nothing is shared).

use std::hint::black_box;
use std::time::Duration;

use corecast_common::rtmpe::{DhKeyPair, RtmpeCipher, DH_KEY_LEN};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn handshake_dh(c: &mut Criterion) {
    let client = DhKeyPair::new(&[0x37; DH_KEY_LEN]);
    c.bench_function("rtmpe/server_dh (key pair + shared secret)", |b| {
        b.iter(|| {
            let server = DhKeyPair::new(black_box(&[0x5B; DH_KEY_LEN]));
            black_box(server.shared_secret(client.public()))
        })
    });
}

fn rc4(c: &mut Criterion) {
    let secret = [0x42; DH_KEY_LEN];
    let mut cipher = RtmpeCipher::new(&secret, &[1; DH_KEY_LEN], &[2; DH_KEY_LEN]);
    let mut data = vec![0u8; 64 * 1024];
    let mut group = c.benchmark_group("rtmpe");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("rc4_encrypt_64k", |b| {
        b.iter(|| cipher.encrypt(black_box(&mut data)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = handshake_dh, rc4
}
criterion_main!(benches);
