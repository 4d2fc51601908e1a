"""Two processes under torchrun (gloo, CPU) train exactly like one process with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from bertbook import runstate, train
from bertbook.config import get_preset

COMMON = {"model.hidden_dropout_prob": 0.0, "model.attention_probs_dropout_prob": 0.0,  # dropout off
          "pretrain.max_steps": 6, "pretrain.batch_size": 4, "pretrain.eval_every": 6,
          "pretrain.checkpoint_every": 6, "pretrain.eval_batches": 1,
          "pretrain.precision": "fp32"}  # exact math: bf16 would round the two orders of summation apart


@pytest.mark.slow
def test_two_processes_match_one(artifacts, tmp_path):
    from bertbook.tokenizer import get_tokenizer

    get_tokenizer(get_preset("ci"))  # made once here, so both ranks read the same one
    # one process: batch 4 x 2 accumulation steps = 8 sequences per step
    single = train.pretrain(get_preset("ci", **COMMON, **{"pretrain.grad_accum_steps": 2}), tmp_path / "one",
                            progress=False, verbose=False)
    # two processes: batch 4 each = 8 sequences per step; rank r reads micro-batch r of each step
    sets = [f"--set={k}={v}" for k, v in COMMON.items()]
    env = {**os.environ, "BERTBOOK_ARTIFACTS": str(artifacts), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "bertbook", "pretrain", "--preset", "ci", "--out", str(tmp_path / "two"), "--no-progress",
           "--device", "cpu", *sets]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1  # only rank 0 reports
    run = runstate.read_run(tmp_path / "two" / "checkpoint")
    assert run["world_size"] == 2 and run["finished"] and run["tokens"] == 6 * 8 * 64
    assert [p.name for p in (tmp_path / "two").iterdir()] == ["checkpoint"]  # rank 0 alone writes
    # the same data, masks and mean gradients: the same losses and the same weights
    losses_two = [r["loss"] for r in run["history"]["train"]]
    torch.testing.assert_close(torch.tensor(losses_two), torch.tensor([r["loss"] for r in single.train]),
                               rtol=1e-5, atol=1e-5)
    a = load_file(str(tmp_path / "one" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "checkpoint" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    assert json.loads(summaries[0])["step"] == 6
