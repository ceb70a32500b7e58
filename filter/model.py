"""Load an open_clip model once, and embed images and (cached) texts with it.

Every way weights can be missing (no network, unknown tag, missing or corrupt
file, missing CoCa extra) ends as one :class:`~common.records.ConfigError`
sentence raised at start-up, before the stage writes anything.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Sequence
from urllib.parse import urlsplit

import torch
import torch.nn.functional as F

from common.errors import ConfigError

log = logging.getLogger(__name__)

_NO_WEIGHTS = ("", "none", "random")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")
_CONFIG_KEYS = ("embed_dim", "vision_cfg", "text_cfg")
_COCA_MAX_TRANSFORMERS = (4, 57)
_PROBE_TIMEOUT_S = 3.0
HF_HUB_PREFIX = "hf-hub:"
HF_CONFIG_NAME = "open_clip_config.json"
#: Weights of an open_clip hub repository, in open_clip's order of preference.
HF_WEIGHTS_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_TEXT_CACHE_SIZE = 200_000


# --- resolving --model and --pretrained ---------------------------------------------


def hub_repo(model: str) -> str | None:
    """``ORG/NAME`` of an ``hf-hub:ORG/NAME`` model name, else None."""
    if not model.startswith(HF_HUB_PREFIX):
        return None
    repo = model[len(HF_HUB_PREFIX):].strip().strip("/")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ConfigError(f"--model {model} is not of the form hf-hub:ORG/NAME; pass a Hugging Face repository id after hf-hub:")
    return repo


def resolve_model_name(model: str, cache_dir: str | None = None) -> str:
    """Return an open_clip model name, registering ``model`` first if it is a config JSON path.

    ``hf-hub:ORG/NAME`` stays as it is, once its ``open_clip_config.json`` is in the local
    Hugging Face cache (fetched into it when the hub can be reached and HF_HUB_OFFLINE is unset).
    """
    import open_clip

    repo = hub_repo(model)
    if repo is not None:
        path = hub_file(repo, (HF_CONFIG_NAME,), cache_dir, "model config")
        try:
            cfg = json.loads(Path(path).read_text()).get("model_cfg")
        except (OSError, ValueError, AttributeError) as e:
            raise ConfigError(f"--model {model}: its {HF_CONFIG_NAME} is not readable JSON; fix or re-download the repository") from e
        if not isinstance(cfg, dict) or not all(k in cfg for k in _CONFIG_KEYS):
            raise ConfigError(f"--model {model}: its {HF_CONFIG_NAME} has no model_cfg with {', '.join(_CONFIG_KEYS)}; "
                              "pass an open_clip repository")
        return model
    if model.endswith(".json") or os.path.sep in model:
        path = Path(model)
        try:
            cfg = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"--model {model} is not a readable open_clip model-config JSON; "
                "pass an architecture name such as ViT-B-32 or a valid config file"
            ) from e
        if not isinstance(cfg, dict) or not all(k in cfg for k in _CONFIG_KEYS):
            raise ConfigError(f"--model {model} lacks {', '.join(_CONFIG_KEYS)}; pass an open_clip model-config JSON")
        open_clip.add_model_config(path)  # open_clip's own registry, keyed by the file's stem
        return path.stem
    if model not in open_clip.list_models():
        raise ConfigError(
            f"unknown --model {model!r}; pass an open_clip architecture name such as ViT-B-32 "
            "(see open_clip.list_models()), hf-hub:ORG/NAME or a path to a model-config JSON"
        )
    return model


def _hf_offline() -> bool:
    """True when the Hugging Face hub must not be contacted (env read now, not at import)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _reachable(url: str) -> bool:
    """Whether ``url``'s host answers a TCP connect within a few seconds."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 443), timeout=_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _cached_tag_file(tag_cfg: dict, cache_dir: str | None) -> str | None:
    """Local copy of a pretrained tag's weights, without touching the network."""
    repo = (tag_cfg.get("hf_hub") or "").rstrip("/")
    if repo:
        from huggingface_hub import hf_hub_download

        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        repo_id = "/".join(repo.split("/")[:2])
        filename = "/".join(repo.split("/")[2:]) or None
        for name in (filename,) if filename else (HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME):
            try:
                return hf_hub_download(repo_id, name, cache_dir=cache_dir, local_files_only=True)
            except Exception:  # noqa: BLE001 - any hub error here just means "not cached"
                continue
        return None
    url = tag_cfg.get("url") or ""
    local = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
    return str(local) if url and local.is_file() else None


def _cached_hub_file(repo: str, names: Sequence[str], cache_dir: str | None) -> str | None:
    """The first of ``names`` that the local Hugging Face cache holds for ``repo``."""
    from huggingface_hub import hf_hub_download

    for name in names:
        try:
            return hf_hub_download(repo, name, cache_dir=cache_dir, local_files_only=True)
        except Exception:  # noqa: BLE001 - any hub error here just means "not cached"
            continue
    return None


