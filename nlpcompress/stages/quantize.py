"""The `quantize` stage: Q-BERT (Shen et al. 2020) group-wise mixed-precision quantization, uniform
quantization-aware training, or post-training quantization; the saved model stores packed integers."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import model_validator

from nlpcompress.distributed import distributed_shard, global_batches, is_main
from nlpcompress.errors import UserError
from nlpcompress.quant.allocation import allocate_bits, average_bits
from nlpcompress.quant.config import QuantizationConfig
from nlpcompress.quant.hessian import layer_parameters, layer_sensitivity, plot_sensitivity, save_sensitivity
from nlpcompress.quant.qat import (
    attach_input_ranges,
    attach_quantizers,
    calibrate_input_ranges,
    layer_sizes,
    quantization_errors,
    store_quantized,
)
from nlpcompress.schema import config_keys, validation_error
from nlpcompress.stages.recovery import RecoveringStage
from nlpcompress.stages.registry import Model, StageContext, StageOutput, register_stage
from nlpcompress.stages.training import collator, evaluate


@register_stage
class QuantizeStage(config_keys(QuantizationConfig), RecoveringStage):
    """Quantize the encoder weights to 2–8 bits per group (Q-BERT §3), train with fake quantization, store them packed."""

    type: Literal["quantize"]
    config_class: ClassVar[type] = QuantizationConfig
    accepts: ClassVar[frozenset[str]] = frozenset({"factorized", "shared"})
    prepares: ClassVar[tuple[str, ...]] = ("densify", "bake", "remove_dead_units")
    produces_states: ClassVar[frozenset[str]] = frozenset({"quantized"})
    legacy_train_key: ClassVar[str] = "qat"

    def default_train(self) -> bool:
        """Quantization-aware training unless the method is post-training."""
        return self.method != "ptq"

    @model_validator(mode="after")
    def _ptq_does_not_train(self) -> QuantizeStage:
        if self.method == "ptq" and self.recovery_config().train:
            raise validation_error(
                [(("recovery", "train"), True, "method ptq does not train; use method uniform to train")]
            )
        return self

    def run(self, model: Model, ctx: StageContext) -> StageOutput:
        config: QuantizationConfig = self.config()
        sizes = layer_sizes(model)
        if not sizes:
            raise UserError(f"stage {self.name!r}: the model has no dense encoder linears to quantize")
        info: dict[str, Any] = {"quantize": config.as_dict()}
        if config.method == "qbert":
            layer_bits = self._hessian_bits(model, ctx, config, sizes, info)
        else:
            layer_bits = dict.fromkeys(sizes, int(config.avg_bits))
        attach_quantizers(
            model,
            layer_bits,
            config.groups,
            config.embedding_bits,
            config.clip,
            config.percentile,
            config.position_embedding_bits,
            config.head_bits,
        )
        if config.activation_bits is not None:
            self._learn_input_ranges(model, ctx, config)
            info["activation_bits"] = config.activation_bits
        info["bits_per_layer"] = layer_bits
        info["average_bits"] = round(average_bits(layer_bits, sizes), 4)
        info["metrics_before_training"] = evaluate(model, ctx)
        if self.recovery_config().train:
            info |= self.recover(model, ctx)  # fake-quantized forward, STE gradients
        info["stored_quantized"] = store_quantized(model)
        metrics = evaluate(model, ctx)
        return StageOutput(model=model, metrics=metrics, info=info)

    def _learn_input_ranges(self, model: Model, ctx: StageContext, config: QuantizationConfig) -> None:
        """8-bit input ranges on every quantized linear, started at the min and max over the first
        ``calibration_samples`` training rows (the same rows in every process)."""
        if ctx.train_dataset is None:
            raise UserError(f"stage {self.name!r}: activation_bits needs the train split to calibrate on")
        ranges = attach_input_ranges(model)
        batches = global_batches(  # every process all the rows: the same ranges everywhere
            ctx.train_dataset, collator(ctx), config.hessian_batch_size, limit=config.calibration_samples
        )
        device = next(model.parameters()).device
        calibrate_input_ranges(
            model, ranges, ({k: v.to(device) for k, v in batch.items()} for batch, _share in batches)
        )

    def _hessian_bits(
        self, model: Model, ctx: StageContext, config: QuantizationConfig, sizes: dict[str, int], info: dict
    ) -> dict[str, int]:
        """Each layer's Hessian sensitivity Ω on the first training rows, then bits by the allocation rule."""
        if ctx.train_dataset is None:
            raise UserError(f"stage {self.name!r}: method qbert needs the train split for the Hessian")
        rank, world = distributed_shard()
        batches = list(
            global_batches(
                ctx.train_dataset,
                collator(ctx),
                config.hessian_batch_size,
                rank,
                world,
                config.hessian_samples,
            )
        )
        sensitivity = layer_sensitivity(
            model,
            batches,
            layer_parameters(model),
            iterations=config.hessian_iterations,
            tolerance=config.hessian_tolerance,
            trace=config.hessian_trace,
            progress=ctx.progress,
            seed=ctx.seed,
        )
        omega = {layer: sensitivity[layer].omega for layer in sizes}
        errors = (
            quantization_errors(model, config.candidate_bits, config.groups, config.clip, config.percentile)
            if config.allocation == "exact"
            else None
        )
        layer_bits = allocate_bits(
            omega, sizes, config.avg_bits, config.candidate_bits, config.allocation, errors
        )
        info["sensitivity"] = {layer: s.as_dict() for layer, s in sensitivity.items()}
        if is_main():
            folder = ctx.artifacts_dir
            folder.mkdir(parents=True, exist_ok=True)
            save_sensitivity(folder / f"{self.name}-hessian.json", sensitivity, layer_bits)
            plot_sensitivity(folder / f"{self.name}-hessian.png", sensitivity, layer_bits)
            info["artifacts"] = [f"{self.name}-hessian.json", f"{self.name}-hessian.png"]
        return layer_bits
