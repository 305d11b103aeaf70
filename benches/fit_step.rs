//! One Adam step and one ALS sweep of an ABBA fit at 1024×1024, r1 = r2 = 36, f32 (issue 3's benchmark).
//! `abba bench` runs the same loops beside PyTorch and writes the ratio to CSV.

use abba::bench::AbbaProblem;
use abba::fit::adam::{AdamSpec, AdamState, step};
use abba::fit::als::sweep;
use criterion::{Criterion, criterion_group, criterion_main};

fn fit_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("abba-1024x1024-r36-f32");
    group.sample_size(20);
    let mut p = AbbaProblem::new(1024, 1024, 36, 36, 0);
    let spec = AdamSpec {
        lr: 1e-3,
        ..Default::default()
    };
    let mut state = AdamState::new(&p.fitted);
    group.bench_function("adam-step", |b| {
        b.iter(|| {
            step(
                &mut p.fitted,
                &mut state,
                p.target.view(),
                p.norm2,
                spec.lr,
                &spec,
            )
        })
    });
    let mut p = AbbaProblem::new(1024, 1024, 36, 36, 0);
    group.sample_size(10);
    group.bench_function("als-sweep", |b| {
        b.iter(|| sweep(&mut p.fitted, p.target.view(), p.norm2, 1e-8).unwrap())
    });
    group.finish();
}

criterion_group!(benches, fit_step);
criterion_main!(benches);
