//! The one generation loop on the real engine: greedy output equals transformers' `generate`,
//! stop strings cut the text, sampling is reproducible from its seed, the context bounds it.

mod common;

use athena::generate::{generate, FinishReason, GenerateParams, SamplingParams, Tokenizer};
use candle_core::DType;
use common::{fixture, load, Reference};

#[test]
fn greedy_generation_equals_transformers_generate() {
    for name in ["base", "gqa_normtopk", "sharded_f16"] {
        let model = load(name, DType::F32);
        let tok = Tokenizer::from_dir(&fixture(name)).unwrap();
        let r = Reference::load(name);
        let expected = r.ids("greedy_ids");
        let params = GenerateParams {
            max_tokens: expected.len(),
            ..Default::default()
        };
        let mut streamed = String::new();
        let g = generate(&model, &tok, &r.ids("ids_a"), &params, |piece| {
            streamed.push_str(piece)
        })
        .unwrap();
        assert_eq!(g.tokens, expected, "{name}");
        assert_eq!(g.finish_reason, FinishReason::Length);
        assert_eq!(g.prompt_tokens, 11);
        // What was streamed is exactly the decoded text.
        assert_eq!(streamed, g.text, "{name}");
        assert_eq!(g.text, tok.decode(&expected, true).unwrap());
    }
}

#[test]
fn a_stop_string_ends_generation_and_is_not_emitted() {
    let model = load("base", DType::F32);
    let tok = Tokenizer::from_dir(&fixture("base")).unwrap();
    let r = Reference::load("base");
    let full = generate(
        &model,
        &tok,
        &r.ids("ids_a"),
        &GenerateParams {
            max_tokens: 12,
            ..Default::default()
        },
        |_| {},
    )
    .unwrap();
    // Stop on a piece of the greedy text that starts after its first character.
    let chars: Vec<char> = full.text.chars().collect();
    assert!(chars.len() > 4, "greedy text too short: {:?}", full.text);
    let stop: String = chars[2..4].iter().collect();
    let params = GenerateParams {
        max_tokens: 12,
        stop: vec![stop.clone()],
        ..Default::default()
    };
    let mut streamed = String::new();
    let g = generate(&model, &tok, &r.ids("ids_a"), &params, |piece| {
        streamed.push_str(piece)
    })
    .unwrap();
    assert_eq!(g.finish_reason, FinishReason::Stop);
    let cut = full.text.find(&stop).unwrap();
    assert_eq!(g.text, full.text[..cut]);
    assert_eq!(streamed, g.text);
}

#[test]
fn sampling_is_reproducible_from_its_seed() {
    let model = load("base", DType::F32);
    let tok = Tokenizer::from_dir(&fixture("base")).unwrap();
    let ids = Reference::load("base").ids("ids_a");
    let run = |seed| {
        let sampling = SamplingParams {
            temperature: 1.0,
            top_p: Some(0.95),
            seed,
            ..Default::default()
        };
        generate(
            &model,
            &tok,
            &ids,
            &GenerateParams {
                max_tokens: 16,
                sampling,
                ..Default::default()
            },
            |_| {},
        )
        .unwrap()
        .tokens
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn the_context_bounds_generation_and_bad_prompts_are_refused() {
    let model = load("base", DType::F32);
    let tok = Tokenizer::from_dir(&fixture("base")).unwrap();
    // max_position_embeddings is 256: a 250-token prompt leaves room for 6 tokens.
    let prompt: Vec<u32> = (0..250).map(|i| (i * 7 % 500) as u32 + 2).collect();
    let g = generate(
        &model,
        &tok,
        &prompt,
        &GenerateParams {
            max_tokens: 100,
            ..Default::default()
        },
        |_| {},
    )
    .unwrap();
    assert_eq!(g.finish_reason, FinishReason::Length);
    assert!(
        g.tokens.len() <= 6,
        "{} tokens past the context",
        g.tokens.len()
    );
    let err = generate(&model, &tok, &[], &GenerateParams::default(), |_| {}).unwrap_err();
    assert!(err.to_string().contains("prompt"), "{err}");
    let too_long: Vec<u32> = vec![5; 256];
    let err = generate(&model, &tok, &too_long, &GenerateParams::default(), |_| {}).unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
    let bad = SamplingParams {
        temperature: f32::NAN,
        ..Default::default()
    };
    let err = generate(
        &model,
        &tok,
        &prompt[..3],
        &GenerateParams {
            sampling: bad,
            ..Default::default()
        },
        |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("temperature"), "{err}");
}

#[test]
fn generate_json_answers_under_its_schema_or_says_why_not() {
    use athena::config::OlmoeConfig;
    use athena::models::olmoe::OlmoeModel;
    let mut config = OlmoeConfig::for_model(fixture("base").to_str().unwrap());
    config.use_mlx = false;
    let mut model = OlmoeModel::new(config);
    model.load().unwrap();
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"facts": {"type": "array", "maxItems": 3,
            "items": {"type": "string", "pattern": "^[a-z ]{1,12}$"}}},
        "required": ["facts"],
        "additionalProperties": false,
    });
    let prompt = model.tokenizer().unwrap().encode("Facts:", true).unwrap();
    for seed in 0..8 {
        let params = GenerateParams {
            max_tokens: 200,
            sampling: SamplingParams {
                temperature: 1.0,
                seed,
                ..Default::default()
            },
            ..Default::default()
        };
        let v = model.generate_json(&prompt, &schema, &params).unwrap();
        let facts = v["facts"].as_array().unwrap();
        assert!(facts.len() <= 3, "{v}");
        assert!(
            facts
                .iter()
                .all(|f| f.as_str().is_some_and(|s| !s.is_empty() && s.len() <= 12)),
            "{v}"
        );
    }
    // Cut off by max_tokens: an error naming it, not broken JSON.
    let short = GenerateParams {
        max_tokens: 2,
        ..Default::default()
    };
    let e = model.generate_json(&prompt, &schema, &short).unwrap_err();
    assert!(e.to_string().contains("max_tokens"), "{e}");
    let bad = serde_json::json!({"type": "nonsense"});
    assert!(matches!(
        model.generate_json(&prompt, &bad, &short),
        Err(athena::Error::Grammar { .. })
    ));
}