def hub_file(repo: str, names: Sequence[str], cache_dir: str | None, what: str) -> str:
    """A local copy of one of ``names`` from hub repository ``repo``: the cache's, else downloaded.

    Offline (HF_HUB_OFFLINE) or with the hub unreachable, a file missing from the cache is one
    ConfigError sentence, as for pretrained tags.
    """
    cached = _cached_hub_file(repo, names, cache_dir)
    if cached:
        return cached
    hint = (f"cannot get the {what} of hf-hub:{repo} ({{why}}); copy the repository into the Hugging Face cache "
            "(e.g. huggingface-cli download on a machine with network), or run once with network access")
    if _hf_offline():
        raise ConfigError(hint.format(why="HF_HUB_OFFLINE is set and it is not in the local cache"))
    if not _reachable("https://huggingface.co"):
        raise ConfigError(hint.format(why="huggingface.co is unreachable and it is not cached"))
    from huggingface_hub import hf_hub_download

    last: Exception | None = None
    for name in names:
        try:
            return hf_hub_download(repo, name, cache_dir=cache_dir)
        except Exception as e:  # noqa: BLE001 - hub errors come in many types; all mean "not there"
            last = e
    raise ConfigError(hint.format(why=f"download failed: {type(last).__name__}"))


def resolve_checkpoint(name: str, pretrained: str | None, cache_dir: str | None = None) -> tuple[str | None, dict]:
    """Map ``--pretrained`` to a local checkpoint file (downloading a tag if possible).

    Returns ``(path or None for random weights, the tag's image_* preprocess keyword arguments)``.
    """
    import open_clip

    if pretrained is None or pretrained.strip().lower() in _NO_WEIGHTS:
        log.warning("no pretrained weights for %s: random initialisation, scores are meaningless", name)
        return None, {}
    if os.path.isfile(pretrained):
        return pretrained, {}
    if os.path.sep in pretrained or pretrained.endswith(_CHECKPOINT_SUFFIXES):
        raise ConfigError(
            f"checkpoint file {pretrained} does not exist; pass an existing checkpoint file or an open_clip "
            f"pretrained tag for {name} to --pretrained"
        )
    repo = hub_repo(name)
    if repo is not None:  # the repository's own weights; a tag means nothing for it
        return hub_file(repo, HF_WEIGHTS_NAMES, cache_dir, "weights"), {}
    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if not tag_cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none known"
        raise ConfigError(
            f"--pretrained {pretrained!r} is not a known tag for {name} (tags: {tags}); "
            "pass one of those or a local checkpoint file"
        )
    overrides = {f"image_{k}": tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
    cached = _cached_tag_file(tag_cfg, cache_dir)
    if cached:
        return cached, overrides
    hint = (
        f"cannot get the {name} {pretrained} weights ({{why}}); pass --pretrained /path/to/checkpoint.pt "
        "(e.g. open_clip_pytorch_model.bin copied from a machine with network), or run once with network access"
    )
    if _hf_offline():
        raise ConfigError(hint.format(why="HF_HUB_OFFLINE is set and they are not in the local cache"))
    endpoint = "https://huggingface.co" if tag_cfg.get("hf_hub") else tag_cfg.get("url", "")
    if not _reachable(endpoint):
        raise ConfigError(hint.format(why=f"{urlsplit(endpoint).hostname} is unreachable and they are not cached"))
    try:
        return open_clip.download_pretrained(tag_cfg, cache_dir=cache_dir), overrides
    except Exception as e:  # noqa: BLE001 - hub/urllib raise many types; all mean "no weights"
        raise ConfigError(hint.format(why=f"download failed: {type(e).__name__}")) from e


# --- CoCa generation ----------------------------------------------------------------


def check_generation_support(version: str | None = None) -> None:
    """Raise ConfigError unless transformers (<4.57, the ``capcrawl[coca]`` extra) can run CoCa generate."""
    advice = "install it with pip install 'capcrawl[coca]' or pass --generate no"
    if version is None:
        try:
            import transformers
        except ImportError as e:
            raise ConfigError(f"CoCa caption generation needs transformers<4.57, which is missing; {advice}") from e
        version = transformers.__version__
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError as e:
        raise ConfigError(f"cannot read the transformers version {version!r}; {advice}") from e
    if (major, minor) >= _COCA_MAX_TRANSFORMERS:
        raise ConfigError(f"CoCa caption generation needs transformers<4.57, found {version}; {advice}")


# --- the loaded model -----------------------------------------------------------------


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; validates ``cuda[:N]``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"--device {device!r} is not a device; pass auto, cpu or cuda[:N]") from e
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device!r} is not supported; pass auto, cpu or cuda[:N]")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device} asked for CUDA but none is available; pass --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s); pick another index")
    return dev


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``--precision`` (None = plain fp32)."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    if precision == "fp32":
        return None
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("--precision fp16 is not supported on CPU; pass bf16, fp32 or auto")
    return {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]


