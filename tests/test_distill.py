"""Distillation (``kind: finetune, method: distill``): the loss against numbers worked out by hand,
the frozen teacher, the spec errors, and one run through the real ``gristmill`` command (Ray Train +
Lightning on token shards) whose student is then exported for transformers and scored by ``kind:
eval`` next to its own checkpoint."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from pipelines.errors import SpecError
from pipelines.specs import load_spec
from tests.pretrain_shards import write_shards
from tests.tiny_lm import tiny_config, train_tokenizer
from training.checkpoint import save_model
from training.finetune.distill import IGNORE_INDEX, DistillModule, distillation_loss, next_token_targets
from training.lightning_module import OptimConfig, ScheduleConfig
from training.model import ModelConfig, Transformer

torch.set_num_threads(1)

# --------------------------------------------------------------------------------------------------
# the loss, by hand


def _softmax(z: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def _by_hand(student: list[list[float]], teacher: list[list[float]], targets: list[int], t: float, alpha: float):
    """Hinton et al. 2015 on plain floats: mean over counted tokens of α·T²·KL(p_t‖p_s) + (1-α)·CE."""
    kls, ces = [], []
    for s, te, y in zip(student, teacher, targets):
        if y == IGNORE_INDEX:
            continue
        ps, pt = _softmax(s, t), _softmax(te, t)
        kls.append(sum(a * math.log(a / b) for a, b in zip(pt, ps)))
        ces.append(-math.log(_softmax(s, 1.0)[y]))
    n = len(kls)
    return alpha * t * t * sum(kls) / n + (1 - alpha) * sum(ces) / n, kls, ces


STUDENT = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.0], [3.0, -2.0, 0.5]]
TEACHER = [[1.0, 1.5, -0.5], [0.5, 2.5, -1.0], [-4.0, 4.0, 0.0]]
TARGETS = [1, 1, IGNORE_INDEX]  # the third position is a prompt token: counts in neither term


@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.5), (2.0, 0.5), (4.0, 0.9), (2.0, 0.0), (2.0, 1.0)])
def test_loss_equals_the_hand_computed_value(temperature, alpha):
    expected, kls, ces = _by_hand(STUDENT, TEACHER, TARGETS, temperature, alpha)
    out = distillation_loss(torch.tensor([STUDENT]), torch.tensor([TEACHER]), torch.tensor([TARGETS]),
                            temperature, alpha)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert out["kl"].tolist() == pytest.approx(kls, rel=1e-5) and out["ce"].tolist() == pytest.approx(ces, rel=1e-5)


def test_loss_mixing_temperature_scaling_and_masking():
    s, t, y = torch.tensor([STUDENT]), torch.tensor([TEACHER]), torch.tensor([TARGETS])
    kl_t2 = distillation_loss(s, t, y, 2.0, 1.0)
    ce = distillation_loss(s, t, y, 2.0, 0.0)["loss"]
    # alpha = 1: T² times the mean KL at temperature T; alpha = 0: the mean cross-entropy at T = 1
    assert kl_t2["loss"].item() == pytest.approx(4.0 * kl_t2["kl"].mean().item(), rel=1e-6)
    assert ce.item() == pytest.approx(torch.nn.functional.cross_entropy(s[0, :2], y[0, :2]).item(), rel=1e-6)
    mixed = distillation_loss(s, t, y, 2.0, 0.3)["loss"]
    assert mixed.item() == pytest.approx(0.3 * kl_t2["loss"].item() + 0.7 * ce.item(), rel=1e-6)
    # the ignored position's logits change nothing; a teacher equal to the student leaves only CE
    shifted = s.clone()
    shifted[0, 2] += torch.tensor([5.0, -5.0, 1.0])
    assert distillation_loss(shifted, t, y, 2.0, 0.3)["loss"].item() == pytest.approx(mixed.item(), rel=1e-6)
    assert distillation_loss(s, s, y, 2.0, 0.3)["loss"].item() == pytest.approx(0.7 * ce.item(), rel=1e-6)
    # nothing counted: zero loss that still back-propagates (a row of prompt tokens only)
    s.requires_grad_(True)
    empty = distillation_loss(s, t, torch.full_like(y, IGNORE_INDEX), 2.0, 0.5)
    empty["loss"].backward()
    assert empty["loss"].item() == 0.0 and empty["kl"].numel() == 0 and s.grad is not None


def test_targets_mask_the_prompt_tokens():
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    assert next_token_targets({"input_ids": ids}, 4).tolist() == [[6, 7, 8, 9]]
    mask = torch.tensor([[0, 0, 1, 1, 0]])
    assert next_token_targets({"input_ids": ids, "loss_mask": mask}, 4).tolist() == [[IGNORE_INDEX, 7, 8, IGNORE_INDEX]]


# --------------------------------------------------------------------------------------------------
# the module: the teacher is frozen, the student learns from it


def _checkpoint(folder: Path, tok, config: ModelConfig, seed: int) -> Path:
    torch.manual_seed(seed)
    model = Transformer(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)  # O(1) logits, as a trained model has: a teacher worth copying
    save_model(folder, model, config)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def test_teacher_is_frozen_and_the_student_moves_towards_it(tmp_path, shakespeare_bpe):
    teacher_dir = _checkpoint(tmp_path / "teacher", shakespeare_bpe, tiny_config("llama"), seed=0)
    student_config = tiny_config("llama", n_layer=1, d_model=32, n_head=2)
    torch.manual_seed(1)
    module = DistillModule(student_config, OptimConfig(lr=1e-2, weight_decay=0.0), ScheduleConfig(kind="constant"),
                           20, True, str(teacher_dir), temperature=2.0, alpha=1.0)
    teacher = module.teacher
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not any(p is q for p in module.parameters() for q in teacher.parameters())  # not trained
    assert not any("teacher" in k for k in module.state_dict())  # not in checkpoints
    assert sum(p.numel() for p in module.parameters()) == student_config.num_params()
    ids = torch.randint(7, 320, (4, 33))
    batch = {"input_ids": ids, "segment_ids": torch.zeros_like(ids)}
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2)
    module.train()
    first = None
    for _ in range(20):
        loss = module.training_step(batch, 0)
        loss.backward()
        assert all(p.grad is None for p in teacher.parameters())
        assert all(p.grad is not None for p in module.model.parameters())
        optimizer.step()
        optimizer.zero_grad()
        first = first if first is not None else float(module.train_sums.sums[0] / module.train_sums.sums[-1])
    assert not teacher.training  # module.train() never reaches it
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    kl_after = float(module.terms(batch)["kl"].mean())
    assert kl_after < 0.5 * first, (first, kl_after)


# --------------------------------------------------------------------------------------------------
# spec errors


def _distill_spec(folder: Path, body: str) -> str:
    path = folder / "distill.yaml"
    path.write_text("kind: finetune\nname: distill-test\nmethod: distill\nmax_steps: 2\n" + body)
    return str(path)


def _issues(spec: str) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    return "\n".join(str(i) for i in info.value.issues)


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory) -> Path:
    """Token shards (rows of 33 tokens) with the 320-token BPE, shared by the tests below."""
    folder = tmp_path_factory.mktemp("shards")
    write_shards(folder, seq_len=32, max_chars=20_000)
    return folder


def test_spec_errors(tmp_path, shards_dir):
    (tmp_path / "data").symlink_to(shards_dir)
    other_tok = train_tokenizer(vocab_size=300)  # another tokenizer: other ids for the same strings
    _checkpoint(tmp_path / "stranger", other_tok, tiny_config("llama", vocab_size=300), seed=0)
    (tmp_path / "empty").mkdir()

    text = _issues(_distill_spec(tmp_path, "student: tiny\ndata: {shards: data}\n"))
    assert "method distill needs a `distill` block naming the teacher" in text
    text = _issues(_distill_spec(tmp_path, "student: tiny\ndistill: {temperature: 2}\ndata: {shards: data}\n"))
    assert "distill.yaml:6:" in text and "distill.teacher: required field is missing" in text
    text = _issues(_distill_spec(tmp_path, "from: empty\nstudent: tiny\ndistill: {teacher: empty}\ndata: {shards: data}\n"))
    assert "give `from` (the student's start checkpoint) or `student`" in text
    text = _issues(_distill_spec(tmp_path, "student: tiny\ndistill: {teacher: empty}\ndata: {shards: data}\n"))
    assert "distill.yaml:6:" in text and "distill.teacher" in text and "holds no model checkpoint" in text
    text = _issues(_distill_spec(tmp_path, "student: {preset: tiny, n_layer: 1}\ndistill: {teacher: stranger, alpha: 0.5}\n"
                                           "data: {shards: data}\n"))
    assert "distill.yaml:7:" in text and "data.shards: the teacher's tokenizer" in text
    assert "300 tokens" in text and "is not the shards' (" in text and "320 tokens" in text
    assert "distillation compares logits id by id" in text
    # sft has no teacher and no token shards
    text = _issues(str(_write(tmp_path / "sft.yaml", "kind: finetune\nname: s\nmethod: sft\nfrom: empty\nmax_steps: 1\n"
                                                     "distill: {teacher: empty}\ndata: {shards: data}\n")))
    assert "a `distill` block needs method: distill" in text


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_vocab_mismatch_between_checkpoints(tmp_path, shards_dir):
    """Same tokenizer file, different output sizes (a teacher with a padded vocabulary): refused."""
    (tmp_path / "data").symlink_to(shards_dir)
    tok = __import__("tokenizers").Tokenizer.from_file(str(tmp_path / "data" / "tokenizer" / "tokenizer.json"))
    _checkpoint(tmp_path / "teacher", tok, tiny_config("llama", vocab_size=384), seed=0)
    _checkpoint(tmp_path / "student", tok, tiny_config("llama", n_layer=1), seed=1)
    text = _issues(_distill_spec(tmp_path, "from: student\ndistill: {teacher: teacher}\ndata: {shards: data}\n"))
    assert "distill.teacher" in text and "384 logits per token, the student's 320" in text


# --------------------------------------------------------------------------------------------------
# end to end: gristmill run → checkpoints, metrics with kl / ce, resume; export → kind: eval


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, ray_address, shards_dir):
    from tests.conftest import run_gristmill

    root = tmp_path_factory.mktemp("distill")
    (root / "data").symlink_to(shards_dir)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(root / "data" / "tokenizer" / "tokenizer.json"))
    _checkpoint(root / "teacher", tok, tiny_config("llama"), seed=0)
    spec = _write(root / "distill.yaml", """kind: finetune
