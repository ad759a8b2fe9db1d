//! Micro-benchmarks of proto's hot paths, the work a server does per datagram before and after
//! the system calls: encoding a reply envelope, decoding a request envelope, classifying plain
//! text and JSON, and writing and reading a probe. Where proto has a borrowing view (what the
//! server's hot path uses) beside the owned value, both are measured, side by side.
//!
//! `cargo bench -p proto --bench codec` (add `-- --quick` for a short run). `cargo xtask bench`
//! measures whole programs; these say which part of a datagram's path costs what.

#![allow(missing_docs)] // criterion_group! and criterion_main! generate undocumented items.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use proto::probe::{probe_seq, write_probe};
use proto::{Envelope, EnvelopeView, Id, RECV_BUFFER, classify, classify_view};

/// The tutorial's request, as a JSON client sends it.
const REQUEST: &[u8] = br#"{"v":1,"id":4242,"kind":"request","body":"Hello Server!!","ack":4242}"#;

/// The tutorial's request as plain text.
const PLAIN: &[u8] = b"Hello Server!!";

fn encode(c: &mut Criterion) {
    let Some(id) = Id::new(4242) else {
        return;
    };
    let reply = Envelope::Reply {
        id,
        body: "Access count: 123456".to_owned(),
    };
    let mut out = Vec::with_capacity(128);
    c.bench_function("encode reply envelope", |b| {
        b.iter(|| {
            out.clear();
            black_box(&reply).encode(&mut out);
            black_box(out.len())
        })
    });
    let view = reply.view();
    c.bench_function("encode reply view", |b| {
        b.iter(|| {
            out.clear();
            black_box(&view).encode(&mut out);
            black_box(out.len())
        })
    });
}

fn decode(c: &mut Criterion) {
    c.bench_function("decode request envelope", |b| {
        b.iter(|| Envelope::decode(black_box(REQUEST), RECV_BUFFER).is_ok())
    });
    c.bench_function("decode request view", |b| {
        b.iter(|| EnvelopeView::decode(black_box(REQUEST), RECV_BUFFER).is_ok())
    });
}

fn classify_datagrams(c: &mut Criterion) {
    c.bench_function("classify plain", |b| {
        b.iter(|| classify(black_box(PLAIN), RECV_BUFFER))
    });
    c.bench_function("classify json request", |b| {
        b.iter(|| classify(black_box(REQUEST), RECV_BUFFER))
    });
    c.bench_function("classify_view json request", |b| {
        b.iter(|| classify_view(black_box(REQUEST), RECV_BUFFER))
    });
}

fn probes(c: &mut Criterion) {
    let mut out = Vec::with_capacity(1024);
    c.bench_function("write_probe 14 B", |b| {
        let mut seq = 0u64;
        b.iter(|| {
            seq += 1;
            write_probe(black_box(seq), 14, &mut out);
            black_box(out.len())
        })
    });
    c.bench_function("write_probe 1 KiB", |b| {
        let mut seq = 0u64;
        b.iter(|| {
            seq += 1;
            write_probe(black_box(seq), 1024, &mut out);
            black_box(out.len())
        })
    });
    write_probe(1_234_567, 1024, &mut out);
    let probe = out.clone();
    c.bench_function("probe_seq 1 KiB", |b| {
        b.iter(|| probe_seq(black_box(&probe)))
    });
}

criterion_group!(benches, encode, decode, classify_datagrams, probes);
criterion_main!(benches);
