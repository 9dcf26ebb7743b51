"""Run in a subprocess by test_determinism.py: greedy-decode tiny-a (the packed folder and
the peer I2_S file) in both numerics, for each thread count given, and save every logits
row. The environment (BITNET_PACK_CPU / BITNET_PACK_PUREPYTHON, BITNET_PACK_THREADS,
OPENBLAS_CORETYPE) is the caller's.

    python determinism_worker.py OUT.npz FIXTURE_DIR THREADS[,THREADS...]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from bitnet_pack.engine import floatops, kernel
from bitnet_pack.engine.model import BitNetModel
from bitnet_pack.pipeline.sources import load_weights

MODELS = {"packed": "tiny-a-packed", "i2_s": "tiny-a-i2_s.gguf"}
NUMERICS = ("reference", "bitnet.cpp")
TOKENS = 16


def main(out: str, fixture: str, threads: str) -> None:
    root = Path(fixture)
    prompts = [p["prompt"] for p in json.loads((root / "tiny-a.decode.json").read_text())["prompts"]]
    floatops.set_parallel_min(0)  # split every float op over the pool: threads must not matter
    results = {"backend": np.array(kernel.BACKEND), "env_threads": np.array(kernel.num_threads())}
    loaded = {name: load_weights(root / path) for name, path in MODELS.items()}
    for n in (int(t) for t in threads.split(",")):
        kernel.set_num_threads(n)
        for name, (config, weights) in loaded.items():
            for numerics in NUMERICS:
                model = BitNetModel(config, weights, numerics=numerics)
                for index, prompt in enumerate(prompts):
                    ids, logits = model.generate_ids(prompt, TOKENS)
                    key = f"{name}/{numerics}/p{index}/t{n}"
                    results[key + "/ids"] = np.array(ids)
                    results[key + "/logits"] = logits
    np.savez(out, **results)


if __name__ == "__main__":
    main(*sys.argv[1:])
