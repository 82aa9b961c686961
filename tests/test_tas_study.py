"""The TAS probe of docs/tas.md: a full teacher-forced pass must measure what the step-by-step decode does."""

from __future__ import annotations

import numpy as np
import pytest

from models.capture import CaptureSettings, _Session
from models.fastcar import DecodeOptions, SamplingOptions, decode
from models.policies import DensePolicy
from models.tas_study import Probe, decision_agreement, depth_profile, prediction, probe
from models.testing import tiny_checkpoint

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    ckpt = str(tiny_checkpoint(tmp_path_factory.mktemp("ckpt")))
    with _Session(CaptureSettings(checkpoint=ckpt, prompts=[0, 1, 2], policy="dense", seed=2)) as ses:
        yield ses


@pytest.mark.parametrize("pre_rope", [False, True])
def test_probe_measures_what_the_kv_cache_decode_measures(session, pre_rope):
    """Two implementations: one causal forward pass over the whole video against the token-by-token decode
    with its KV cache (dense policy, which also logs the reuse error of the previous frame's output)."""
    p = probe(session.model, session.labels, session.dense.tokens)
    r = decode(
        session.model,
        session.labels,
        session.frames,
        DensePolicy(),
        DecodeOptions(measure_mlp_error=True, query_pre_rope=pre_rope),
        SamplingOptions(seed=2),
    )
    np.testing.assert_array_equal(r.tokens, session.dense.tokens)
    tas = p.tas_pre if pre_rope else p.tas
    assert np.array_equal(np.isnan(tas), np.isnan(r.tas))
    np.testing.assert_allclose(tas, r.tas, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(p.reuse_error, r.mlp_rel_error, atol=1e-4, rtol=1e-4)
    # heads differ: the per-head values are not copies of one another
    assert np.std(p.tas_heads[..., p.tokens_per_frame :], axis=2).max() > 0


def _fake(tas: np.ndarray, error: np.ndarray, n: int) -> Probe:
    heads = np.repeat(tas[:, :, None], 2, axis=2)
    return Probe(heads, heads.copy(), error, n)


def test_prediction_depth_profile_and_agreement_on_known_inputs():
    rng = np.random.default_rng(0)
    n, b, layers, steps = 4, 3, 3, 16
    error = rng.random((b, layers, steps)).astype(np.float32)
    error[..., :n] = np.nan
    tas = -error.copy()  # a perfect predictor: the lower the error, the higher the TAS
    tas[:, 2] = rng.random((b, steps))  # layer 2: no relation
    tas[..., :n] = np.nan
    p = _fake(tas, error, n)
    pred = prediction(p)
    means = pred[pred["head"] == "mean"].set_index("layer")
    assert means.loc[0, "spearman_post_rope"] == pytest.approx(-1.0)
    assert abs(means.loc[2, "spearman_post_rope"]) < 0.5
    depth = depth_profile(p, 0.5)
    assert depth.replay_post_rope.mean() == pytest.approx(0.5)
    assert depth.replay_oracle.mean() == pytest.approx(0.5)
    # the oracle replays the lowest errors: its replayed entries have the lower mean error
    weighted = {
        k: (depth[f"replay_{k}"] * depth[f"replayed_error_{k}"]).sum() for k in ("oracle", "post_rope")
    }
    assert weighted["oracle"] < weighted["post_rope"]
    assert decision_agreement(p) == 1.0
    flipped = Probe(p.tas_heads, -p.tas_heads, error, n)
    assert decision_agreement(flipped) < 0.2
