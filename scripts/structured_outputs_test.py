#!/usr/bin/env python3
"""Structured outputs against a running `athena serve`, with the official openai client and
jsonschema: generations under JSON schemas all parse and validate, the client's
`chat.completions.parse` with a Pydantic model works, tool calls round-trip (whole and
streamed), and a schema the server cannot enforce is a 400. Prints one JSON summary line and
exits non-zero on the first failed check.

    python scripts/structured_outputs_test.py http://127.0.0.1:PORT [GENERATIONS_PER_SCHEMA]

The server must run the fixture model (fixtures/models/base, random weights: the hardest
adversary a constraint can meet) with a context of at least 1024 tokens.
"""

import json
import sys
from typing import Literal, Optional

import jsonschema
import openai
from pydantic import BaseModel, Field

BASE = sys.argv[1].rstrip("/")
PER_SCHEMA = int(sys.argv[2]) if len(sys.argv) > 2 else 200
client = openai.OpenAI(base_url=BASE + "/v1", api_key="none", max_retries=0, timeout=300)
MODEL = client.models.list().data[0].id
results = {}


def check(name, cond, detail=""):
    if not cond:
        print(json.dumps({"failed": name, "detail": str(detail)[:2000]}))
        sys.exit(1)
    results[name] = results.get(name, "ok")


# Five schemas, each bounded so that a generation always ends: strings have a maxLength or a
# pattern, arrays a maxItems, objects no extra properties.
SCHEMAS = {
    "nested_objects": {
        "type": "object",
        "properties": {
            "person": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 12},
                    "address": {
                        "type": "object",
                        "properties": {
                            "city": {"enum": ["Paris", "Rome", "Oslo"]},
                            "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                        },
                        "required": ["city", "zip"],
                        "additionalProperties": False,
                    },
                },
                "required": ["name", "address"],
                "additionalProperties": False,
            },
            "active": {"type": "boolean"},
        },
        "required": ["person", "active"],
        "additionalProperties": False,
    },
    "bounded_arrays": {
        "type": "object",
        "properties": {
            "tags": {
                "type": "array",
                "items": {"type": "string", "pattern": "^[a-z]{1,6}$"},
                "minItems": 1,
                "maxItems": 4,
            },
            "scores": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0, "maximum": 100},
                "minItems": 2,
                "maxItems": 3,
            },
        },
        "required": ["tags", "scores"],
        "additionalProperties": False,
    },
    "enums": {
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue"]},
            "size": {"type": "string", "enum": ["S", "M", "L", "XL"]},
            "mixed": {"enum": [1, "two", None, True]},
        },
        "required": ["color", "size", "mixed"],
        "additionalProperties": False,
    },
    "number_ranges": {
        "type": "object",
        "properties": {
            "celsius": {"type": "number", "minimum": -50, "maximum": 50},
            "count": {"type": "integer", "minimum": 1, "maximum": 1000},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "offset": {"type": "integer", "minimum": -20, "exclusiveMaximum": -10},
        },
        "required": ["celsius", "count", "ratio", "offset"],
        "additionalProperties": False,
    },
    "patterns_and_optional_fields": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
            "code": {"type": "string", "pattern": "^x[0-9a-f]{2}$"},
            "note": {"type": "string", "maxLength": 8},
            "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        },
        "required": ["id"],
        "additionalProperties": False,
    },
}

