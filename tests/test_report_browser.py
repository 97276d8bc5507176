"""The explorer in a real browser: Debian's headless Chromium driven by Playwright.

Skips only when Chromium or Playwright is missing outside CI; under ``CI=true`` a missing
browser is a failure, so the browser tests can never silently stop running there.
"""

from __future__ import annotations

import base64
import os
import shutil

import numpy as np
import pytest
import torch

import vitlens
from vitlens.viz.report.encode import dequantize_rows, unpack_rows

from .report_helpers import attention_chunk, embedded, normalized, peaked_model

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; browser tests must run under CI")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM) or shutil.which(CHROMIUM) is None:
        _missing(f"Debian's chromium is not installed at {CHROMIUM} (make test installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright for Python is not installed (pip install 'vitlens[dev]')")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    torch.manual_seed(0)
    model = peaked_model()
    images = torch.randn(2, 3, 32, 32)
    path = vitlens.viz.report.build(model, images, tmp_path_factory.mktemp("report") / "report.html", target=2)
    with torch.no_grad():
        out = model(images, return_attention=True)
    html = path.read_text()
    meta, chunks = embedded(html)
    return path, meta, chunks, out


@pytest.fixture
def page(browser, report):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(report[0].as_uri())
    page.wait_for_function("Number(document.body.dataset.renders) >= 1")
    yield page
    context.close()
    assert problems == []


def _renders(page) -> int:
    return page.evaluate("window.vitlens.renders")


def _wait_for_render_after(page, count: int) -> None:
    page.wait_for_function(f"window.vitlens.renders > {count}")
    page.wait_for_function("window.vitlens.renders === Number(document.body.dataset.renders)")


def _shown(page) -> np.ndarray:
    return np.array(page.evaluate("Array.from(window.vitlens.shown)"), dtype=np.float64)


def _click_patch(page, row: int, col: int, grid: tuple[int, int]) -> None:
    box = page.locator("#vl-stage").bounding_box()
    before = _renders(page)
    page.mouse.click(box["x"] + (col + 0.5) * box["width"] / grid[1], box["y"] + (row + 0.5) * box["height"] / grid[0])
    _wait_for_render_after(page, before)
    page.mouse.move(0, 0)  # leave the image: the pinned patch stays shown


def _heat_pixels(page) -> np.ndarray:
    data = page.evaluate(
        "(() => { const c = document.getElementById('vl-heat');"
        " return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); })()"
    )
    return np.array(data, dtype=np.uint8).reshape(-1, 4)


def test_the_report_opens_without_errors_and_shows_the_class_token_of_the_last_layer(page, report):
    _, meta, chunks, _ = report
    assert page.title() == "vitlens attention explorer"
    assert page.evaluate("window.vitlens.query") == 0
    expected = normalized(attention_chunk(meta, chunks, 0, 2)[:, 0].mean(axis=0))
    np.testing.assert_allclose(_shown(page), expected, atol=1e-5)
    assert page.locator("#vl-top li").count() == 5
    assert page.locator("#vl-heads figure").count() == 2 + 2
    assert page.locator("#vl-distance circle").count() == 3 * 2


def test_clicking_a_patch_shows_its_attention_as_embedded_and_drawn(page, report):
    _, meta, chunks, out = report
    before = _shown(page)
    _click_patch(page, 1, 2, (4, 4))
    query = 1 + 1 * 4 + 2
    assert page.evaluate("window.vitlens.query") == query
    shown = _shown(page)
    assert not np.allclose(shown, before)
    expected = normalized(attention_chunk(meta, chunks, 0, 2)[:, query].mean(axis=0))
    np.testing.assert_allclose(shown, expected, atol=1e-5)
    # ...which is the model's own attention, up to the 8-bit quantization
    model_map = normalized(out.attentions[2][0, :, query, 1:].mean(0).numpy())
    np.testing.assert_allclose(shown, model_map, atol=2 / 255)
    # the canvas shows those numbers through the embedded colour table
    lut = np.frombuffer(base64.b64decode(meta["lut"]), dtype=np.uint8).reshape(256, 3)
    pixels = _heat_pixels(page)
    np.testing.assert_array_equal(pixels[:, :3], lut[np.round(shown * 255).astype(int)])
    outline = page.locator("#vl-outline").bounding_box()
    stage = page.locator("#vl-stage").bounding_box()
    assert outline["x"] == pytest.approx(stage["x"] + 2 * stage["width"] / 4, abs=1)
    assert outline["y"] == pytest.approx(stage["y"] + 1 * stage["height"] / 4, abs=1)


