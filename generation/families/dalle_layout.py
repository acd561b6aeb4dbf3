"""DALL·E Mini and Mega weights on disk: which files, where, what sizes, and what a picture costs (no torch).

min-dalle hard-codes Mini's and Mega's sizes, so a directory of real weights needs nothing more; a tiny test model
says its sizes in `dalle_config.json` beside its weights. Three layouts are read: min-dalle's own download
(`dalle_bart_mini/encoder.pt`, …, `vqgan/detoker.pt`), the hub repository's flat names (`encoder_mini.pt` for
Mini, `encoder.pt` for Mega), and plain names in one directory (what `imagine-bot tiny-model` writes).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

DALLE_KINDS = ("dalle-mini", "dalle-mega")
CONFIG_FILE = "dalle_config.json"
HUB_REPO = "kuprel/min-dalle"  # where min-dalle itself downloads from (min_dalle.MIN_DALLE_REPO)
# The files min-dalle loads, by its own names (min_dalle.MinDalle.__init__).
WEIGHT_FILES = ("encoder.pt", "decoder.pt", "detoker.pt", "vocab.json", "merges.txt")

TEXT_TOKENS = 64  # min-dalle's fixed prompt length
ROW_TOKENS = 16  # a 256² picture is 16 rows of 16 VQGAN tokens
IMAGE_TOKENS = ROW_TOKENS * ROW_TOKENS
SIDE = 256
# The VQGAN detokenizer has one fixed size in min-dalle: 2.53e11 FLOPs per 256² picture, counted with
# torch.utils.flop_counter.FlopCounterMode on min_dalle.models.VQGanDetokenizer.
DETOKENIZER_FLOPS = 2.5275e11
# DESIGN.md's compute anchor, the queue's unit: SD 1.5's UNet with CFG is about 1.68 TFLOP per 512² step.
SD15_FLOPS_PER_PIXEL_STEP = 1.68e12 / (512 * 512)


@dataclass(frozen=True)
class DalleSizes:
    """The shape of a DALL·E Bart encoder and decoder (min-dalle's MinDalle attributes of the same names)."""

    layer_count: int
    attention_head_count: int
    embed_count: int
    glu_embed_count: int
    text_vocab_count: int
    image_vocab_count: int

    def pass_flops(self) -> float:
        """FLOPs of one decoder pass for one sequence (an image needs a conditioned and an unconditioned one).

        Per layer, in multiply-adds: self-attention's four projections of the new token (4e²) and its scores and
        sums over all 256 cached positions (min-dalle masks, never shortens: 2·256·e); cross-attention projects the
        64 encoder states to keys and values again on every pass (2·64·e², the largest term: min-dalle keeps no
        cache of them), plus its query and output projections (2e²) and scores (2·64·e); the GLU's three matrices
        (3·e·g). Then the logits head (e·(vocab + 1)). Two FLOPs per multiply-add.
        """
        e, g = self.embed_count, self.glu_embed_count
        layer = 4 * e * e + 2 * IMAGE_TOKENS * e + 2 * TEXT_TOKENS * e * e + 2 * e * e + 2 * TEXT_TOKENS * e + 3 * e * g
        return 2.0 * (self.layer_count * layer + e * (self.image_vocab_count + 1))

    def encoder_flops(self) -> float:
        """FLOPs of encoding one prompt: the prompt and the empty prompt, 64 tokens each, once per request."""
        e, g = self.embed_count, self.glu_embed_count
        per_token = self.layer_count * (4 * e * e + 2 * TEXT_TOKENS * e + 3 * e * g)
        return 2.0 * 2 * TEXT_TOKENS * per_token

    def image_flops(self) -> float:
        """FLOPs of one picture: 256 decoder passes over two sequences (supercondition), then the VQGAN."""
        return IMAGE_TOKENS * 2 * self.pass_flops() + DETOKENIZER_FLOPS


# min_dalle.MinDalle.__init__'s sizes: Mini ≈ 0.4B parameters, Mega ≈ 2.6B.
MINI = DalleSizes(12, 16, 1024, 2730, 50264, 16384)
MEGA = DalleSizes(24, 32, 2048, 4096, 50272, 16415)


def _candidates(name: str, kind: str) -> list[str]:
    stem, _, suffix = name.partition(".")
    if name == "detoker.pt":
        return ["detoker.pt", "vqgan/detoker.pt"]
    if kind == "dalle-mini":
        return [f"{stem}_mini.{suffix}", f"dalle_bart_mini/{name}", name]
    return [f"dalle_bart_mega/{name}", name]


def weight_paths(directory: Path, kind: str) -> tuple[dict[str, Path], list[str]]:
    """min-dalle's file name → where it is under `directory`, and the names not found."""
    found, missing = {}, []
    for name in WEIGHT_FILES:
        path = next((directory / c for c in _candidates(name, kind) if (directory / c).is_file()), None)
        if path is None:
            missing.append(name)
        else:
            found[name] = path
    return found, missing


def missing_reason(source: str, kind: str) -> str | None:
    """Why `source` cannot hold this kind's weights, or None when every file is there."""
    directory = Path(source).expanduser()
    if not directory.is_dir():
        return "no such directory (DALL·E Mini and Mega load from a local directory)"
    _, missing = weight_paths(directory, kind)
    if missing:
        return f"it has no {', '.join(missing)} for min-dalle; {download_hint(kind)}"
    return None


def download_hint(kind: str) -> str:
    """The command that fetches the real weights of a kind, as README.md gives it."""
    suffix = "_mini" if kind == "dalle-mini" else ""
    files = f"encoder{suffix}.pt decoder{suffix}.pt vocab{suffix}.json merges{suffix}.txt detoker.pt"
    return f"`hf download {HUB_REPO} {files} --local-dir DIR` fetches them"


def write_config(directory: Path, kind: str, sizes: DalleSizes) -> Path:
    """Record the sizes (and kind) of weights that are not Mini's or Mega's."""
    path = directory / CONFIG_FILE
    path.write_text(json.dumps({"kind": kind, **asdict(sizes)}, indent=2) + "\n")
    return path


def sizes_for(source: str, kind: str) -> DalleSizes:
    """The sizes of the weights in `source`: its dalle_config.json, else the kind's own (Mini or Mega)."""
    return _read_sizes(str(Path(source).expanduser()), kind)


@lru_cache(maxsize=64)
def _read_sizes(source: str, kind: str) -> DalleSizes:
    # Cached: the queue costs every request on the event loop, and a model's shape does not change.
    default = MINI if kind == "dalle-mini" else MEGA
    try:
        data = json.loads((Path(source) / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return default
    return DalleSizes(**{key: int(data.get(key, value)) for key, value in asdict(default).items()})


def detect_kind(directory: Path) -> str | None:
    """dalle-mini or dalle-mega for a directory of min-dalle weights; None when it holds none."""
    try:
        kind = json.loads((directory / CONFIG_FILE).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind in DALLE_KINDS:
        return kind
    if (directory / "decoder_mini.pt").is_file() or (directory / "dalle_bart_mini" / "decoder.pt").is_file():
        return "dalle-mini"
    if (directory / "decoder.pt").is_file() or (directory / "dalle_bart_mega" / "decoder.pt").is_file():
        return "dalle-mega"
    return None
