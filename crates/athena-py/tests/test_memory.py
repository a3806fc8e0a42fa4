"""The memory bank: a round trip through SQLite in a temporary directory, in mem0's dicts,
the same as `athena memory ... --json` prints for the same bank."""

import pytest

import athena
from conftest import cli_json

RECORD_KEYS = {"id", "memory", "hash", "metadata", "created_at", "updated_at",
               "user_id", "agent_id", "run_id"}


@pytest.fixture
def bank(tmp_path, candle_model):
    return athena.MemoryBank(str(tmp_path / "memory.db"), model=candle_model)


def test_round_trip(bank, base):
    added = bank.add(["Alice lives in Paris.", "Alice likes tea."], user_id="alice",
                     metadata={"source": "chat"}, infer=False)
    events = added["results"]
    assert [e["event"] for e in events] == ["ADD", "ADD"]
    assert [e["memory"] for e in events] == ["Alice lives in Paris.", "Alice likes tea."]
    assert all(e["previous_memory"] is None for e in events)
    paris = events[0]["id"]

    record = bank.get(paris)
    assert set(record) == RECORD_KEYS
    assert record["memory"] == "Alice lives in Paris."
    assert record["user_id"] == "alice" and record["agent_id"] is None
    assert record["metadata"] == {"source": "chat"}
    assert record == cli_json("memory", "get", "--db", bank.location, "--id", paris, "--json")

    listed = bank.get_all(user_id="alice")
    assert [r["memory"] for r in listed["results"]] == ["Alice lives in Paris.", "Alice likes tea."]
    assert listed == cli_json("memory", "list", "--db", bank.location, "--user", "alice", "--json")
    assert bank.get_all(user_id="bob") == {"results": []}

    hits = bank.search("Where does Alice live? Paris.", user_id="alice", limit=1)
    assert len(hits["results"]) == 1
    assert set(hits["results"][0]) == {"id", "memory", "score", "metadata"}
    cli = cli_json("memory", "search", "--db", bank.location, "--user", "alice", "--model", base,
                   "--use-mlx", "false", "--query", "Where does Alice live? Paris.", "--top-k",
                   "1", "--json")
    assert [h["id"] for h in cli["results"]] == [h["id"] for h in hits["results"]]

    updated = bank.update(paris, "Alice lives in Rome.")
    assert updated == {"message": "Memory updated successfully!", "id": paris, "event": "UPDATE"}
    assert bank.get(paris)["memory"] == "Alice lives in Rome."
    history = bank.history(paris)["results"]
    assert [(h["event"], h["old_memory"], h["new_memory"]) for h in history] == [
        ("ADD", None, "Alice lives in Paris."),
        ("UPDATE", "Alice lives in Paris.", "Alice lives in Rome."),
    ]
    assert bank.history(paris) == cli_json("memory", "history", "--db", bank.location, "--id",
                                           paris, "--json")

    assert bank.delete(paris) == {"message": "Memory deleted successfully!", "id": paris}
    with pytest.raises(athena.AthenaUserError, match="no memory with id"):
        bank.get(paris)
    assert bank.delete_all(user_id="alice") == {"message": "Memories deleted successfully!",
                                                "deleted": 1}
    bank.add("Bob plays chess.", agent_id="helper", infer=False)
    assert bank.reset() == {"message": "Memories reset successfully!"}
    assert bank.get_all(agent_id="helper") == {"results": []}


def test_the_callers_mistakes(bank, tmp_path):
    with pytest.raises(athena.AthenaUserError, match="untrained"):
        bank.add("Alice lives in Paris.", user_id="alice")
    with pytest.raises(athena.AthenaUserError, match="scope"):
        bank.add("Alice lives in Paris.", infer=False)
    with pytest.raises(athena.AthenaUserError, match="fact 1"):
        bank.add("   ", user_id="alice", infer=False)
    with pytest.raises(athena.AthenaUserError, match="metadata"):
        bank.add("x", user_id="alice", metadata=[1, 2], infer=False)
    with pytest.raises(athena.AthenaUserError):
        bank.get("not-a-uuid")
    unencoded = athena.MemoryBank(str(tmp_path / "other.db"))
    with pytest.raises(athena.AthenaUserError, match="model="):
        unencoded.search("x", user_id="alice")
    assert unencoded.get_all(user_id="alice") == {"results": []}
    foreign = tmp_path / "foreign.db"
    foreign.write_bytes(b"this is not a database" * 100)
    with pytest.raises(athena.AthenaUserError, match="foreign.db"):
        athena.MemoryBank(str(foreign))


def test_a_bank_with_a_model_name_loads_the_model(tmp_path, base):
    bank = athena.MemoryBank(str(tmp_path / "m.db"), model=base)
    assert bank.add("Carol has a dog.", run_id="r1", infer=False)["results"][0]["event"] == "ADD"
