//! Synthetic fact streams: people and things whose attributes are stated, changed,
//! retracted and restated, drawn from a seed (the format is [`super::stream`]'s).

use std::collections::BTreeMap;

use super::stream::{StreamFact, StreamOp};
use crate::train::rng::SplitMix64;

/// How a stream is drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    /// How many facts. Default: 500.
    pub facts: usize,
    /// How many users (`u1`, `u2`, ...), each fact going to one drawn uniformly. Default: 4.
    pub users: usize,
    /// The seed; the same config gives the same stream on every platform. Default: 0.
    pub seed: u64,
    /// Write each line's `state`. Default: false.
    pub with_state: bool,
    /// Relative weights of ADD, UPDATE, DELETE and NOOP. An operation the state does not
    /// allow (anything but ADD in an empty memory, ADD in a full one) is drawn again.
    /// Default: `[0.35, 0.25, 0.15, 0.25]`.
    pub weights: [f64; 4],
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            facts: 500,
            users: 4,
            seed: 0,
            with_state: false,
            weights: [0.35, 0.25, 0.15, 0.25],
        }
    }
}

/// One attribute of a subject: its values and how each kind of fact about it is worded.
/// `{n}` is the subject, `{v}` the value, `{o}` the old value, `{w}` the new one.
struct Attribute {
    name: &'static str,
    values: &'static [&'static str],
    /// How a new value is stated (ADD); the first is the plain statement.
    add: &'static [&'static str],
    /// Restatements of a held value (NOOP).
    same: &'static [&'static str],
    /// A changed value (UPDATE).
    update: &'static [&'static str],
    /// A value no longer true (DELETE).
    delete: &'static [&'static str],
}

/// Subjects that share their attributes.
struct Kind {
    subjects: &'static [&'static str],
    attributes: &'static [Attribute],
}

const PEOPLE: Kind = Kind {
    subjects: &[
        "Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy",
        "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil",
    ],
    attributes: &[
        Attribute {
            name: "city",
            values: &[
                "Paris", "Rome", "Berlin", "Tokyo", "Lima", "Oslo", "Cairo", "Madrid",
            ],
            add: &["{n} lives in {v}.", "{n} started living in {v}."],
            same: &[
                "{n} lives in {v}.",
                "{n} is living in {v}.",
                "{n}'s home is in {v}.",
            ],
            update: &["{n} moved to {w}.", "{n} moved from {o} to {w}."],
            delete: &["{n} no longer lives in {o}.", "{n} left {o}."],
        },
        Attribute {
            name: "job",
            values: &[
                "teacher", "nurse", "pilot", "chef", "lawyer", "baker", "doctor", "farmer",
            ],
            add: &["{n} works as a {v}.", "{n} started working as a {v}."],
            same: &[
                "{n} works as a {v}.",
                "{n} is a {v}.",
                "{n} is employed as a {v}.",
            ],
            update: &[
                "{n} now works as a {w}.",
                "{n} changed jobs from {o} to {w}.",
            ],
            delete: &["{n} quit working as a {o}.", "{n} is no longer a {o}."],
        },
        Attribute {
            name: "pet",
            values: &[
                "cat", "dog", "parrot", "rabbit", "hamster", "turtle", "goldfish", "horse",
            ],
            add: &["{n} has a {v}.", "{n} got a {v}."],
            same: &["{n} has a {v}.", "{n} owns a {v}.", "{n} keeps a {v}."],
            update: &[
                "{n} traded the {o} for a {w}.",
                "{n} now has a {w} instead.",
            ],
            delete: &["{n} no longer has a {o}.", "{n} gave away the {o}."],
        },
        Attribute {
            name: "drink",
            values: &[
                "coffee", "tea", "cocoa", "lemonade", "kombucha", "milk", "juice", "cider",
            ],
            add: &["{n} likes {v}.", "{n} started drinking {v}."],
            same: &[
                "{n} likes {v}.",
                "{n} enjoys {v}.",
                "{n}'s favourite drink is {v}.",
            ],
            update: &["{n} switched from {o} to {w}.", "{n} now prefers {w}."],
            delete: &["{n} stopped drinking {o}.", "{n} no longer likes {o}."],
        },
        Attribute {
            name: "hobby",
            values: &[
                "piano", "chess", "tennis", "guitar", "golf", "violin", "football", "cricket",
            ],
            add: &["{n} plays {v}.", "{n} started learning {v}."],
            same: &[
                "{n} plays {v}.",
                "{n} likes to play {v}.",
                "{n}'s hobby is {v}.",
            ],
            update: &["{n} swapped {o} for {w}.", "{n} gave up {o} for {w}."],
            delete: &["{n} no longer plays {o}.", "{n} gave up {o}."],
        },
    ],
};

