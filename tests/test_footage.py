"""The footage model's pieces: the FSQ tokenizer file, and the real-footage data pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from models import footage
from models.checkpoint import CheckpointError, load_tokenizer, save_tokenizer
from models.fsq import FSQConfig, FSQTokenizer
from models.tokenizer import PatchVQ

pytestmark = pytest.mark.usefixtures("single_torch_thread")
needs_footage = pytest.mark.skipif(footage.available() is not None, reason=str(footage.available()))

SMALL = FSQConfig(levels=[4, 3], channels=[8, 8], res_blocks=1)


def _tok(seed: int = 0) -> FSQTokenizer:
    torch.manual_seed(seed)
    return FSQTokenizer(SMALL).eval()


def test_fsq_codes_decode_and_file_round_trip(tmp_path):
    tok = _tok()
    frames = torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8)
    codes = tok.encode(frames)
    assert codes.shape == (2, 3, 16) and codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < tok.size == 12
    out = tok.decode(codes)
    assert out.shape == (2, 3, 16, 16, 3) and float(out.min()) >= 0 and float(out.max()) <= 1
    path = tmp_path / "t.safetensors"
    save_tokenizer(tok, path)
    with safe_open(str(path), framework="pt") as sf:
        assert sf.metadata()["kind"] == "fsq"
    back = load_tokenizer(path, codebook_size=12)
    assert isinstance(back, FSQTokenizer) and back.config == SMALL
    assert torch.equal(back.encode(frames), codes) and torch.equal(back.decode(codes), out)
    with pytest.raises(CheckpointError, match="needs 13"):
        load_tokenizer(path, codebook_size=13)


def test_patch_vq_files_without_kind_still_load(tmp_path):
    vq = PatchVQ(torch.rand(5, 12), patch=2)
    path = tmp_path / "p.safetensors"
    save_tokenizer(vq, path)
    with safe_open(str(path), framework="pt") as sf:
        assert "kind" not in sf.metadata()  # byte-compatible with files written before kinds existed
    assert isinstance(load_tokenizer(path), PatchVQ)
    save_file({"codebook": vq.codebook}, str(path), metadata={"patch": "2", "kind": "patch_vq"})
    assert torch.equal(load_tokenizer(path).codebook, vq.codebook)


def _fsq_file(path, tensors, meta):
    save_file(tensors, str(path), metadata=meta)
    return path


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda t, m: m.update(kind="vqgan"), "metadata 'kind' is 'vqgan'"),
        (lambda t, m: m.update(kind="patch_vq"), "no tensor 'codebook'"),
        (lambda t, m: t.pop("decoder.0.weight"), "no tensor 'decoder.0.weight'"),
        (
            lambda t, m: t.update({"encoder.0.weight": torch.zeros(1)}),
            "tensor encoder.0.weight has shape (1,)",
        ),
        (lambda t, m: t.update(extra=torch.zeros(1)), "unexpected tensor 'extra'"),
        (lambda t, m: t["decoder.0.bias"].fill_(float("nan")), "NaN"),
        (lambda t, m: m.pop("fsq.config"), "no 'fsq.config'"),
        (lambda t, m: m.update({"fsq.config": "{"}), "fsq.config is unusable"),
        (
            lambda t, m: m.update(
                {"fsq.config": json.dumps({"levels": [1], "channels": [8], "res_blocks": 1})}
            ),
            "fsq.config is unusable",
        ),
    ],
)
def test_bad_fsq_tokenizer_files_name_the_file_and_reason(tmp_path, edit, fragment):
    tok = _tok()
    tensors = {k: v.clone() for k, v in tok.state_dict().items()}
    meta = {"kind": "fsq", "fsq.config": json.dumps(SMALL.to_dict())}
    edit(tensors, meta)
    path = _fsq_file(tmp_path / "bad.safetensors", tensors, meta)
    with pytest.raises(CheckpointError) as err:
        load_tokenizer(path)
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_truncated_tokenizer_file(tmp_path):
    path = tmp_path / "t.safetensors"
    save_tokenizer(_tok(), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=str(path)):
        load_tokenizer(path)


@needs_footage
def test_footage_is_deterministic_per_seed_and_chunking():
    a, la = footage.make_footage(6, seed=3)
    b, lb = footage.make_footage(6, seed=3)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert a.shape == (6, 8, 64, 64, 3) and a.dtype == np.uint8 and la.tolist() == [0, 1, 2, 0, 1, 2]
    c, _ = footage.make_footage(2, seed=3, offset=4)
    assert np.array_equal(c, a[4:])
    d, _ = footage.make_footage(6, seed=4)
    assert not np.array_equal(a, d)
    assert a.std() > 10  # real pictures, not blank frames


@needs_footage
def test_heldout_split_does_not_overlap_training():
    spec = footage.FootageSpec()
    for i in range(len(footage.CLIPS)):
        train, held = footage.frame_indices(i, "train", spec), footage.frame_indices(i, "heldout", spec)
        assert train and held and not train & held
        cut = footage.split_frame(i)
        assert max(train) < cut <= min(held)
        for a, b in footage.segments(i):  # no window crosses a scene cut
            for split in footage.SPLITS:
                for s in footage.window_starts(i, split, spec):
                    assert (a <= s < b) == (a <= s + (spec.frames - 1) * spec.stride < b)
    assert len(footage.segments(1)) == 6 and len(footage.segments(0)) == len(footage.segments(2)) == 1


@needs_footage
def test_splits_draw_different_videos_and_unknown_splits_are_refused():
    tr, _ = footage.make_footage(3, seed=0, split="train")
    he, _ = footage.make_footage(3, seed=0, split="heldout")
    assert not np.array_equal(tr, he)
    with pytest.raises(ValueError, match="split"):
        footage.make_footage(1, seed=0, split="test")
