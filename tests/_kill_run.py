"""Run ``nlpcompress run RECIPE`` and SIGKILL this process after optimizer step STEP of stage STAGE, or,
with STAGE ``hessian``, inside Q-BERT's power iteration at its STEP-th Hessian-vector product.

Usage: python tests/_kill_run.py STAGE STEP RECIPE [run options...]
The kill is a real SIGKILL (no cleanup, no exception handler runs), at a known point: a callback is
added to every Trainer the stages build (or the product is wrapped), before any stage module is imported.
"""

import os
import signal
import sys

from transformers import TrainerCallback

import nlpcompress.quant.hessian as hessian
import nlpcompress.stages.training as training

STAGE, STEP = sys.argv[1], int(sys.argv[2])


class KillAt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == STEP and os.path.basename(args.output_dir) == STAGE:
            os.kill(os.getpid(), signal.SIGKILL)


build_trainer = training.build_trainer


def build_with_kill(ctx, stage, model, trainer_class=training.CompressionTrainer, callbacks=None, **kwargs):
    return build_trainer(ctx, stage, model, trainer_class, [*(callbacks or []), KillAt()], **kwargs)


training.build_trainer = build_with_kill

products = 0
hessian_vector_product = hessian.hessian_vector_product


def product_with_kill(*args, **kwargs):
    global products
    products += 1
    if STAGE == "hessian" and products == STEP:
        os.kill(os.getpid(), signal.SIGKILL)
    return hessian_vector_product(*args, **kwargs)


hessian.hessian_vector_product = product_with_kill

from nlpcompress import cli  # noqa: E402  (after the patch, so the stages import the patched builder)

sys.exit(cli.main(["run", *sys.argv[3:]]))
