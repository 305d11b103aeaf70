//! Parameter counts and equal-budget matching.

use abba::adapter::Method;
use abba::adapter::MethodKind;
use abba::budget::{AbbaRankRule, Budget, matched, total_params};

/// q, k, v, o, gate, up, down of one Llama-3.2-1B layer as (out, in): hidden 2048, kv 512, FFN 8192.
fn llama_3_2_1b_shapes() -> Vec<(usize, usize)> {
    let layer = [
        (2048, 2048),
        (512, 2048),
        (512, 2048),
        (2048, 2048),
        (8192, 2048),
        (8192, 2048),
        (2048, 8192),
    ];
    (0..16).flat_map(|_| layer).collect()
}

#[test]
fn llama_3_2_1b_lora_r32_and_abba_16_16_both_train_22_544_384_parameters() {
    // 22,544,384 is what PEFT prints for LoRA r=32 on all seven projections of Llama-3.2-1B.
    let shapes = llama_3_2_1b_shapes();
    assert_eq!(total_params(&Method::lora(32), &shapes), 22_544_384);
    assert_eq!(total_params(&Method::abba(16, 16), &shapes), 22_544_384);
    let abba = matched(
        MethodKind::Abba,
        Budget::LoraRank(32),
        AbbaRankRule::Half,
        (2048, 2048),
    )
    .unwrap();
    assert_eq!(abba, Method::abba(16, 16));
}

#[test]
fn rules_and_budgets_resolve_as_documented() {
    let shape = (1024, 1024);
    let m = |k, b, rule| matched(k, b, rule, shape).unwrap();
    assert_eq!(
        m(MethodKind::Abba, Budget::LoraRank(8), AbbaRankRule::Full),
        Method::abba(8, 8)
    );
    assert_eq!(
        m(MethodKind::Abba, Budget::LoraRank(9), AbbaRankRule::Half),
        Method::abba(5, 4)
    );
    assert_eq!(
        m(
            MethodKind::Abba,
            Budget::LoraRank(10),
            AbbaRankRule::Split { r1: 3 }
        ),
        Method::abba(3, 7)
    );
    assert_eq!(
        m(
            MethodKind::Lora,
            Budget::Params(2048 * 5 + 7),
            AbbaRankRule::Half
        ),
        Method::lora(5)
    );
    assert_eq!(
        m(MethodKind::Hira, Budget::LoraRank(5), AbbaRankRule::Half),
        Method::hira(5)
    );
    // From r = 4 on, (r/2)² ≥ r: ABBA reaches at least LoRA's rank at the same budget (r = 2 gives rank 1).
    for r in [4, 8, 72] {
        let lora = m(MethodKind::Lora, Budget::LoraRank(r), AbbaRankRule::Half);
        let abba = m(MethodKind::Abba, Budget::LoraRank(r), AbbaRankRule::Half);
        assert_eq!(lora.num_params(shape), abba.num_params(shape));
        assert!(abba.max_rank(shape) >= lora.max_rank(shape));
    }
}

#[test]
fn infeasible_budgets_are_errors() {
    let infeasible = |kind, budget| matched(kind, budget, AbbaRankRule::Half, (64, 64)).is_err();
    assert!(
        infeasible(MethodKind::Lora, Budget::Params(100)),
        "less than one rank's m + n"
    );
    assert!(
        infeasible(MethodKind::Full, Budget::Params(100)),
        "less than m·n"
    );
    assert!(
        infeasible(MethodKind::Abba, Budget::LoraRank(1)),
        "half of r = 1 leaves r2 = 0"
    );
    assert!(
        infeasible(MethodKind::Lora, Budget::LoraRank(65)),
        "rank above min(m, n)"
    );
}
