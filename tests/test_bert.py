"""mixweave.retrieval.bert against transformers' BertModel (the reference): the same hidden states
bit for bit on the default encoder, a ``bert.``-prefixed checkpoint read too, and configs it does not
compute left to ``AutoModel`` by TorchEncoder."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from mixweave.retrieval.bert import bert_config_supported, bert_hidden_states, load_bert
from mixweave.retrieval.encoders import resolve_encoder_path

FOLDER = resolve_encoder_path("default").resolve()


@pytest.fixture(scope="module")
def reference():
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(FOLDER), local_files_only=True).eval()


def padded_batch(length: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (4, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, length // 2:] = 0
    mask[3, 3:] = 0
    ids[mask == 0] = 0
    types = torch.zeros_like(ids)
    types[2, length // 3:] = 1  # a second segment
    return ids, mask, types


@pytest.mark.parametrize("length", [5, 37, 128])
def test_hidden_states_equal_transformers_bert_bit_for_bit(reference, length):
    weights = load_bert(FOLDER)
    assert weights is not None and weights.layers == 6 and weights.heads == 12
    ids, mask, types = padded_batch(length)
    with torch.inference_mode():
        want = reference(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = bert_hidden_states(weights, ids, mask, types)
    assert got.dtype == torch.float32 and torch.equal(got, want)


def test_a_bert_prefixed_checkpoint_is_read_and_other_configs_are_not(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "prefixed"
    folder.mkdir()
    (folder / "config.json").write_text((FOLDER / "config.json").read_text())
    save_file({"bert." + k: v for k, v in load_file(str(FOLDER / "model.safetensors")).items()},
              str(folder / "model.safetensors"))
    ids, mask, types = padded_batch(20, seed=1)
    with torch.inference_mode():
        assert torch.equal(bert_hidden_states(load_bert(folder), ids, mask, types),
                           bert_hidden_states(load_bert(FOLDER), ids, mask, types))

    config = json.loads((FOLDER / "config.json").read_text())
    assert bert_config_supported(config)
    for change in ({"model_type": "roberta"}, {"hidden_act": "gelu_new"}, {"position_embedding_type": "relative_key"},
                   {"is_decoder": True}):
        assert not bert_config_supported({**config, **change})
    (folder / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    assert load_bert(folder) is None
    (folder / "config.json").write_text("{not json")
    assert load_bert(folder) is None
    save_file({"bert.embeddings.word_embeddings.weight": torch.zeros(2, 2)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))
    assert load_bert(folder) is None  # tensors missing


def test_torch_encoder_falls_back_to_automodel_for_another_config(tmp_path, reference):
    """A config the plain forward pass does not compute (``hidden_act: gelu_new``) runs on AutoModel:
    TorchEncoder's vectors are then AutoModel's with that activation, not the BERT path's."""
    from transformers import AutoModel

    from mixweave.retrieval.encoder_backends import TorchEncoder

    folder = tmp_path / "gelu_new"
    folder.mkdir()
    for item in FOLDER.iterdir():
        if item.name != "config.json":
            (folder / item.name).symlink_to(item)
    (folder / "config.json").write_text(json.dumps({**json.loads((FOLDER / "config.json").read_text()),
                                                    "hidden_act": "gelu_new"}))
    encoder = TorchEncoder(folder)
    assert encoder.bert is None and encoder.model is not None
    ids, mask, types = (t.numpy() for t in padded_batch(16, seed=2))
    model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    with torch.inference_mode():
        hidden = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                       token_type_ids=torch.from_numpy(types)).last_hidden_state
    m = torch.from_numpy(mask).unsqueeze(-1).float()
    want = ((hidden * m).sum(1) / m.sum(1)).numpy()
    np.testing.assert_array_equal(encoder.pooled(ids, mask, types), want)
    assert not np.allclose(TorchEncoder(FOLDER).pooled(ids, mask, types), want, atol=1e-4)


def test_the_default_torch_encoder_never_imports_transformers():
    code = ("import sys; from mixweave.retrieval.encoders import load_encoder, embed_texts;"
            "e = load_encoder('default', 'cpu', backend='torch'); embed_texts(e, ['a text'], max_tokens=8);"
            "print(e.bert is not None, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False"]
