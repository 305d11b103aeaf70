//! Every method's factor table (`Method::factors`) agrees with what it describes: the ndarray adapter its
//! initialisation builds (names, shapes, positions, parameter count), the candle variables a model carries, and the
//! tensor keys PEFT writes for the methods PEFT has (its own files in `tests/fixtures/hf/peft`).

mod hf_common;

use std::collections::BTreeSet;

use abba::adapter::section::MethodSection;
use abba::adapter::{KeyStyle, Method};
use abba::finetune::adapters::config::AdapterSection;
use abba::finetune::adapters::inject;
use abba::finetune::model::{Checkpoint, Llama};
use abba::rng::seeded;
use candle_core::{DType, Device};
use hf_common::fixture;

fn methods() -> Vec<Method> {
    let parse = |toml: &str| {
        toml::from_str::<MethodSection>(toml)
            .unwrap()
            .resolve()
            .unwrap()
    };
    vec![
        parse("method = \"lora\"\nr = 3"),
        parse("method = \"rslora\"\nr = 2"),
        parse("method = \"hira\"\nr = 3"),
        parse("method = \"abba\"\nr1 = 2\nr2 = 3"),
        Method::Full,
    ]
}

#[test]
fn tables_match_the_ndarray_adapters() {
    let (m, n) = (7, 5);
    let w0 = abba::adapter::init::gaussian::<f64, _>(m, n, 1.0, &mut seeded(1));
    for method in methods() {
        let table = method.factors((m, n));
        let init = method.init::<f64, _>(w0.view(), &mut seeded(2)).unwrap();
        let adapter = init.adapter.as_adapter();
        let factors = adapter.factors();
        let names = adapter.factor_names();
        let positions: BTreeSet<usize> = table.iter().map(|f| f.position).collect();
        assert_eq!(
            positions,
            (0..factors.len()).collect(),
            "{}: positions must be a permutation of the adapter's factors",
            method.name()
        );
        for f in &table {
            assert_eq!(
                factors[f.position].dim(),
                f.shape,
                "{} {}",
                method.name(),
                f.name
            );
            assert_eq!(names[f.position], f.name, "{}", method.name());
        }
        assert_eq!(
            method.num_params((m, n)),
            adapter.num_params(),
            "{}",
            method.name()
        );
        let keys: BTreeSet<&str> = table.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(
            keys.len(),
            table.len(),
            "{}: keys must be distinct",
            method.name()
        );
    }
}

#[test]
fn tables_match_the_candle_variables() {
    let tiny = || {
        Llama::load(
            &Checkpoint::open(&fixture("tiny-llama")).unwrap(),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    };
    for method in methods().into_iter().filter(|m| *m != Method::Full) {
        let toml = match &method {
            Method::Abba(s) => format!("method = \"abba\"\nr1 = {}\nr2 = {}", s.r1, s.r2),
            other => format!("method = \"{}\"\nr = {}", other.name(), other.ranks()[0]),
        };
        let section: AdapterSection = toml::from_str(&toml).unwrap();
        let mut model = tiny();
        let (vars, count) = inject(&mut model, &section.resolve().unwrap(), 0).unwrap();
        let mut expected = 0;
        let mut expected_names = Vec::new();
        for (path, _, lin) in model.linears() {
            let shape = lin.shape().unwrap();
            let w = lin.adapter.as_ref().unwrap();
            let table = method.factors(shape);
            for (f, v) in table.iter().zip(w.vars()) {
                assert_eq!(v.dims(), [f.shape.0, f.shape.1], "{path} {}", f.name);
                expected_names.push(format!("{path}.{}", f.key.trim_end_matches(".weight")));
            }
            expected += method.num_params(shape);
        }
        assert_eq!(count.trainable, expected, "{}", method.name());
        let names: Vec<String> = vars.into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, expected_names, "{}", method.name());
    }
}

/// The key suffixes of a PEFT adapter file (after the module path).
fn suffixes(dir: &str) -> BTreeSet<String> {
    let t = candle_core::safetensors::load(
        fixture(&format!("peft/{dir}/adapter_model.safetensors")),
        &Device::Cpu,
    )
    .unwrap();
    t.keys()
        .map(|k| {
            let at = k.find("_proj.").expect("a projection key") + "_proj.".len();
            k[at..].to_string()
        })
        .collect()
}

#[test]
fn tables_match_peft_keys() {
    let keys = |method: &Method, style: KeyStyle| -> BTreeSet<String> {
        method
            .factors((4, 4))
            .iter()
            .map(|f| f.key_in(style).to_string())
            .collect()
    };
    let [lora, rslora, hira, abba, _] = methods().try_into().unwrap();
    assert_eq!(keys(&lora, KeyStyle::Native), suffixes("lora"));
    assert_eq!(keys(&rslora, KeyStyle::Native), suffixes("rslora"));
    assert_eq!(keys(&hira, KeyStyle::Native), suffixes("hira"));
    assert_eq!(keys(&abba, KeyStyle::Loha), suffixes("loha"));
    // LoHa's w·a factors are the m×r ones: B1 is hada_w1_a.
    let b1 = abba
        .factors((4, 4))
        .into_iter()
        .find(|f| f.name == "B1")
        .unwrap();
    assert_eq!(b1.key_in(KeyStyle::Loha), "hada_w1_a");
}
