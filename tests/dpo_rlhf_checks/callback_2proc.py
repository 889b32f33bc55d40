"""Run by test_trl_parallel.py under ``accelerate launch`` (and once alone): two training steps of
LibraryLossDPOTrainer with ScoreAuditCallback; writes what each process saw to OUT/rank{R}.json."""

import json
import sys
from pathlib import Path

import datasets
import trl

from dpo_rlhf_checks.integrations import tiny
from dpo_rlhf_checks.integrations.trl import LibraryLossDPOTrainer, ScoreAuditCallback

out = Path(sys.argv[1])
model, tok = tiny.build_causal_lm(seed=0)
ref, _ = tiny.build_causal_lm(seed=0)
ds = datasets.Dataset.from_list(tiny.preference_rows(24, seed=3))
args = trl.DPOConfig(output_dir=str(out), max_steps=2, per_device_train_batch_size=4, per_device_eval_batch_size=4,
                     logging_steps=1, learning_rate=1e-2, beta=0.5, report_to="none", save_strategy="no",
                     use_cpu=True, seed=0, max_length=64, disable_tqdm=True, dataset_num_proc=None, bf16=False,
                     eval_strategy="steps", eval_steps=2)
trainer = LibraryLossDPOTrainer(model=model, ref_model=ref, args=args, train_dataset=ds, eval_dataset=ds,
                                processing_class=tok, loss_name="dpo")
cb = ScoreAuditCallback(trainer)
trainer.add_callback(cb)
trainer.train()
rank = trainer.accelerator.process_index
# The final policy (the one the step-2 evaluation saw) scored here in one process, without the callback
import numpy as np  # noqa: E402
import torch  # noqa: E402

from dpo_rlhf_checks import score as S  # noqa: E402

policy = trainer.accelerator.unwrap_model(trainer.model)
cols = S.score_pairs(policy, tok, list(ds), config=S.ScoreConfig(max_length=64), ref_model=ref,
                     device=torch.device("cpu")).columns
accuracy = float(np.mean(cols["chosen_logps"] - cols["rejected_logps"] >= 0))
(out / f"rank{rank}.json").write_text(json.dumps({
    "world": trainer.accelerator.num_processes, "sequences_scored": cb.sequences_scored,
    "audit": cb.last_audit, "policy_ranking_accuracy_alone": accuracy}))
