"""The benchmark code runs end to end on a tiny config; no timing is asserted anywhere."""

from __future__ import annotations

import json

import pytest
import torch

from vitlens import bench
from vitlens.bench import BenchCase
from vitlens.bench.memory import measure_memory
from vitlens.bench.modes import mode_functions
from vitlens.bench.timing import native_bf16

TINY = dict(img_size=16, depth=1, embed_dim=48, num_heads=3, mlp_dim=64)


def tiny_case(modes=("plain",), batch=2) -> BenchCase:
    return BenchCase("tiny", "vit_cifar", batch, modes=modes, overrides=TINY)


def test_interleaved_times_calls_each_function_warmup_plus_repeats_times_in_rotating_order():
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = bench.interleaved_times(fns, repeats=3, warmup=1)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for ts in times.values() for t in ts)
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        bench.interleaved_times(fns, repeats=0)


def test_summarize_and_peak():
    s = bench.summarize([0.003, 0.001, 0.002])
    assert s == {"median_ms": 2.0, "min_ms": 1.0, "max_ms": 3.0, "repeats": 3}
    assert bench.matmul_peak_gflops(size=64, repeats=1) > 0


def test_bad_case_is_refused_with_the_allowed_values():
    with pytest.raises(ValueError, match="unknown benchmark mode.*'fast'.*expected"):
        BenchCase("x", "vit_cifar", 2, modes=("fast",))
    with pytest.raises(ValueError, match="batch must be >= 1"):
        BenchCase("x", "vit_cifar", 0)
    with pytest.raises(ValueError, match="unknown peer"):
        bench.build_contenders(tiny_case().build(), ["jax"])


def test_run_case_every_mode_and_peer_with_the_same_weights():
    pytest.importorskip("timm")
    pytest.importorskip("transformers")
    pytest.importorskip("torchvision")
    modes = ("plain", "maps_all", "maps_last", "train", "plain_bf16", "train_bf16", "explain")
    result = bench.run_case(tiny_case(modes), repeats=1, peak_gflops=100.0, log=lambda _: None)
    # the peers computed the same logits as vitlens before anything was timed
    assert set(result["max_logit_diff"]) == {"timm", "hf", "torchvision"}
    assert max(result["max_logit_diff"].values()) < 1e-4
    rows = result["modes"]
    expected_plain = {"vitlens", "timm", "hf", "torchvision"} | ({"vit_pytorch"} - set(result["skipped_peers"]))
    assert set(rows["plain"]) == expected_plain
    assert set(rows["train"]) == expected_plain
    assert {"vitlens", "vitlens (plain)", "timm", "hf"} <= set(rows["maps_all"])
    assert "torchvision" not in rows["maps_all"]  # it cannot return maps
    if native_bf16(torch.device("cpu")):
        assert set(rows["plain_bf16"]) == {"vitlens bf16", "vitlens fp32", "timm bf16"}
    else:  # emulated bf16 would only measure the emulation
        assert set(result["skipped_modes"]) == {"plain_bf16", "train_bf16"} and "plain_bf16" not in rows
    assert rows["plain"]["vitlens"]["vitlens_speedup"] == 1.0
    for row in rows["plain"].values():
        assert row["repeats"] == 1 and row["images_per_s"] > 0 and row["gflops"] > 0
    assert set(rows["explain"]) == {"rollout", "gae"}
    assert all(r["speedup"] > 0 for r in rows["explain"].values())


def test_peer_maps_have_the_model_shape():
    pytest.importorskip("timm")
    model = tiny_case().build().eval()
    contenders, _ = bench.build_contenders(model, ["timm", "hf"])
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        ours = contenders[0].maps_all(x).attentions[0]
        by_name = {c.name: c for c in contenders}
        timm_maps = list(by_name["timm"].maps_all(x).values())[0]
        hf_logits, hf_maps = by_name["hf"].maps_all(x)
    assert ours.shape == (2, 3, 17, 17)
    torch.testing.assert_close(timm_maps, ours, atol=1e-5, rtol=0)
    torch.testing.assert_close(hf_maps[0], ours, atol=1e-5, rtol=0)