name: distill-e2e
method: distill
student: {preset: tiny, n_layer: 1, d_model: 32, n_head: 2}   # a fresh student, smaller than the teacher
distill: {teacher: teacher, temperature: 2.0, alpha: 0.5}
data: {shards: data}
max_steps: 4
batch: {micro_batch: 4}
eval_every: 2
eval_batches: 2
checkpoint_every: 2
log_every: 2
scaling: {num_workers: 1}
""")
    out = root / "out"
    env = {"OMP_NUM_THREADS": "1"}
    run_gristmill("run", str(spec), "--out", str(out), address=ray_address, timeout=600, env=env)
    again = run_gristmill("run", str(spec), "--out", str(out), address=ray_address, timeout=300, env=env)
    return root, out, again


def test_distill_run_end_to_end(distilled):
    root, out, again = distilled
    manifest = json.loads((out / "manifest.json").read_text())
    (stage,) = manifest["stages"]  # token shards: no prepare stage
    assert stage["status"] == "done" and stage["plan"]["method"] == "distill" and stage["base"] is None
    assert stage["plan"]["params"] < stage["plan"]["teacher_params"] and stage["teacher"] == str(root / "teacher")
    with (out / "metrics" / "train.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    for r in rows:  # loss = α·T²·kl + (1-α)·ce over the same tokens
        assert float(r["loss"]) == pytest.approx(0.5 * 4 * float(r["kl"]) + 0.5 * float(r["ce"]), rel=1e-4)
    assert rows[-1]["val_loss"] and rows[-1]["val_kl"] and float(rows[-1]["val_ce"]) == pytest.approx(
        float(rows[-1]["val_loss"]), rel=1e-6)
    ckpt = out / "checkpoints" / "step-000004"
    config = json.loads((ckpt / "model_config.json").read_text())["config"]
    assert config["n_layer"] == 1 and config["d_model"] == 32 and config["vocab_size"] == 320
    assert (ckpt / "tokenizer.json").is_file() and (ckpt / "model.safetensors").is_file()
    assert "skipped" in again.stderr  # rerunning the finished spec resumes (here: nothing left to do)


def test_hf_export_is_an_eval_checkpoint(distilled):
    """The student exported for transformers (`gristmill export`, training/export.py) is a `kind: eval`
    checkpoint: the spec accepts it, and the evaluation task that the eval run sends to Ray scores it
    exactly as it scores the checkpoint it came from (perplexity on the val shards)."""
    from pipelines.eval_run import _evaluate_checkpoint, checkpoint_labels
    from training.export import export_hf

    root, out, _ = distilled
    ckpt = out / "checkpoints" / "step-000004"
    hf = export_hf(ckpt, root / "student-hf")
    spec = _write(root / "eval.yaml", f"""kind: eval
name: eval-hf
checkpoints: [{ckpt}, {hf}]
tasks:
  - perplexity: {{shards: data}}
batch_size: 8
""")
    loaded = load_spec(str(spec))
    assert checkpoint_labels(loaded.model.checkpoints) == ["out/step-000004", "student-hf"]
    scored = [_evaluate_checkpoint(c, loaded.model.tasks, 8, "cpu") for c in loaded.model.checkpoints]
    (ours,), (theirs,) = (list(s["tasks"].values()) for s in scored)
    assert ours["metrics"]["perplexity"] == pytest.approx(theirs["metrics"]["perplexity"], rel=1e-5)
    assert 1 < ours["metrics"]["perplexity"] < 400 and scored[1]["model"]["params"] == scored[0]["model"]["params"]
