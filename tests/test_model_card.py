"""The output's model card: what was converted, and what evaluation found once it has run."""

import json

from studio.core.convert import convert
from studio.core.project import Project
from studio.main import main

TEXT = ("The quick brown fox jumps over the lazy dog. " * 20).strip()


def test_card_says_not_evaluated_then_records_evaluation(tiny_model, tmp_path, capsys):
    source = tiny_model("llama")
    out = tmp_path / "out"
    convert(Project.open(source, "uniform-4bit"), out)
    card = (out / "README.md").read_text()
    assert "Not evaluated." in card and "| bits per weight, quantized weights | 4.500 |" in card
    assert json.loads((out / "configi_policy.json").read_text())["name"] == "Uniform 4-bit"

    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    assert main(["eval", str(out), "--reference", str(source), "--text", str(text), "--max-tokens", "64",
                 "--context", "32", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    card = (out / "README.md").read_text()
    assert "Not evaluated." not in card
    assert f"| perplexity, this model | {figures['ppl']:.4f} ± {figures['ppl_stderr']:.4f} |" in card
    assert f"| same top token as the reference (top-1 agreement) | {figures['top1_agreement']:.2%} ±" in card
    for name in ("KL divergence, 90 / 95 / 99 / 99.9th percentile", "RMS Δp", "computed on"):
        assert f"| {name}" in card
    assert card.count("## Quality") == 1 and "## Size" in card and "## Policy" in card
    assert json.loads((out / "evaluation.json").read_text())["kld_mean"] == figures["kld_mean"]


def test_folders_not_made_here_are_left_alone(tiny_model, tmp_path):
    from studio.core.card.model_card import record_evaluation

    folder = tmp_path / "theirs"
    folder.mkdir()
    (folder / "README.md").write_text("their card")
    assert record_evaluation(folder, object()) is False
    assert (folder / "README.md").read_text() == "their card"


def test_suggested_output_keeps_out_of_the_package(tmp_path):
    from pathlib import Path

    from studio.core.bundled import demo_model_path, suggested_output

    assert suggested_output(tmp_path / "MiniMax-M3", "Config-I") == tmp_path / "MiniMax-M3-config-i-mlx"
    assert suggested_output(tmp_path / "m", "Uniform 4-bit") == tmp_path / "m-uniform-4-bit-mlx"
    if demo_model_path():
        assert suggested_output(demo_model_path()) == Path.home() / "Config-I Studio" / "demo_model-config-i-mlx"


def test_an_output_reopens_under_the_policy_that_made_it(tiny_model, tmp_path):
    out = tmp_path / "out"
    convert(Project.open(tiny_model("llama"), "mixed-3-6"), out)
    again = Project.open(out)
    assert again.policy.name == "Mixed 3/6 (mlx-lm mixed_3_6)"
    assert Project.open(out, "uniform-8bit").policy.name == "Uniform 8-bit"


def test_no_path_of_this_machine_reaches_a_card_or_evaluation(tmp_path):
    """Issue 18: the card named the source by its absolute path (and the evaluation its reference and
    text), and publish uploads both. After a calibrated conversion from a custom text and an
    evaluation recorded in the folder, no file of the output names a folder of this machine."""
    from pathlib import Path

    from studio.core.calibration.methods import calibrate_and_convert
    from studio.core.card.eval_record import evaluate_and_record

    from factory import make_tiny_model

    private = tmp_path / "alice-private-models"
    source = make_tiny_model("qwen3_moe", private / "tiny-moe")
    calibration = private / "my-calibration.txt"
    calibration.write_text(TEXT * 4)
    evaluation = private / "my-eval.txt"
    evaluation.write_text(TEXT)
    out = tmp_path / "published" / "out"
    calibrate_and_convert(Project.open(source, "uniform-4bit"), out, text=calibration)
    recorded = evaluate_and_record(out, source, text_path=evaluation, max_tokens=64, context=32,
                                   cache_dir=tmp_path / "cache")
    assert recorded.recorded is True
    card = (out / "README.md").read_text()
    assert "`tiny-moe`" in card and "my-calibration.txt" in card and "`my-eval.txt`" in card
    for file in sorted(out.iterdir()):
        if file.suffix in (".md", ".json", ".txt", ".jinja"):
            text = file.read_text()
            for secret in (str(tmp_path), "alice-private-models", str(Path.home())):
                assert secret not in text, f"{file.name} names {secret}"
    assert json.loads((out / "evaluation.json").read_text())["reference"] == "tiny-moe"