def test_compiled_training_mode_adds_a_compiled_contender():
    pytest.importorskip("timm")
    model = tiny_case().build()
    contenders, _ = bench.build_contenders(model, ["timm"])
    seen = []
    fns = mode_functions("train_compile", contenders, torch.randn(2, 3, 16, 16),
                               compile_fn=lambda m: seen.append(m) or m)  # fmt: skip
    assert set(fns) == {"vitlens", "vitlens compiled", "timm"} and seen == [model]
    bf16 = mode_functions("train_bf16", contenders, torch.randn(2, 3, 16, 16))
    assert set(bf16) == {"vitlens bf16", "vitlens fp32", "timm bf16"}
    before = model.head.weight.detach().clone()
    fns["vitlens compiled"]()
    assert not torch.equal(before, model.head.weight)  # the step trained the model


def test_memory_is_measured_in_a_subprocess():
    row = measure_memory(tiny_case(("memory",)), "vitlens", "maps_last")
    assert row["peak_bytes"] > 10 * 2**20 and row["forward_bytes"] >= 0


def test_results_are_written_as_json_and_markdown(tmp_path):
    result = bench.run_case(tiny_case(("plain", "maps_all")), peers=[], repeats=1, peak_gflops=100.0,
                            log=lambda _: None)  # fmt: skip
    report = {"machine": bench.machine_info(torch.device("cpu")), "dtype": "torch.float32",
              "matmul_peak_gflops": 100.0, "cases": [result]}  # fmt: skip
    json_path, md_path = bench.write_results(report, tmp_path / "out")
    assert json.loads(json_path.read_text())["cases"][0]["case"]["name"] == "tiny"
    md = md_path.read_text()
    assert "CPU allocator: " in md
    assert "## tiny: vit_cifar, batch 2" in md and "| maps_all | ms |" in md and "| vitlens (plain) |" in md
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["speed.json", "speed.md"]


def test_cli_bench_writes_results_and_refuses_bad_modes(tmp_path, capsys):
    from vitlens.commands.main import main

    args = ["bench", "--model", "vit_cifar", "--batch", "2", "--img-size", "16", "--repeats", "1", "--peers", ""]
    assert main(args + ["--modes", "plain", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "vit_cifar.json").exists() and (tmp_path / "vit_cifar.md").exists()
    assert main(args + ["--modes", "warp"]) == 2
    assert "unknown benchmark mode" in capsys.readouterr().err


def test_allocator_effect_benchmark_runs_both_allocators(capsys):
    import platform
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import allocator_effect

    assert allocator_effect.main(["--model", "vit_digits", "--batch", "2", "--repeats", "1", "--rounds", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("vit_digits, batch 2, 2 threads")
    rows = {line.split("  ")[0]: line for line in lines[2:]}
    assert set(rows) == {"glibc defaults", "tuned"}
    for row in rows.values():
        assert float(row.split()[-1]) > 0  # maps speed / plain speed
    if platform.libc_ver()[0] == "glibc":
        assert not any("had no effect" in line for line in lines)


@pytest.mark.parametrize("name", ["eva02_tiny_patch14_224", "vit_base_patch16_siglip_224"])
def test_timm_families_are_timed_against_timms_own_model(name):
    pytest.importorskip("timm")
    overrides = dict(img_size=28 if "patch14" in name else 32, depth=1)
    case = BenchCase("family", name, 1, modes=("plain", "maps_all"), overrides=overrides)
    result = bench.run_case(case, peers=["timm", "hf"], repeats=1, peak_gflops=100.0, log=lambda _: None)
    assert result["max_logit_diff"]["timm"] < 1e-4  # timm's Eva / VisionTransformer with the same weights
    assert "hf" in result["skipped_peers"] and set(result["modes"]["maps_all"]) >= {"vitlens", "timm"}


def test_the_maps_profile_compares_both_libraries_op_by_op(tmp_path):
    """benchmarks/maps_profile.py runs end to end and lists the attention ops of both maps paths."""
    pytest.importorskip("timm")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "maps_profile.py"
    spec = importlib.util.spec_from_file_location("maps_profile", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    stem = tmp_path / "profile"
    script.main(["--model", "vit_digits", "--batch", "2", "--repeats", "1", "--rounds", "2", "--stem", str(stem)])
    table = (tmp_path / "profile.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| `")}
    assert {"`aten::bmm`", "`aten::_softmax`"} <= set(rows)  # both paths form the maps explicitly
    assert "maps speed ÷ own plain" in table and "vit_digits, batch 2" in table