@dataclass
class LoadedModel:
    """An open_clip model in eval mode with its preprocess, tokenizer and precision."""

    name: str
    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable
    device: torch.device
    amp_dtype: torch.dtype | None
    is_coca: bool

    def autocast(self) -> ContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 image embeddings."""
        pixels = pixels.to(self.device, non_blocking=True)
        with self.autocast():
            emb = self.model.encode_image(pixels)
        return F.normalize(emb.float(), dim=-1)

    @torch.inference_mode()
    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 text embeddings of tokenised texts."""
        tokens = tokens.to(self.device, non_blocking=True)
        with self.autocast():
            emb = self.model.encode_text(tokens)
        return F.normalize(emb.float(), dim=-1)

    @torch.inference_mode()
    def generate(self, pixels: torch.Tensor, max_len: int = 20) -> list[str]:
        """Greedy CoCa captions for a batch of preprocessed images."""
        import open_clip

        pixels = pixels.to(self.device, non_blocking=True)
        context = int(getattr(self.model.text, "context_length", max_len))
        with self.autocast():
            ids = self.model.generate(
                pixels, generation_type="top_k", top_k=1, seq_len=min(max_len, context), max_seq_len=context
            )
        return [_clean_generated(open_clip.decode(row)) for row in ids]


def _clean_generated(text: str) -> str:
    text = text.split("<end_of_text>")[0].replace("<start_of_text>", "")
    return " ".join(text.split()).strip(" .")


def load_model(
    model: str,
    pretrained: str | None,
    device: str = "auto",
    precision: str = "auto",
    cache_dir: str | None = None,
) -> LoadedModel:
    """Create the model once, in eval mode, or raise a one-sentence ConfigError."""
    import open_clip

    name = resolve_model_name(model, cache_dir)
    dev = resolve_device(device)
    amp = autocast_dtype(precision, dev)
    checkpoint, overrides = resolve_checkpoint(name, pretrained, cache_dir)
    try:
        if hub_repo(name) is not None:
            # open_clip would load the hub's weights itself (and carry on with random ones if they are
            # missing); the checkpoint resolved above, or none, is loaded here instead
            net, _, preprocess = open_clip.create_model_and_transforms(
                name, load_weights=False, device=dev, pretrained_text=False, cache_dir=cache_dir, **overrides
            )
            if checkpoint is not None:
                open_clip.load_checkpoint(net, checkpoint, device=dev)
        else:
            net, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=checkpoint, device=dev, pretrained_text=False, **overrides
            )
    except Exception as e:  # noqa: BLE001 - torch.load/state-dict errors come in many types
        raise ConfigError(
            f"cannot load {checkpoint or 'random weights'} into {name} ({type(e).__name__}); pass a checkpoint "
            "saved for this exact architecture to --pretrained"
        ) from e
    try:
        tokenizer = open_clip.get_tokenizer(name, cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"cannot build the tokenizer of {name} ({type(e).__name__}); use a model with a local tokenizer") from e
    projection = getattr(getattr(net, "text_decoder", None), "text_projection", None)
    if checkpoint is None and isinstance(projection, torch.nn.Parameter):
        # open_clip's CoCa never initialises its decoder's text_projection (the decoder's own
        # init_parameters() is never called, and fails if it is), so a random CoCa kept what
        # torch.empty left there: NaN after some allocations, a flaky NaN in the test suite.
        # Filled here as open_clip's text towers fill theirs.
        with torch.no_grad():
            torch.nn.init.normal_(projection, std=projection.shape[0] ** -0.5)
    net.eval()
    is_coca = isinstance(net, open_clip.CoCa)
    log.info("loaded %s (%s) on %s, autocast %s", name, checkpoint or "random weights", dev, amp)
    return LoadedModel(name, net, preprocess, tokenizer, dev, amp, is_coca)


class TextEmbeddingCache:
    """Embeds each distinct text once (bounded LRU, keyed by the text string)."""

    def __init__(self, model: LoadedModel, batch_size: int = 1024, max_entries: int = _TEXT_CACHE_SIZE) -> None:
        self.model = model
        self.batch_size = batch_size
        self.max_entries = max_entries
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.encoded = 0  # texts sent through the text tower (for stats/tests)

    def __contains__(self, text: str) -> bool:
        return text in self._cache

    def put(self, texts: Sequence[str], embeddings: torch.Tensor) -> None:
        for text, emb in zip(texts, embeddings):
            self._cache[text] = emb
            self._cache.move_to_end(text)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    def missing(self, texts: Sequence[str]) -> list[str]:
        """Distinct texts not yet cached, in first-seen order."""
        return [t for t in dict.fromkeys(texts) if t not in self._cache]

    def encode_missing_tokens(self, texts: Sequence[str], tokens: torch.Tensor) -> None:
        """Cache texts whose token rows were already made (e.g. in a DataLoader worker)."""
        todo = {t: i for i, t in enumerate(texts) if t and t not in self._cache}
        if todo:
            self.put(list(todo), self.model.encode_tokens(tokens[list(todo.values())]))
            self.encoded += len(todo)

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """``len(texts) x D`` embeddings on the model's device."""
        todo = self.missing(texts)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            self.put(chunk, self.model.encode_tokens(self.model.tokenizer(chunk)))
            self.encoded += len(chunk)
        for t in texts:
            self._cache.move_to_end(t)
        if not texts:
            return torch.empty(0, 0, device=self.model.device)
        return torch.stack([self._cache[t] for t in texts])