const THINGS: Kind = Kind {
    subjects: &[
        "car", "bike", "laptop", "passport", "umbrella", "camera", "toolbox", "suitcase",
    ],
    attributes: &[Attribute {
        name: "place",
        values: &[
            "garage", "kitchen", "office", "attic", "basement", "hallway", "bedroom", "shed",
        ],
        add: &["The {n} is in the {v}.", "The {n} was put in the {v}."],
        same: &[
            "The {n} is in the {v}.",
            "The {n} sits in the {v}.",
            "The {n} is kept in the {v}.",
        ],
        update: &[
            "The {n} was moved to the {w}.",
            "The {n} went from the {o} to the {w}.",
        ],
        delete: &[
            "The {n} is no longer in the {o}.",
            "The {n} was taken out of the {o}.",
        ],
    }],
};

const KINDS: [&Kind; 2] = [&PEOPLE, &THINGS];

fn fill(template: &str, subject: &str, value: &str, old: &str, new: &str) -> String {
    template
        .replace("{n}", subject)
        .replace("{v}", value)
        .replace("{o}", old)
        .replace("{w}", new)
}

/// A slot: (kind, subject, attribute) indexes.
type Slot = (usize, usize, usize);

fn all_slots() -> Vec<Slot> {
    let mut slots = Vec::new();
    for (k, kind) in KINDS.iter().enumerate() {
        for s in 0..kind.subjects.len() {
            for a in 0..kind.attributes.len() {
                slots.push((k, s, a));
            }
        }
    }
    slots
}

fn pick<'a>(rng: &mut SplitMix64, items: &'a [&'a str]) -> &'a str {
    items[rng.below(items.len())]
}

/// A stream drawn from `config`: people (sixteen first names; a city, a job, a pet, a drink,
/// a hobby) and things (eight objects; the room each is in), each fact to one of the users.
///
/// ADD states a new slot plainly or as a change ("started ...", "got a ..."); UPDATE words a
/// new value ("moved to", "now works as", "traded ... for", "switched from ... to"); DELETE
/// retracts the held value ("no longer", "quit", "left"); NOOP restates the held value in
/// its own or an equivalent wording, so some NOOPs repeat the memory's text exactly.
pub fn synthetic_stream(config: &StreamConfig) -> Vec<StreamFact> {
    let mut rng = SplitMix64::new(config.seed);
    let slots = all_slots();
    let users = config.users.max(1);
    // Per user: slot -> (value index, text held).
    let mut held: Vec<BTreeMap<Slot, (usize, String)>> = vec![BTreeMap::new(); users];
    let total: f64 = config.weights.iter().map(|w| w.max(0.0)).sum();
    let mut out = Vec::with_capacity(config.facts);
    for _ in 0..config.facts {
        let user = rng.below(users);
        let memory = &mut held[user];
        let op = loop {
            let op = if total > 0.0 {
                let mut x = rng.next_f64() * total;
                let mut chosen = StreamOp::Noop;
                for (op, w) in StreamOp::ALL.iter().zip(config.weights) {
                    if x < w.max(0.0) {
                        chosen = *op;
                        break;
                    }
                    x -= w.max(0.0);
                }
                chosen
            } else {
                StreamOp::ALL[rng.below(4)]
            };
            let allowed = match op {
                StreamOp::Add => memory.len() < slots.len(),
                _ => !memory.is_empty(),
            };
            if allowed {
                break op;
            }
        };
        let slot = if op == StreamOp::Add {
            let free: Vec<Slot> = slots
                .iter()
                .copied()
                .filter(|s| !memory.contains_key(s))
                .collect();
            free[rng.below(free.len())]
        } else {
            let keys: Vec<Slot> = memory.keys().copied().collect();
            keys[rng.below(keys.len())]
        };
        let kind = KINDS[slot.0];
        let subject = kind.subjects[slot.1];
        let attr = &kind.attributes[slot.2];
        let key = format!("{subject}/{}", attr.name);
        let (fact, target) = match op {
            StreamOp::Add => {
                let v = rng.below(attr.values.len());
                let fact = fill(pick(&mut rng, attr.add), subject, attr.values[v], "", "");
                memory.insert(slot, (v, fact.clone()));
                (fact, None)
            }
            StreamOp::Update => {
                let (old, before) = memory[&slot].clone();
                let new = (old + 1 + rng.below(attr.values.len() - 1)) % attr.values.len();
                let template = pick(&mut rng, attr.update);
                let fact = fill(template, subject, "", attr.values[old], attr.values[new]);
                memory.insert(slot, (new, fact.clone()));
                (fact, Some(before))
            }
            StreamOp::Delete => {
                let (old, before) = memory[&slot].clone();
                let template = pick(&mut rng, attr.delete);
                let fact = fill(template, subject, "", attr.values[old], "");
                memory.remove(&slot);
                (fact, Some(before))
            }
            StreamOp::Noop => {
                let (v, _) = memory[&slot];
                let fact = fill(pick(&mut rng, attr.same), subject, attr.values[v], "", "");
                (fact, None)
            }
        };
        let state = config.with_state.then(|| {
            let mut texts: Vec<String> = memory.values().map(|(_, t)| t.clone()).collect();
            texts.sort();
            texts
        });
        out.push(StreamFact {
            user_id: format!("u{}", user + 1),
            fact,
            op,
            key,
            target,
            state,
        });
    }
    out
}