def test_the_layer_slider_and_head_selector_change_the_view(page, report):
    _, meta, chunks, _ = report
    _click_patch(page, 3, 0, (4, 4))
    query = 1 + 12
    last_layer = _shown(page)
    before = _renders(page)
    page.locator("#vl-layer").focus()
    page.keyboard.press("ArrowLeft")
    _wait_for_render_after(page, before)
    assert page.evaluate("window.vitlens.state.layer") == 1
    assert page.locator("#vl-layer-out").inner_text() == "1 / 2"
    shown = _shown(page)
    assert not np.allclose(shown, last_layer)
    np.testing.assert_allclose(shown, normalized(attention_chunk(meta, chunks, 0, 1)[:, query].mean(0)), atol=1e-5)
    for head, reduce in (("1", lambda a: a[1]), ("max", lambda a: a.max(0))):
        before = _renders(page)
        page.select_option("#vl-head", head)
        _wait_for_render_after(page, before)
        expected = normalized(reduce(attention_chunk(meta, chunks, 0, 1)[:, query]))
        np.testing.assert_allclose(_shown(page), expected, atol=1e-5)


def test_hovering_previews_a_patch_and_leaving_returns_to_the_pinned_one(page):
    box = page.locator("#vl-stage").bounding_box()
    before = _renders(page)
    page.mouse.move(box["x"] + 3.5 * box["width"] / 4, box["y"] + 0.5 * box["height"] / 4)
    _wait_for_render_after(page, before)
    assert page.evaluate("window.vitlens.query") == 1 + 3
    before = _renders(page)
    page.mouse.move(box["x"] + box["width"] + 50, box["y"])
    _wait_for_render_after(page, before)
    assert page.evaluate("window.vitlens.query") == 0


def test_arrow_keys_walk_the_pinned_patch(page, report):
    _, meta, chunks, _ = report
    _click_patch(page, 2, 2, (4, 4))
    page.locator("#vl-stage").focus()
    for key, query in (("ArrowUp", 1 + 6), ("ArrowLeft", 1 + 5), ("ArrowLeft", 1 + 4), ("ArrowLeft", 1 + 4)):
        before = _renders(page)
        page.keyboard.press(key)
        _wait_for_render_after(page, before)
        assert page.evaluate("window.vitlens.query") == query
    np.testing.assert_allclose(_shown(page), normalized(attention_chunk(meta, chunks, 0, 2)[:, 5].mean(0)), atol=1e-5)


def test_other_images_and_views_show_their_own_data(page, report):
    _, meta, chunks, _ = report
    before = _renders(page)
    page.select_option("#vl-image", "1")
    _wait_for_render_after(page, before)
    np.testing.assert_allclose(_shown(page), normalized(attention_chunk(meta, chunks, 1, 2)[:, 0].mean(0)), atol=1e-5)
    first = meta["images"][1]["top"][0]
    assert page.locator("#vl-top li").first.inner_text() == f"{first['label']} {first['prob']:.2f}"
    for view in ("gae", "grad-rollout"):
        before = _renders(page)
        page.check(f"input[name=vl-view][value={view}]")
        _wait_for_render_after(page, before)
        np.testing.assert_allclose(_shown(page), meta["images"][1]["targets"][0][view], atol=1e-5)
        assert "for class 2" in page.locator("#vl-status").inner_text()
    before = _renders(page)
    page.check("input[name=vl-view][value=rollout]")
    _wait_for_render_after(page, before)
    assert page.locator("#vl-layer-row.disabled").count() == 0
    assert page.locator("#vl-heads figure").count() == 0
    codes, scales = unpack_rows(chunks["vl-r-1"], 3 * 17, 16)
    rollout = dequantize_rows(codes, scales).reshape(3, 17, 16)
    np.testing.assert_allclose(_shown(page), normalized(rollout[2, 0]), atol=1e-5)


