"""The filter stage's options (``capcrawl filter``): declared once, validated on construction."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ConfigError
from common.layout import crawl_dir, scored_dir
from common.options import (
    CLUSTER_EXTRA,
    EXECUTORS,
    between,
    check_executor,
    check_fields,
    non_negative,
    option,
    optional,
    parse_list,
    positive,
    replace_frozen,
)

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
#: LAION-5B's English cut-off for ViT-B/32 (cosine). Model-specific: other models need their own.
DEFAULT_THRESHOLD = 0.28
DEFAULT_LABEL_TEMPLATE = "a photo of {}."
DEFAULT_BATCH_SIZE = 256
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
GENERATE_MODES = ("auto", "yes", "no")

_MODEL, _HW, _THRESH, _CAPS, _OUT = "model", "hardware", "thresholds", "candidate captions", "output and splitting"
_CLUSTER = "cluster"
#: The options of the Ray executor (``capcrawl run`` filters locally and does not offer them).
CLUSTER_OPTIONS = ("executor", "ray_address", "gpus_per_worker")


@dataclass(frozen=True)
class FilterConfig:
    """Everything the filter stage needs; invalid values raise ConfigError when it is built."""

    work: Path = option(flag="--work", help="work directory holding crawl/ (scored/ is written there)", required=True)
    model: str = option(DEFAULT_MODEL, "--model", f"open_clip architecture name, hf-hub:ORG/NAME, or a path to a "
                        f"model-config JSON (default {DEFAULT_MODEL})", group=_MODEL)
    pretrained: str | None = option(DEFAULT_PRETRAINED, "--pretrained", "open_clip pretrained tag, a local checkpoint "
                                    f"file, or 'none' for random weights (default {DEFAULT_PRETRAINED}); offline, pass "
                                    "a checkpoint file", group=_MODEL)
    model_cache_dir: str | None = option(None, "--model-cache-dir", "where pretrained tags are downloaded and looked up "
                                         "(default: the Hugging Face cache)", group=_MODEL)
    device: str = option("auto", "--device", "auto (cuda when available), cpu, or cuda[:N] (default auto)", group=_HW)
    precision: str = option("auto", "--precision", "auto = fp16 autocast on CUDA, fp32 on CPU (default auto)",
                            choices=PRECISIONS, group=_HW)
    decode: str = option("auto", "--decode", "where stored JPEGs are decoded and resized: pil = in the DataLoader "
                         "workers, torch = as tensors on the model's device (nvJPEG on CUDA); auto = torch on CUDA, "
                         "pil on CPU", choices=("auto", "pil", "torch"), group=_HW)
    batch_size: int = option(DEFAULT_BATCH_SIZE, "--batch-size", f"images per model batch (default {DEFAULT_BATCH_SIZE})",
                             check=positive, group=_HW)
    workers: int = option(min(8, os.cpu_count() or 1), "--workers", "DataLoader worker processes decoding images "
                          "(0 = in the main process)", check=non_negative, group=_HW)
    threshold: float = option(DEFAULT_THRESHOLD, "--threshold", f"keep a row when its caption's CLIP cosine is at least "
                              f"this (default {DEFAULT_THRESHOLD}, LAION-5B's English value for ViT-B/32; the value is "
                              "model-specific)", check=between(-1.0, 1.0), group=_THRESH)
    fill_threshold: float | None = option(None, "--fill-threshold", "a replacement caption must score at least this to "
                                          "be used (default: --threshold)", check=optional(between(-1.0, 1.0)),
                                          group=_THRESH)
    languages: tuple[str, ...] = option((), "--languages", "keep only captions in these languages (ISO 639-1 codes, "
                                        "comma-separated, e.g. en,de); a caption whose language the model is not sure "
                                        "of is kept", parse=parse_list, group=_THRESH)
    lang_thresholds: tuple[str, ...] = option((), "--lang-threshold", "LANG=T: keep captions in language LANG from "
                                              "cosine T on (repeatable; e.g. de=0.26, as LAION did for non-English "
                                              "text); other languages use --threshold", action="append",
                                              metavar="LANG=T", group=_THRESH)
    site_chrome: bool = option(True, "--keep-site-chrome", "keep navigation icons, logos and images repeated across "
                               "a site's pages (default: dropped as site_chrome)", action="store_false", group=_THRESH)
    label_bank: str | None = option(None, "--label-bank", "file of candidate phrases, one per line, tried for images "
                                    "whose alt fails", group=_CAPS)
    label_template: str = option(DEFAULT_LABEL_TEMPLATE, "--label-template", "how a label-bank phrase becomes a "
                                 f"caption; {{}} is the phrase (default {DEFAULT_LABEL_TEMPLATE!r})", group=_CAPS)
    generate: str = option("auto", "--generate", "CoCa generated captions as candidates: auto = on for CoCa models "
                           "(needs the capcrawl[coca] extra, transformers<4.57)", choices=GENERATE_MODES, group=_CAPS)
    detect_faces: bool = option(True, "--no-face-detection", "do not look for faces in kept images (they are then not "
                                "blurred in the shards either)", action="store_false", group=_OUT)
    face_threads: int = option(0, "--face-threads", "threads detecting faces (default 0: one per core)",
                               check=non_negative, group=_HW)
    embeddings: bool = option(True, "--no-embeddings", "do not write emb-NNNNN.npy image embeddings",
                              action="store_false", group=_OUT)
    shard_index: int = option(0, "--shard-index", "this machine's index among --num-shards; it scores parts whose "
                              "number %% N == index", check=non_negative, group=_OUT)
    num_shards: int = option(1, "--num-shards", "machines sharing the parts (default 1)", check=positive, group=_OUT)
    executor: str = option("local", "--executor", "local: this process; ray: a pool of Ray actors, each holding the "
                           f"model once (needs {CLUSTER_EXTRA})", choices=EXECUTORS, group=_CLUSTER)
    ray_address: str | None = option(None, "--ray-address", "Ray cluster to use (host:port, auto, ray://...); default: "
                                     "start a local Ray", metavar="ADDR", group=_CLUSTER)
    gpus_per_worker: float = option(0.0, "--gpus-per-worker", "GPUs per Ray actor: 1 = one actor per GPU, 0.5 = two; "
                                    "0 (default) = CPU actors of max(1, --workers) CPUs each", check=non_negative, group=_CLUSTER)
    #: The label bank's phrases, read from ``label_bank`` when the config is built.
    label_phrases: tuple[str, ...] = field(default=(), init=False)
    #: ``lang_thresholds`` parsed: ((code, threshold), ...).
    threshold_by_lang: tuple[tuple[str, float], ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        replace_frozen(self, work=Path(self.work))
        check_fields(self)
        if not 0 <= self.shard_index < self.num_shards:
            raise ConfigError(
                f"--shard-index {self.shard_index} must be in [0, --num-shards) with --num-shards >= 1 "
                f"(got --num-shards {self.num_shards})."
            )
        if "{}" not in self.label_template:
            raise ConfigError(f"--label-template {self.label_template!r} needs a {{}} where the phrase goes.")
        if self.model.endswith(".json") and not Path(self.model).is_file():
            raise ConfigError(f"--model {self.model} does not exist; pass an open_clip model name or a config JSON file.")
        replace_frozen(self, label_phrases=read_label_bank(self.label_bank), threshold_by_lang=parse_lang_thresholds(self.lang_thresholds),
                       languages=tuple(c.strip().lower() for c in self.languages))
        for code in self.languages:
            if not code.isalpha() or not 2 <= len(code) <= 3:
                raise ConfigError(f"--languages takes ISO 639 codes such as en,de; got {code!r}.")
        self._check_cluster()
        if self.detect_faces:
            from filter.faces import check_available

            check_available()
        if self.languages or self.threshold_by_lang:
            from filter.language import check_available, check_codes

            check_available()
            check_codes(self.languages, "--languages")
            check_codes([code for code, _ in self.threshold_by_lang], "--lang-threshold")
        if self.gpus_per_worker:
            return  # the device is checked on the actors' machines (this one may have no GPU)
        from filter.model import autocast_dtype, resolve_device  # torch is imported only when filtering

        autocast_dtype(self.precision, resolve_device(self.device))

    def threshold_for(self, language: str | None) -> float:
        """The keep threshold for a caption in ``language`` (None: not known)."""
        return dict(self.threshold_by_lang).get(language, self.threshold) if language else self.threshold

    def _check_cluster(self) -> None:
        """The Ray executor's options: Ray installed; GPU actors on a GPU device, CPU actors on the CPU."""
        check_executor(self.executor, self.ray_address)
        if self.executor != "ray":
            if self.gpus_per_worker:
                raise ConfigError("--gpus-per-worker needs --executor ray.")
            return
        if self.gpus_per_worker and self.device == "cpu":
            raise ConfigError("--gpus-per-worker asks for GPU actors but --device is cpu; pass --device auto or cuda.")
        if not self.gpus_per_worker and self.device.startswith("cuda"):
            raise ConfigError(f"--device {self.device} under --executor ray needs GPU actors: pass --gpus-per-worker 1.")
        if ":" in self.device:
            raise ConfigError(f"--device {self.device}: under --executor ray each actor uses the GPU Ray gives it; "
                              "pass --device cuda or auto.")

    @property
    def effective_fill_threshold(self) -> float:
        return self.threshold if self.fill_threshold is None else self.fill_threshold

    @property
    def crawl_dir(self) -> Path:
        return crawl_dir(self.work)

    @property
    def scored_dir(self) -> Path:
        return scored_dir(self.work)

    def check_inputs(self) -> None:
        """Raise ConfigError when there is nothing to filter (checked when the stage starts)."""
        if not Path(self.work).is_dir():
            raise ConfigError(f"work directory {self.work} does not exist; run capcrawl crawl first or pass the right --work.")


def parse_lang_thresholds(values: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    """``("de=0.26", "fr=0.25")`` -> ``(("de", 0.26), ("fr", 0.25))``; ConfigError for a bad one."""
    out = []
    for value in values:
        code, sep, number = value.partition("=")
        try:
            threshold = float(number)
        except ValueError:
            threshold = float("nan")
        if not sep or not code.strip().isalpha() or not -1.0 <= threshold <= 1.0:
            raise ConfigError(f"--lang-threshold takes LANG=T such as de=0.26, got {value!r}.")
        out.append((code.strip().lower(), threshold))
    return tuple(out)


def read_label_bank(path: str | None) -> tuple[str, ...]:
    """The phrases of a label-bank file (one a line, ``#`` comments), in order, without repeats."""
    if path is None:
        return ()
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read --label-bank {path}; pass a UTF-8 text file with one phrase per line.") from e
    phrases = tuple(dict.fromkeys(p.strip() for p in lines if p.strip() and not p.lstrip().startswith("#")))
    if not phrases:
        raise ConfigError(f"--label-bank {path} has no phrases; put one phrase per line.")
    return phrases
