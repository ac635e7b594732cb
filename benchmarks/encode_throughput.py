"""Encode throughput: e5kit's Encoder vs sentence-transformers on the same model, texts and CPU.

Texts are ~128-token windows of real English prose (the standard library's docstrings). Each
library encodes the same texts ``--repeats`` times after a warm-up; the best run is reported.

    python benchmarks/encode_throughput.py [--model all-MiniLM-L6-v2] [--texts 1024] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch
from bench_worker import best_rate

from e5kit.encoder.precision import cpu_description


def prose_windows(count: int, words_per_text: int) -> list[str]:
    from e5kit.data.readers.pydoc import iter_module_docs

    words = [w for record in iter_module_docs() for w in record.text.split()]
    windows = [" ".join(words[i : i + words_per_text]) for i in range(0, len(words) - words_per_text, words_per_text)]
    if len(windows) < count:
        raise SystemExit(f"only {len(windows)} windows of {words_per_text} words available")
    return windows[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--texts", type=int, default=1024)
    parser.add_argument("--words", type=int, default=78, help="words per text (78 words ~ 128 tokens)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from e5kit.encoder import Encoder
    from e5kit.hub import resolve_model_dir

    texts = prose_windows(args.texts, args.words)
    encoder = Encoder.load(args.model, device=args.device)
    st_model = SentenceTransformer(str(resolve_model_dir(args.model)), device=args.device)
    st_model.max_seq_length = encoder.max_length
    role = "passage" if "passage" in encoder.prompts else None
    prompt_name = "passage" if role else None
    mean_tokens = sum(len(encoder.tokenizer(encoder.prepare([t], role))["input_ids"][0]) for t in texts[:200]) / 200

    e5kit_rate = best_rate(lambda batch, size: encoder.encode(batch, role=role, batch_size=size), texts, args.batch_size, args.repeats)
    st_rate = best_rate(
        lambda batch, size: st_model.encode(batch, prompt_name=prompt_name, batch_size=size), texts, args.batch_size, args.repeats
    )
    print(cpu_description())
    print(f"model {args.model} | device {args.device} | torch threads {torch.get_num_threads()} | "
          f"{len(texts)} texts, ~{mean_tokens:.0f} tokens each (max length {encoder.max_length}) | batch {args.batch_size}")
    print(f"{'engine':<32}{'texts/s':>10}")
    print(f"{'e5kit Encoder (torch fp32)':<32}{e5kit_rate:>10.1f}")
    print(f"{'sentence-transformers (fp32)':<32}{st_rate:>10.1f}")
    print(f"ratio e5kit / sentence-transformers: {e5kit_rate / st_rate:.2f}x")


if __name__ == "__main__":
    main()
