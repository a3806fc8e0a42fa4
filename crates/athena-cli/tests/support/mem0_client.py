"""Drives `athena serve --memory-db` with the official mem0 client (mem0ai 2.2.1) and checks
the result of every call: add, search, get_all, get, update, delete, delete_all and history,
with an API key (`Authorization: Token KEY`), and that one user's client can neither see nor
change another user's memories.

    python mem0_client.py URL KEY

Run from the pinned venv (crates/athena-cli/tests/memory_mem0.rs finds it). Prints `ok` last.
"""

import sys

import httpx
from mem0 import MemoryClient
from mem0.exceptions import AuthenticationError, MemoryNotFoundError, ValidationError

URL, KEY = sys.argv[1], sys.argv[2]


def pinned(user):
    """A client pinned to `user`: the mem0 client sends no scope with a memory id, so athena
    takes the caller's scope from a default query parameter of the client's httpx client."""
    return MemoryClient(
        api_key=KEY, host=URL, client=httpx.Client(params={"user_id": user}, timeout=300)
    )


def raises(kind, call, says=""):
    try:
        call()
    except kind as e:
        assert says in str(e), f"{kind.__name__} without {says!r}: {e}"
        return e
    raise AssertionError(f"{call} did not raise {kind.__name__}")


# A wrong key is refused when the client is constructed (it pings the server).
raises(ValueError, lambda: MemoryClient(api_key="wrong", host=URL), "401")

alice, bob = pinned("alice"), pinned("bob")
ALICE = {"user_id": "alice"}

# add: each user message is a fact; the others are context.
added = alice.add(
    [
        {"role": "user", "content": "I live in Paris"},
        {"role": "assistant", "content": "Paris is lovely"},
        {"role": "user", "content": "I like green tea"},
    ],
    filters=ALICE,
    infer=False,
    metadata={"source": "chat"},
)["results"]
assert [(e["event"], e["memory"]) for e in added] == [
    ("ADD", "I live in Paris"),
    ("ADD", "I like green tea"),
], added
paris, tea = added[0]["id"], added[1]["id"]
nurse = alice.add("I work as a nurse", filters=ALICE, infer=False)["results"]
assert [e["event"] for e in nurse] == ["ADD"], nurse
again = alice.add("I like green tea", filters=ALICE, infer=False)["results"]
assert again == [{"id": tea, "event": "NONE", "memory": "I like green tea",
                  "previous_memory": None}], again
# mem0's default: the language model extracts the facts, under a JSON schema, so even the
# fixture's random weights give facts that parse (maybe none). Each goes through the head's
# rules like any other fact; the count of memories is checked against the events below.
extracted = alice.add(
    [{"role": "user", "content": "I like jazz"}, {"role": "assistant", "content": "Nice"}],
    filters=ALICE,
)["results"]
assert isinstance(extracted, list) and len(extracted) <= 16, extracted
for e in extracted:
    assert e["event"] in ("ADD", "NONE"), extracted
    assert 1 <= len(e["memory"]) <= 200 and e["memory"] == e["memory"].strip(), extracted
for e in extracted:
    if e["event"] == "ADD":
        alice.delete(e["id"])
raises(ValidationError, lambda: alice.add("x", filters=ALICE, infer=False, timestamp=5),
       "`timestamp` is not supported")

# get_all: oldest first, in pages.
page = alice.get_all(filters=ALICE)
assert page["count"] == 3 and page["next"] is None and page["previous"] is None, page
assert [m["memory"] for m in page["results"]] == [
    "I live in Paris", "I like green tea", "I work as a nurse"], page
first = alice.get_all(filters=ALICE, page=1, page_size=2)
assert len(first["results"]) == 2 and first["next"] == "/v3/memories/?page=2&page_size=2", first
second = alice.get_all(filters=ALICE, page=2, page_size=2)
assert [m["memory"] for m in second["results"]] == ["I work as a nurse"], second
assert second["previous"] == "/v3/memories/?page=1&page_size=2", second

# search: full-text matches fused with cosine similarity, best first.
hits = alice.search("where does she live? Paris", filters=ALICE, top_k=2)["results"]
assert len(hits) == 2 and hits[0]["id"] == paris, hits
assert hits[0]["score"] >= hits[1]["score"], hits
assert all(h["user_id"] == "alice" and -1.0 <= h["similarity"] <= 1.0 for h in hits), hits
meta = alice.search("tea", filters={"user_id": "alice", "metadata": {"source": "chat"}})
assert {h["id"] for h in meta["results"]} == {paris, tea}, meta

# get
got = alice.get(paris)
assert got["memory"] == "I live in Paris" and got["user_id"] == "alice", got
assert got["metadata"] == {"source": "chat"} and got["agent_id"] is None, got
assert got["created_at"].endswith("Z") and got["categories"] == [], got

# update: text (re-encoded) and metadata (merged).
updated = alice.update(paris, text="I live in Rome", metadata={"moved": True})
assert updated["event"] == "UPDATE" and updated["memory"] == "I live in Rome", updated
got = alice.get(paris)
assert got["memory"] == "I live in Rome", got
assert got["metadata"] == {"source": "chat", "moved": True}, got
assert alice.update(paris, metadata={"moved": True})["event"] == "NONE"

# history
history = alice.history(paris)
assert [(h["event"], h["old_memory"], h["new_memory"]) for h in history] == [
    ("ADD", None, "I live in Paris"),
    ("UPDATE", "I live in Paris", "I live in Rome"),
], history
assert all(h["memory_id"] == paris and h["user_id"] == "alice" for h in history), history

# Another user's client sees and changes nothing of alice's.
raises(MemoryNotFoundError, lambda: bob.get(paris))
raises(MemoryNotFoundError, lambda: bob.update(paris, text="I live in Oslo"))
raises(MemoryNotFoundError, lambda: bob.delete(paris))
raises(MemoryNotFoundError, lambda: bob.history(paris))
assert bob.get_all(filters={"user_id": "bob"})["count"] == 0
assert bob.search("Rome", filters={"user_id": "bob"})["results"] == []
raises(ValidationError, lambda: bob.get_all(filters=ALICE), "disagree")
raises(ValidationError, lambda: bob.search("Rome", filters=ALICE), "disagree")
raises(ValidationError, lambda: bob.delete_all(filters=ALICE), "two different values")
# A client pinned to no one gets no memory by id at all.
anyone = MemoryClient(api_key=KEY, host=URL)
raises(ValidationError, lambda: anyone.get(paris), "no scope")
raises(ValidationError, lambda: anyone.delete_all(), "no scope")
assert alice.get(paris)["memory"] == "I live in Rome"

# delete: the memory goes, its history stays.
assert alice.delete(paris)["message"] == "Memory deleted successfully!"
raises(MemoryNotFoundError, lambda: alice.get(paris))
history = alice.history(paris)
assert [h["event"] for h in history] == ["ADD", "UPDATE", "DELETE"], history
assert history[-1]["is_deleted"] is True, history
raises(MemoryNotFoundError, lambda: bob.history(paris))

# delete_all: the client writes `filters` into the query as a Python literal.
assert alice.delete_all(filters=ALICE)["deleted"] == 2
assert alice.get_all(filters=ALICE)["count"] == 0
assert [h["event"] for h in alice.history(tea)] == ["ADD", "DELETE"]
print("ok")