MSGS = [{"role": "user", "content": "Answer in JSON."}]
usage_tokens = 0
for name, schema in SCHEMAS.items():
    fmt = {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
    outputs, finishes, seed = [], {}, 0
    while len(outputs) < PER_SCHEMA:
        n = min(16, PER_SCHEMA - len(outputs))
        r = client.chat.completions.create(
            model=MODEL, messages=MSGS, response_format=fmt, n=n, temperature=1.0, seed=seed,
            max_tokens=400,
        )
        seed += 1000
        usage_tokens += r.usage.completion_tokens
        for c in r.choices:
            finishes[c.finish_reason] = finishes.get(c.finish_reason, 0) + 1
            outputs.append(c.message.content)
    optional_seen = set()
    for text in outputs:
        try:
            value = json.loads(text)
        except ValueError as e:
            check(f"{name}_parses", False, f"{e}: {text!r} (finish reasons {finishes})")
        try:
            jsonschema.validate(value, schema)
        except jsonschema.ValidationError as e:
            check(f"{name}_validates", False, f"{e.message}: {text!r}")
        optional_seen.update(k for k in value if k not in schema["required"])
    check(f"{name}_all_finish", finishes == {"stop": PER_SCHEMA}, finishes)
    results[name] = f"{PER_SCHEMA}/{PER_SCHEMA} valid"
    if name == "patterns_and_optional_fields":
        check("optional_fields_are_drawn", optional_seen, optional_seen)

# A text completion under json_object.
r = client.completions.create(
    model=MODEL, prompt="JSON:", max_tokens=200, temperature=1.0, seed=5,
    extra_body={"response_format": {"type": "json_object"}},
)
if r.choices[0].finish_reason == "stop":
    check("completion_json_object", isinstance(json.loads(r.choices[0].text), dict), r)


# The official client's parse() with a Pydantic model (strict schema, bounded fields).
class Weather(BaseModel):
    city: Literal["Paris", "Rome"]
    celsius: int = Field(ge=-30, le=45)
    note: str = Field(max_length=10)
    wind: Optional[Literal["calm", "gale"]]


for seed in range(4):
    p = client.chat.completions.parse(
        model=MODEL, messages=MSGS, response_format=Weather, temperature=1.0, seed=seed,
        max_tokens=300,
    )
    parsed = p.choices[0].message.parsed
    check("parse_pydantic", isinstance(parsed, Weather) and -30 <= parsed.celsius <= 45, p)

# Tool calls: required, named, auto, then the round trip with the result.
TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}},
                       "required": ["city"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "get_time", "parameters": {"type": "object", "properties": {},
                                           "additionalProperties": False}}},
]
ASK = [{"role": "user", "content": "Weather in Paris?"}]
r = client.chat.completions.create(
    model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", temperature=1.0, seed=3,
    max_tokens=100,
)
m = r.choices[0].message
check("tool_required", r.choices[0].finish_reason == "tool_calls" and m.tool_calls
      and m.content is None, r)
call = m.tool_calls[0]
check("tool_call_shape", call.id.startswith("call_") and call.type == "function"
      and call.function.name in ("get_weather", "get_time"), call)
args = json.loads(call.function.arguments)
spec = next(t for t in TOOLS if t["function"]["name"] == call.function.name)
jsonschema.validate(args, spec["function"]["parameters"])

r = client.chat.completions.create(
    model=MODEL, messages=ASK, tools=TOOLS, temperature=1.0, seed=4, max_tokens=100,
    tool_choice={"type": "function", "function": {"name": "get_weather"}},
)
call = r.choices[0].message.tool_calls[0]
check("tool_named", call.function.name == "get_weather"
      and json.loads(call.function.arguments)["city"] in ("Paris", "Rome"), r)

# The round trip: the call and its result go back; the answer is text or another call.
history = ASK + [
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function",
         "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
    {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"celsius": 21})},
]
kinds = set()
for seed in range(8):
    r = client.chat.completions.create(
        model=MODEL, messages=history, tools=TOOLS, tool_choice="auto", temperature=1.0,
        seed=seed, max_tokens=40,
    )
    c = r.choices[0]
    if c.message.tool_calls:
        check("auto_call_finish", c.finish_reason == "tool_calls", r)
        json.loads(c.message.tool_calls[0].function.arguments)
        kinds.add("call")
    else:
        check("auto_text", isinstance(c.message.content, str)
              and not c.message.content.startswith("<tool_call>"), r)
        kinds.add("text")
check("round_trip", kinds, kinds)
results["round_trip"] = sorted(kinds)

# Streamed: the deltas add up to the whole call, as the client accumulates them.
stream = client.chat.completions.create(
    model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", temperature=1.0, seed=3,
    max_tokens=100, stream=True,
)
name, arguments, ids, finish = None, "", set(), None
for chunk in stream:
    for ch in chunk.choices:
        for d in ch.delta.tool_calls or []:
            if d.id:
                ids.add(d.id)
            if d.function and d.function.name:
                name = d.function.name
            if d.function and d.function.arguments:
                arguments += d.function.arguments
        finish = ch.finish_reason or finish
check("tool_stream", finish == "tool_calls" and len(ids) == 1 and name, (name, ids, finish))
jsonschema.validate(json.loads(arguments),
                    next(t for t in TOOLS if t["function"]["name"] == name)["function"]["parameters"])

# tool_choice none: plain text, no call.
r = client.chat.completions.create(
    model=MODEL, messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=8, temperature=0,
)
check("tool_none", r.choices[0].message.tool_calls is None
      and isinstance(r.choices[0].message.content, str), r)

# What cannot be enforced is a 400 naming the field.
for body, param in [
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "bad", "schema": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}}},
     "response_format"),
    ({"tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": {
            "a": {"type": "string", "pattern": "(unclosed"}}}}}]}, "tools"),
]:
    try:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, **body)
        check(f"refused_{param}", False, "accepted")
    except openai.BadRequestError as e:
        check(f"refused_{param}", e.status_code == 400 and e.body.get("param") == param, e.body)

results["completion_tokens"] = usage_tokens
print(json.dumps(results))
