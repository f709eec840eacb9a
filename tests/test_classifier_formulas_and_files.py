"""Classifier guidance core: exactness on a Gaussian mixture, targets, file format."""

import json
import os

import pytest
import torch

from guidance_core import classifier_guidance as G
from guidance_core.classifiers import classifier_files as gio
from guidance_core.classifiers.noise_aware import ClassifierConfig, NoiseAwareClassifier
from guidance_core.errors import GuidanceConfigError
from guidance_core.reference.gmm import GaussianMixture, GMMClassifier

pytestmark = pytest.mark.core

LABELS = ["cat", "dog", "bird"]


def test_parse_targets():
    assert G.parse_targets("cat", LABELS) == [{"cat": 1.0}]
    assert G.parse_targets("Cat:2, dog:-0.5", LABELS) == [{"cat": 2.0, "dog": -0.5}]
    assert G.parse_targets("cat\nbird; dog", LABELS) == [{"cat": 1.0}, {"bird": 1.0}, {"dog": 1.0}]
    w = G.target_matrix(G.parse_targets("dog:1, bird:-1", LABELS), LABELS)
    assert w.tolist() == [[0.0, 1.0, -1.0]]
    with pytest.raises(GuidanceConfigError, match="unknown label 'horse'.*known labels: cat, dog, bird"):
        G.parse_targets("horse", LABELS)
    with pytest.raises(GuidanceConfigError, match="target is empty"):
        G.parse_targets("  \n", LABELS)
    with pytest.raises(GuidanceConfigError, match="2 items but the batch has 3"):
        G.batch_weights(torch.zeros(2, 3), 3)


def test_shift_formula_by_hand():
    d, g = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, -1.0]])
    out = G.shift_denoised(d, g, torch.tensor([2.0]), torch.tensor([0.5]), 3.0)
    # D + s sigma^2/alpha g = [1 + 3*4/0.5*0.5, 2 - 3*8] = [13, -22]
    assert out.tolist() == [[13.0, -22.0]]
    assert torch.equal(G.shift_denoised(d, g, torch.tensor([2.0]), torch.tensor([1.0]), 0.0), d)


def test_rms_clamp_per_sample():
    g = torch.stack([torch.full((2, 2), 3.0), torch.full((2, 2), 0.1)])
    out = G.clamp_rms(g, 1.0)
    assert torch.allclose(out[0], torch.ones(2, 2)) and torch.equal(out[1], g[1])


@pytest.mark.parametrize("param", ["eps", "v", "flow"])
def test_bayes_shift_is_exact_class_conditional(param):
    torch.manual_seed(0)
    means = torch.randn(3, 2, 3, 3)
    gmm = GaussianMixture(means, 0.4, torch.tensor([0.5, 0.3, 0.2]))
    clf = GMMClassifier(gmm, param)
    for sigma in (0.05, 0.5, 0.9) if param == "flow" else (0.05, 1.0, 8.0):
        s = torch.full((4,), sigma)
        alpha = 1 - s if param == "flow" else torch.ones(4)
        x = alpha.view(-1, 1, 1, 1) * means[torch.tensor([0, 1, 2, 0])] + sigma * torch.randn(4, 2, 3, 3)
        model_input = (lambda xx: xx) if param == "flow" else (lambda xx: xx / (1 + sigma**2) ** 0.5)
        d = gmm.denoise(x, s, alpha)
        for y in range(3):
            w = torch.zeros(4, 3)
            w[:, y] = 1
            g = G.log_prob_gradient(clf, model_input, x, s, w)
            got = G.shift_denoised(d, g, s, alpha, 1.0)
            want = gmm.class_denoise(x, s, alpha)[:, y]
            assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item()), (param, sigma, y)


def test_gradient_works_under_inference_mode_with_inference_weights():
    with torch.inference_mode():  # as ComfyUI runs nodes: weights and x are inference tensors
        net = NoiseAwareClassifier(ClassifierConfig(in_channels=4, num_classes=3, base_channels=16))
        x = torch.randn(2, 4, 8, 8)
        G.make_autograd_safe(net)
        g = G.log_prob_gradient(net, lambda xx: xx, x, torch.tensor([1.0, 1.0]), torch.eye(3)[:2])
    assert g.shape == x.shape and torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("channels", [4, 16])
