//! One ABBA-adapted layer's forward + backward (gradients of the four factors) with the Khatri–Rao path and the
//! materialised ΔW path forced, at 1024×1024, r1 = r2 = 16, 256 input rows, f32 on candle's CPU backend.
//! `abba bench --suite layer` runs the 4096×4096 case beside PyTorch, with peak memory per path.

use abba::adapter::ForwardPath;
use abba::finetune::bench::{LayerProblem, path_name};
use criterion::{Criterion, criterion_group, criterion_main};

fn adapted_layer(c: &mut Criterion) {
    let mut group = c.benchmark_group("abba-layer-1024x1024-r16-b256-f32");
    group.sample_size(10);
    let problem = LayerProblem::new(1024, 1024, 16, 16, 256, 0).expect("valid sizes");
    for path in [ForwardPath::KhatriRao, ForwardPath::Materialised] {
        group.bench_function(path_name(path), |b| {
            b.iter(|| problem.forward_backward(path).expect("forward + backward"))
        });
    }
    group.finish();
}

criterion_group!(benches, adapted_layer);
criterion_main!(benches);
