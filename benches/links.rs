//! Link speed: training an 80-160-80 vec2vec link (800 samples, batch 32, 100 epochs), the
//! learner choice of a link into a 1,000-class label on 80 pairs, and single predictions of a
//! vec2vec link, a six-source ensemble and a seq2vec link.

use criterion::{Criterion, criterion_group, criterion_main};
use mlink::link::bench::{
    choose_wide_label, seq2vec_link, six_source_bundle, train_vec2vec, vec2vec_workload,
    wide_label_link,
};
use std::hint::black_box;

fn links(c: &mut Criterion) {
    let mut g = c.benchmark_group("links");
    g.sample_size(10);
    g.bench_function("train_vec2vec_80_160_80_800x100", |b| {
        b.iter(|| black_box(train_vec2vec(100)))
    });
    let wide = wide_label_link();
    g.bench_function("choose_link_to_1000_class_label_80_pairs", |b| {
        b.iter(|| black_box(choose_wide_label(&wide).map(|c| c.held_out)))
    });
    g.finish();
    let net = train_vec2vec(1);
    let (_, xs, _) = vec2vec_workload();
    c.bench_function("predict_vec2vec", |b| {
        b.iter(|| black_box(net.predict(&xs[0]).ok()))
    });
    let (bundle, active) = six_source_bundle();
    let act: Vec<_> = active.iter().map(|(i, v)| (*i, v)).collect();
    c.bench_function("predict_ensemble_6_sources", |b| {
        b.iter(|| black_box(bundle.predict(0, &act).ok()))
    });
    let (seq, input) = seq2vec_link();
    c.bench_function("predict_seq2vec_20_tokens", |b| {
        b.iter(|| black_box(seq.predict(&input).ok()))
    });
}

criterion_group!(benches, links);
criterion_main!(benches);