def test_noise_aware_classifier_shapes(channels):
    net = NoiseAwareClassifier(ClassifierConfig(in_channels=channels, num_classes=5))
    out = net(torch.randn(3, channels, 16, 16), torch.tensor([0.1, 1.0, 10.0]))
    assert out.shape == (3, 5)
    assert sum(p.numel() for p in net.parameters()) < 5_000_000


def _meta(**kw):
    m = {
        "architecture": "noise_aware",
        "config": ClassifierConfig(in_channels=4, num_classes=3, base_channels=16).to_dict(),
        "labels": LABELS,
        "latent_channels": 4,
        "latent_format": "SD15",
        "parameterization": "eps",
        "sigma_min": 0.03,
        "sigma_max": 14.6,
    }
    m.update(kw)
    return m


def test_file_roundtrip_atomic(tmp_path):
    net = NoiseAwareClassifier(ClassifierConfig(in_channels=4, num_classes=3, base_channels=16))
    path = gio.save_classifier(str(tmp_path / "c.safetensors"), net, _meta())
    assert os.listdir(tmp_path) == ["c.safetensors"]  # no temporary left behind
    net2, meta = gio.load_classifier(path)
    assert meta["labels"] == LABELS and meta["format"] == "guidance-lab-classifier" and meta["version"] == 1
    x = torch.randn(1, 4, 8, 8)
    assert torch.equal(net(x, torch.tensor([1.0])), net2(x, torch.tensor([1.0])))


def test_bad_files_are_refused(tmp_path):
    net = NoiseAwareClassifier(ClassifierConfig(in_channels=4, num_classes=3, base_channels=16))
    good = gio.save_classifier(str(tmp_path / "good.safetensors"), net, _meta())
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"\x80\x04\x95fake pickle")
    with pytest.raises(gio.ClassifierFileError, match="pickled checkpoints .* are refused"):
        gio.load_classifier(str(pt))
    disguised = tmp_path / "disguised.safetensors"
    disguised.write_bytes(b"PK\x03\x04 zip of pickles")
    with pytest.raises(gio.ClassifierFileError, match="pickle/zip checkpoint"):
        gio.load_classifier(str(disguised))
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(open(good, "rb").read()[:200])
    with pytest.raises(gio.ClassifierFileError, match="corrupt.safetensors"):
        gio.load_classifier(str(corrupt))
    from safetensors.torch import save_file

    plain = str(tmp_path / "plain.safetensors")
    save_file({"w": torch.zeros(2)}, plain)
    with pytest.raises(gio.ClassifierFileError, match="no Guidance Lab metadata"):
        gio.load_classifier(plain)
    with pytest.raises(gio.ClassifierFileError, match="lacks"):
        gio.save_classifier(str(tmp_path / "x.safetensors"), net, {"labels": LABELS})
    wrong = _meta(labels=["a", "b"])
    gio.save_classifier(str(tmp_path / "wrong.safetensors"), net, wrong)
    with pytest.raises(gio.ClassifierFileError, match="2 labels but the network has 3"):
        gio.load_classifier(str(tmp_path / "wrong.safetensors"))
    meta_text = json.loads(json.dumps(_meta()))
    assert meta_text["parameterization"] == "eps"


def test_config_errors_name_fields():
    for kw, field in (
        (dict(every_n=0), "every_n"),
        (dict(rms_clamp=-1.0), "rms_clamp"),
        (dict(dtype="int8"), "dtype"),
        (dict(sigma_lo=5.0, sigma_hi=1.0), "sigma_lo=5.0"),
        (dict(scale=float("nan")), "scale"),
    ):
        with pytest.raises(GuidanceConfigError, match=field):
            G.ClassifierGuidanceConfig(**kw)
