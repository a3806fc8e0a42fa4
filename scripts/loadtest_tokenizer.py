#!/usr/bin/env python3
"""Writes a tokenizer for a checkpoint that has none (the random layers4 checkpoint), so that
`athena serve` can run it for scripts/loadtest.py:

    python3 scripts/loadtest_tokenizer.py fixtures/models/base MODEL_DIR VOCAB_SIZE

It copies the fixture's tokenizer.json and tokenizer_config.json into MODEL_DIR and extends
the BPE vocabulary with one plain token per id the fixture lacks (`Ġt<id>`, decoding to
" t<id>"), so every id the model can produce decodes to text and streams as a chunk. Prompts
tokenize exactly as under the fixture tokenizer.
"""

import json
import shutil
import sys
from pathlib import Path

src, dst, vocab = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
tok = json.loads((src / "tokenizer.json").read_text())
used = set(tok["model"]["vocab"].values()) | {t["id"] for t in tok["added_tokens"]}
for i in range(vocab):
    if i not in used:
        tok["model"]["vocab"][f"\u0120t{i}"] = i
(dst / "tokenizer.json").write_text(json.dumps(tok))
shutil.copy(src / "tokenizer_config.json", dst / "tokenizer_config.json")
print(f"{dst}/tokenizer.json: {len(tok['model']['vocab']) + len(tok['added_tokens'])} ids")
