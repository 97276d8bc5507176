"""Grad-CAM (through grad-cam), Integrated Gradients and occlusion (through Captum) on the token layout.

Each is compared with the library used directly or with its definition computed here by hand, and
every method gives an image the same map alone as in a batch, on models with registers and pools.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vitlens
from vitlens import explain

from .conftest import perturbed_vit

pytest.importorskip("pytorch_grad_cam")
pytest.importorskip("captum")


def tiny(**kw):
    cfg = dict(img_size=20, patch_size=4, in_chans=3, embed_dim=32, depth=2, num_heads=4, num_classes=5)
    torch.manual_seed(0)
    return perturbed_vit(0.05, **{**cfg, **kw})


LAYOUTS = {
    "class token": {},
    "registers": dict(reg_tokens=2),
    "attention pool": dict(class_token=False, global_pool="map"),
}


def test_gradcam_equals_the_grad_cam_packages_own_output():
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = tiny(reg_tokens=1)
    x = torch.randn(2, 3, 20, 20)

    def by_hand(tokens):  # what a user writes for this layout: skip class + register, 5x5 grid
        return tokens[:, 2:].reshape(len(tokens), 5, 5, -1).permute(0, 3, 1, 2)

    with GradCAM(model=model, target_layers=[model.blocks[-1].norm1], reshape_transform=by_hand) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(3), ClassifierOutputTarget(1)])
    ours = explain.gradcam(model, x, target=[3, 1])
    assert ours.shape == (2, 5, 5)
    # the package resizes each layer's map to the input, then scales the layers' mean to [0, 1] again
    np.testing.assert_allclose(scale_cam_image(scale_cam_image(ours.numpy(), (20, 20))), theirs, atol=1e-5)


def test_gradcam_on_parallel_branches_reads_the_first_branchs_norm():
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = tiny(num_parallel=2)
    x = torch.randn(1, 3, 20, 20)

    def by_hand(tokens):
        return tokens[:, 1:].reshape(len(tokens), 5, 5, -1).permute(0, 3, 1, 2)

    with GradCAM(model=model, target_layers=[model.blocks[-1].attns[0].norm], reshape_transform=by_hand) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(3)])
    ours = explain.gradcam(model, x, target=3)
    np.testing.assert_allclose(scale_cam_image(scale_cam_image(ours.numpy(), (20, 20))), theirs, atol=1e-5)


def test_gradcam_is_the_papers_formula_on_the_tokens():
    model = tiny()
    x = torch.randn(1, 3, 20, 20)
    seen = {}
    handle = model.blocks[-1].norm1.register_forward_hook(lambda m, i, o: seen.update(tokens=o))
    logits = model(x)
    handle.remove()
    (grad,) = torch.autograd.grad(logits[0, 2], seen["tokens"])
    acts, grads = seen["tokens"][0, 1:].detach(), grad[0, 1:]  # (25, D) patches
    cam = (acts @ grads.mean(0)).clamp_min(0)  # weights: the gradient's mean over the grid
    cam = (cam - cam.min()) / (cam.max() + 1e-7)
    torch.testing.assert_close(explain.gradcam(model, x, target=2)[0], cam.view(5, 5), atol=1e-5, rtol=0)


def test_integrated_gradients_equal_captums_per_patch_and_are_complete():
    from captum.attr import IntegratedGradients

    model = tiny()
    x = torch.randn(2, 3, 20, 20)
    pixels = IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=[4, 0], n_steps=64)
    want = pixels.sum(1).reshape(2, 5, 4, 5, 4).sum(dim=(2, 4))
    ours = explain.integrated_gradients(model, x, target=[4, 0], steps=64)
    torch.testing.assert_close(ours, want, atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # completeness: the attributions add up to f(x) - f(baseline)
        gap = model(x)[[0, 1], [4, 0]] - model(torch.zeros_like(x))[[0, 1], [4, 0]]
    torch.testing.assert_close(ours.sum(dim=(1, 2)), gap, atol=0.02 * float(gap.abs().max()), rtol=0)


def test_occlusion_is_the_scores_drop_when_each_patch_is_the_baseline():
    model = tiny(reg_tokens=1)
    x = torch.randn(1, 3, 20, 20)
    ours = explain.occlusion(model, x, target=3)
    with torch.no_grad():
        full = model(x)[0, 3]
        for r, c in [(0, 0), (2, 3), (4, 4)]:
            hidden = x.clone()
            hidden[..., 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] = 0
            assert float(ours[0, r, c]) == pytest.approx(float(full - model(hidden)[0, 3]), abs=1e-5)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("method", ["gradcam", "hirescam", "eigencam", "integrated_gradients", "occlusion"])
def test_every_method_gives_an_image_its_own_map_alone_or_in_a_batch(layout, method):
    model = tiny(**LAYOUTS[layout])
    x = torch.randn(3, 3, 20, 20)

    def run(images, target):
        if method in ("gradcam", "hirescam", "eigencam"):
            return explain.gradcam(model, images, target, method=method)
        return getattr(explain, method)(model, images, target)

    batch = run(x, None)
    assert batch.shape == (3, 5, 5) and torch.isfinite(batch).all()
    for i in range(3):
        torch.testing.assert_close(run(x[i : i + 1], None)[0], batch[i], atol=1e-4, rtol=1e-4)
    score = run(x, explain.norm_target(model))  # a callable target works too
    assert score.shape == (3, 5, 5)


def test_bad_method_names_are_refused():
    with pytest.raises(ValueError, match="method must be one of gradcam, hirescam"):
        explain.gradcam(tiny(), torch.randn(1, 3, 20, 20), method="scorecam")


def test_vitlens_explain_runs_them_on_request(tmp_path):
    import json

    from PIL import Image

    from vitlens.commands.main import main

    model = vitlens.save_pretrained(tiny(), tmp_path / "model")
    Image.fromarray((np.random.default_rng(0).random((20, 20, 3)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    args = ["explain", "--model", str(model), "--image", str(tmp_path / "a.png"), "--out", str(tmp_path / "out")]
    assert main([*args, "--method", "gradcam,ig,occlusion", "--target", "2"]) == 0
    maps = json.loads((tmp_path / "out" / "explain.json").read_text())["images"][0]["maps"]
    assert list(maps) == ["gradcam", "ig", "occlusion"]
    assert all(m["target"] == {"kind": "class", "index": 2, "label": "class 2"} for m in maps.values())
    assert (tmp_path / "out" / "a" / "occlusion.png").is_file()
