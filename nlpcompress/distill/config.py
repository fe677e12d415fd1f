"""What a distillation run optimises: method, phase, temperature, one weight per loss term, and the
optional data augmentation of its train rows."""

import dataclasses
from dataclasses import dataclass, field, fields

from nlpcompress.errors import ConfigError
from nlpcompress.trainer import TEACHER_DTYPES

METHODS = ("distilbert", "tinybert", "kd")
PHASES = ("intermediate", "prediction")
WEIGHTS = ("alpha_ce", "alpha_task", "alpha_cos", "alpha_embd", "alpha_hidn", "alpha_attn")

# Default weights and temperature per (method, phase); a weight not listed is not allowed for that method.
# distilbert: the DistilBERT training script (alpha_ce 5, alpha_mlm 2, alpha_cos 1, T 2), the label
# loss standing in for MLM in task distillation. kd: Hinton et al. (2015). tinybert: Jiao et al. (2020)
# §3.1, every layer term with weight 1, then soft CE at t = 1.
DEFAULTS: dict[tuple[str, str | None], dict[str, float]] = {
    ("distilbert", None): {"alpha_ce": 5.0, "alpha_task": 2.0, "alpha_cos": 1.0, "temperature": 2.0},
    ("kd", None): {"alpha_ce": 1.0, "alpha_task": 1.0, "temperature": 2.0},
    ("tinybert", "intermediate"): {"alpha_embd": 1.0, "alpha_hidn": 1.0, "alpha_attn": 1.0},
    ("tinybert", "prediction"): {"alpha_ce": 1.0, "alpha_task": 0.0, "temperature": 1.0},
}


@dataclass
class AugmentConfig:
    """TinyBERT's data augmentation (Jiao et al. 2020, §3.1 and Algorithm 1) of the train rows a distilling
    stage trains on; defaults are the paper's values (N_a = 20, p_t = 0.4, K = 15).

    ``copies``: augmented copies per train row (N_a). ``p``: the probability of replacing each word (p_t).
    ``candidates``: the K replacement candidates per word. ``mlm``: a local masked-LM checkpoint (a
    folder) whose tokenizer matches the run's, for the candidates of single-piece words; null: the
    teacher's input word embeddings give every word's candidates (its nearest neighbours by cosine).
    ``seed``: the generator's seed (null: the run's seed). Only train rows are augmented; a copy is labelled
    by the teacher (its class, or its value for a regression) for the task term. The generator is
    ``nlpcompress.distill.augment``, the rows a stage trains on ``nlpcompress.stages.augmentation``.
    """

    copies: int = 20
    p: float = 0.4
    candidates: int = 15
    mlm: str | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.copies, bool) or not isinstance(self.copies, int) or self.copies < 1:
            raise ConfigError("copies", self.copies, "must be an integer >= 1")
        if isinstance(self.p, bool) or not isinstance(self.p, int | float) or not 0 < self.p <= 1:
            raise ConfigError("p", self.p, "must be a number in (0, 1]")
        if isinstance(self.candidates, bool) or not isinstance(self.candidates, int) or self.candidates < 1:
            raise ConfigError("candidates", self.candidates, "must be an integer >= 1")
        if self.mlm is not None and (not isinstance(self.mlm, str) or not self.mlm.strip()):
            raise ConfigError("mlm", self.mlm, "must be the folder of a masked-LM checkpoint, or null")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ConfigError("seed", self.seed, "must be an integer or null")
        self.p = float(self.p)


def augment_config(value: object) -> AugmentConfig | None:
    """``augment:`` (a mapping, a config or null) as a config; errors name the nested key."""
    if value is None or isinstance(value, AugmentConfig):
        return value
    if not isinstance(value, dict):
        raise ConfigError("augment", value, "must be a mapping (copies, p, candidates, mlm, seed) or null")
    try:
        return AugmentConfig(**value)
    except ConfigError as err:
        raise ConfigError(f"augment.{err.field}", err.value, err.message) from None
    except TypeError as err:
        raise ConfigError("augment", value, str(err)) from None


