"""What e5kit saves loads in sentence-transformers without a report about the pooler e5kit leaves out."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch
from safetensors.torch import load_file

from e5kit.encoder import Encoder

TEXTS = ["the cat sat on the mat", "how do cells divide", "python can read and write files"]


def test_sentence_transformers_loads_an_e5kit_save_silently_with_the_same_embeddings(tiny_bert_dir, tmp_path, capfd, caplog, restore_root_level):
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    # Given a checkpoint with pooler weights, loaded by e5kit (which drops the pooler) and saved
    encoder = Encoder.load(tiny_bert_dir, device="cpu")
    saved = encoder.save(tmp_path / "model")
    capfd.readouterr()
    # When sentence-transformers loads the folder, with transformers' warnings shown
    transformers_logging.set_verbosity_warning()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        st_model = SentenceTransformer(str(saved), device="cpu")
    # Then nothing mentions the pooler: the saved weights are the checkpoint's own, not left out
    printed = "".join(capfd.readouterr())
    assert "LOAD REPORT" not in printed and "pooler" not in printed
    assert not [w for w in caught if "pooler" in str(w.message)]
    assert not [r for r in caplog.records if "pooler" in r.getMessage()]
    source, written = load_file(tiny_bert_dir / "model.safetensors"), load_file(saved / "model.safetensors")
    for name in ("pooler.dense.weight", "pooler.dense.bias"):
        torch.testing.assert_close(written[name], source[name])
    # And its embeddings are e5kit's, for both roles
    for ours, theirs in ((encoder.encode_queries(TEXTS), st_model.encode_query(TEXTS)), (encoder.encode_passages(TEXTS), st_model.encode_document(TEXTS))):
        cosines = np.sum(ours * theirs, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
        assert cosines.min() > 0.9999