def test_small_probabilities_keep_two_significant_digits(browser):
    model = peaked_model(num_classes=1000)
    with torch.no_grad():
        model.head.weight.zero_()  # every class equally likely: 0.001 each
    report = vitlens.viz.report.render(model, torch.randn(1, 3, 32, 32), gradients=False)
    page = browser.new_page()
    page.set_content(report.html)
    page.wait_for_function("Number(document.body.dataset.renders) >= 1")
    assert page.locator("#vl-top li").first.inner_text().endswith(" 0.0010")
    page.close()


def test_the_jupyter_view_runs_inside_its_sandboxed_frame(browser):
    report = vitlens.viz.report.render(peaked_model(), torch.randn(1, 3, 32, 32), gradients=False)
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_content(f"<html><body><h2>notebook cell</h2>{report._repr_html_()}</body></html>")
    frame = page.frame_locator("iframe")
    frame.locator("body[data-renders='1']").wait_for()
    assert frame.locator("#vl-top li").count() == 5
    page.close()
    assert errors == []


def _open_on_gae(browser, path):
    """A page showing the report at ``path`` in its GAE view, and the report's embedded metadata."""
    page = browser.new_page()
    page.goto(path.as_uri())
    page.wait_for_function("Number(document.body.dataset.renders) >= 1")
    before = _renders(page)
    page.check("input[name=vl-view][value=gae]")
    _wait_for_render_after(page, before)
    return embedded(path.read_text())[0], page


def test_the_target_selector_switches_the_gradient_views_between_targets(browser, tmp_path):
    torch.manual_seed(1)
    model = peaked_model()
    images = torch.randn(2, 3, 32, 32)
    path = vitlens.viz.report.build(model, images, tmp_path / "r.html", references=[torch.randn(3, 32, 32)])
    meta, page = _open_on_gae(browser, path)
    targets = meta["images"][0]["targets"]
    assert page.locator("#vl-target option").all_inner_texts() == ["image: image 0"]
    np.testing.assert_allclose(_shown(page), targets[0]["gae"], atol=1e-5)
    page.close()
    path = vitlens.viz.report.build(model, images, tmp_path / "top.html")
    meta, page = _open_on_gae(browser, path)
    for i in (0, 1):
        if i:
            before = _renders(page)
            page.select_option("#vl-image", "1")
            _wait_for_render_after(page, before)
        targets = meta["images"][i]["targets"]
        assert page.locator("#vl-target option").all_inner_texts() == [t["label"] for t in targets]
        for j, t in enumerate(targets):
            before = _renders(page)
            page.select_option("#vl-target", str(j))
            _wait_for_render_after(page, before)
            np.testing.assert_allclose(_shown(page), t["gae"], atol=1e-5)
            assert f"for {t['label']}" in page.locator("#vl-status").inner_text()
            assert page.locator("#vl-top li.target").inner_text().startswith(t["label"])
        assert not np.allclose(targets[0]["gae"], targets[1]["gae"])  # switching changes the map
    page.close()


def test_the_attribution_views_show_their_embedded_maps(browser, tmp_path):
    pytest.importorskip("pytorch_grad_cam")
    pytest.importorskip("captum")
    torch.manual_seed(2)
    model = peaked_model()
    path = vitlens.viz.report.build(
        model, torch.randn(1, 3, 32, 32), tmp_path / "r.html", methods=["gradcam", "occlusion"]
    )
    meta, page = _open_on_gae(browser, path)
    assert [v["id"] for v in meta["views"]][-4:] == ["gae", "grad-rollout", "gradcam", "occlusion"]
    target = meta["images"][0]["targets"][0]
    for view in ("gradcam", "occlusion"):
        before = _renders(page)
        page.check(f"input[name=vl-view][value={view}]")
        _wait_for_render_after(page, before)
        np.testing.assert_allclose(_shown(page), target[view], atol=1e-5)
    page.close()