@dataclass
class DistillationConfig:
    """Typed, validated distillation settings; unset weights take the method's defaults (``DEFAULTS``).

    ``alpha_ce`` weighs the soft-target term (T²·KL for distilbert/kd, soft CE for tinybert's prediction
    phase), ``alpha_task`` the student's own loss on the labels (CE, MSE for STS-B, or MLM when ``mlm``),
    ``alpha_cos`` DistilBERT's cosine term, ``alpha_embd/hidn/attn`` TinyBERT's layer terms.
    ``teacher_layers[m-1]`` is the teacher layer (1..N) that student layer m imitates (TinyBERT's g(m));
    None = uniform. ``augment``: TinyBERT's data augmentation of the train rows (``AugmentConfig``), for
    every method; None = the rows as they are.
    """

    method: str = "distilbert"
    phase: str | None = None
    temperature: float | None = None
    alpha_ce: float | None = None
    alpha_task: float | None = None
    alpha_cos: float | None = None
    alpha_embd: float | None = None
    alpha_hidn: float | None = None
    alpha_attn: float | None = None
    teacher_layers: list[int] | None = None
    mlm: bool = False
    teacher_dtype: str = "float32"
    augment: AugmentConfig | None = None
    weights: dict[str, float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError("method", self.method, f"unknown method; allowed: {', '.join(METHODS)}")
        if self.method == "tinybert" and self.phase not in PHASES:
            raise ConfigError(
                "phase", self.phase, f"tinybert needs phase {' or '.join(PHASES)} (two stages, in that order)"
            )
        if self.method != "tinybert" and self.phase is not None:
            raise ConfigError("phase", self.phase, "only method tinybert has phases")
        if self.teacher_dtype not in TEACHER_DTYPES:
            raise ConfigError("teacher_dtype", self.teacher_dtype, f"allowed: {', '.join(TEACHER_DTYPES)}")
        defaults = DEFAULTS[(self.method, self.phase)]
        for name in ("temperature", *WEIGHTS):
            value = getattr(self, name)
            if value is not None and name not in defaults:
                where = f"{self.method} {self.phase or ''}".strip()
                raise ConfigError(name, value, f"does not apply to method {where}")
            if value is None and name in defaults:
                setattr(self, name, defaults[name])
        if self.temperature is not None and not self.temperature > 0:
            raise ConfigError("temperature", self.temperature, "must be > 0")
        weights = {name: getattr(self, name) for name in WEIGHTS if getattr(self, name) is not None}
        for name, value in weights.items():
            if not value >= 0:
                raise ConfigError(name, value, "must be >= 0")
        if not any(weights.values()):
            raise ConfigError(
                "alpha_*", weights, "all loss weights are zero; at least one term must be trained"
            )
        self.augment = augment_config(self.augment)
        if self.mlm and self.method == "tinybert":
            raise ConfigError("mlm", self.mlm, "applies to methods distilbert and kd")
        self.weights = {name.removeprefix("alpha_"): value for name, value in weights.items() if value > 0}

    def as_dict(self) -> dict[str, object]:
        """The resolved settings (defaults filled in), for results.json."""
        return {
            f.name: dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
            for f in fields(self)
            if f.init and (value := getattr(self, f.name)) is not None
        }


def logit_distillation(value: object, stage: str) -> DistillationConfig | None:
    """A compression stage's ``distillation:`` setting (a mapping or a config) as a config: kd or distilbert,
    which distil the logits; errors name the nested key."""
    if isinstance(value, dict):
        try:
            value = DistillationConfig(**value)
        except ConfigError as err:
            raise ConfigError(f"distillation.{err.field}", err.value, err.message) from None
        except TypeError as err:
            raise ConfigError("distillation", value, str(err)) from None
    if value is not None and value.method == "tinybert":
        raise ConfigError(
            "distillation.method", "tinybert", f"{stage} distils the logits: use kd or distilbert"
        )
    return value
