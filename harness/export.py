"""``harness export``: a configuration, with its weights and what was measured of it, as a
directory that loads without the harness.

The directory holds ``config.yaml``; ``model.safetensors`` in timm's key layout; ``model.pt2``
(``torch.export``: plain PyTorch runs it, every knob included); ``model.onnx`` with its parity
against eager; ``check.safetensors`` (fixed input images and eager's logits, to check a loaded
model); ``model_card.json``; and a README saying how to load each. It is written beside its
destination and renamed into place, so it is never half-written.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save as save_safetensors

import harness
from harness.config import CandidateConfig
from harness.cost import estimate_cost
from harness.environment import git_commit
from harness.errors import ConfigError, FileError, shorten
from harness.files import make_dir
from harness.models import build_model, shared_weights
from harness.records import SCHEMA_VERSION, upgrade_energy_figure
from harness.runtimes.base import PARITY_BOUNDS, check_parity, first_line, parity_inputs
from harness.runtimes.onnx import INSTALL_HINT, export_onnx, export_refusal, missing_packages

RANDOM_SEED = 0  # weights of an export that has neither a checkpoint nor a supernet
CHECK_IMAGES = 4
# What a measured trial or pareto.json entry contributes to the model card.
MEASURED_KEYS = ("latency_ms", "latency_raw_ms", "drift", "contention", "energy", "runtime",
                 "accuracy", "knobs", "throttled", "search_latency_ms", "p_dominated")


@dataclass(frozen=True)
class ExportSource:
    """What to export: the configuration, its weights (None: seeded random), where they come
    from, and what was measured of it (empty for a bare configuration)."""

    config: CandidateConfig
    weights: dict[str, torch.Tensor] | None
    weights_origin: dict[str, Any]
    measured: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, Any] = field(default_factory=dict)


def random_weights_origin(why: str) -> dict[str, Any]:
    return {"kind": "random", "seed": RANDOM_SEED, "why": why}


def check_destination(out_dir: Path, force: bool) -> None:
    """Refuse an existing destination unless ``force``; raises ``FileError``."""
    if out_dir.exists() and not force:
        raise FileError(f"export directory {out_dir} already exists; choose another --out or "
                        "pass --force to replace it")
    if out_dir.exists() and not out_dir.is_dir():
        raise FileError(f"export directory {out_dir} is a file")


def write_export(source: ExportSource, out_dir: Path, force: bool = False) -> Path:
    """Write the export directory of ``source`` to ``out_dir``; return it.

    Raises:
        FileError: ``out_dir`` exists (without ``force``) or cannot be written.
        RuntimeRefused: ONNX export is not installed."""
    check_destination(out_dir, force)
    missing = missing_packages()
    if missing:
        from harness.runtimes import RuntimeRefused

        raise RuntimeRefused(f"harness export writes an ONNX file: {', '.join(missing)} not "
                             f"installed ({INSTALL_HINT})")
    make_dir(out_dir.parent, "export directory's parent")
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would make the export private
    try:
        try:
            _write_files(source, staging)
        except Exception as error:  # noqa: BLE001 - torch.export and the ONNX exporter raise many types
            raise ConfigError(f"configuration {source.config.key()} could not be exported: "
                              f"{first_line(error)}; nothing was written to {out_dir}") from None
        _move_into_place(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Rename ``staging`` to ``out_dir``; an existing ``out_dir`` (``--force``) is moved aside
    first and removed only once the new one is in place."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.replaced")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(out_dir, old)
    os.rename(staging, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_files(source: ExportSource, folder: Path) -> None:
    config = source.config
    model = build_model(config, seed=RANDOM_SEED, shared_weights=source.weights).eval()
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    (folder / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    (folder / "model.safetensors").write_bytes(save_safetensors(
        state, metadata={"format": "pt", "config": json.dumps(config.to_dict()),
                         "weights": json.dumps(source.weights_origin)}))
    images = parity_inputs(torch.zeros(1, 3, config.img_size, config.img_size))
    checks = torch.cat(images)[:CHECK_IMAGES]
    with torch.inference_mode():
        logits = model(checks)
    (folder / "check.safetensors").write_bytes(save_safetensors(
        {"images": checks.contiguous(), "logits": logits.contiguous()}))
    program = _torch_export(model, checks)
    torch.export.save(program, str(folder / "model.pt2"))
    onnx = _onnx(model, config, checks, folder / "model.onnx")
    card = _model_card(source, onnx, folder)
    (folder / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    (folder / "README.md").write_text(_readme(card))


def _torch_export(model: torch.nn.Module, images: torch.Tensor) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(model, (images,), dynamic_shapes=({0: batch},))


def _onnx(model: torch.nn.Module, config: CandidateConfig, images: torch.Tensor,
          path: Path) -> dict[str, Any]:
    """Export ``model`` in the configuration's precision and check it against eager, or say why
    it cannot be exported."""
    refused = export_refusal(config)
    if refused:
        return {"file": None, "why_not": refused}
    from harness.precision import convert_precision
    from harness.runtimes.onnx import OnnxRuntimeModel, session_for

    converted, inputs = convert_precision(model, images, config.precision)
    detail = export_onnx(converted, inputs[:1], path, dynamic_batch=True)
    session = OnnxRuntimeModel(session_for(path, "cpu", threads=1))
    parity = check_parity(converted, session, [inputs[i:i + 1] for i in range(len(inputs))]
                          + [inputs], config.precision)
    return {"file": path.name, "precision": config.precision, **detail,
            "parity": parity.to_json(), "parity_bound_by_precision": PARITY_BOUNDS}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _model_card(source: ExportSource, onnx: dict[str, Any], folder: Path) -> dict[str, Any]:
    config = source.config
    cost = estimate_cost(config)
    measured = source.measured
    files = sorted(p.name for p in folder.iterdir())
    return {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "harness": {"version": harness.__version__, "commit": git_commit()},
        "origin": source.origin,
        "config": config.to_dict(),
        "config_key": config.key(),
        "gmacs": cost.gmacs,
        "effective_gmacs": cost.effective_gmacs,
        "params_m": cost.params_m,
        "weights": source.weights_origin,
        "measured": ({key: measured.get(key) for key in MEASURED_KEYS} | {
            "device": measured.get("device"), "environment": measured.get("environment")}
            if measured else None),
        "not_measured_because": None if measured else (
            "exported from a configuration file: run 'harness measure --config config.yaml' "
            "for its latency"),
        "onnx": onnx,
        "check": {"file": "check.safetensors", "images": CHECK_IMAGES,
                  "what": "fixed input images and eager PyTorch's logits for them"},
        "files": {name: _sha256(folder / name) for name in files},
    }


def _readme(card: dict[str, Any]) -> str:
    config = card["config"]
    measured = card["measured"]
    latency = measured and measured.get("latency_ms")
    accuracy = measured and measured.get("accuracy")
    lines = [
        f"# Vision Transformer {card['config_key']}",
        "",
        (f"Exported by vit-harness {card['harness']['version']} (commit "
        f"{card['harness']['commit'] or 'unknown'}): {config['embed_dim']}-wide, "
        f"{config['depth']} blocks, {config['img_size']} px, {config['num_classes']} classes, "
        f"{card['gmacs']:.3f} GMACs, {card['params_m']:.2f} M parameters."),
        f"Weights: {_weights_sentence(card['weights'])}.",
    ]
    if latency:
        low, high = latency.get("ci95") or (None, None)
        interval = f", 95% CI [{low:.3f}, {high:.3f}]" if low is not None else ""
        lines.append(f"Measured latency on {measured['device']}: median {latency['median']:.3f} ms"
                     f"{interval} (runtime {config.get('runtime', 'eager')}).")
    if accuracy:
        lines.append(f"Accuracy estimate: {accuracy['value']:.4f} ({accuracy['estimator']}).")
    lines.append("Everything measured, with its provenance, is in `model_card.json`.")
    lines += ["", "## Plain PyTorch (every knob included)", "", "```python",
              "import torch", "from safetensors.torch import load_file", "",
              'model = torch.export.load("model.pt2").module()',
              'check = load_file("check.safetensors")',
              'logits = model(check["images"])  # (batch, 3, H, W) float32 images',
              'print((logits - check["logits"]).abs().max())', "```", ""]
    lines += ["## ONNX Runtime", ""]
    if card["onnx"]["file"]:
        lines += ["```python", "import onnxruntime as ort",
                  "from safetensors.numpy import load_file", "",
                  ('session = ort.InferenceSession("model.onnx", '
                  'providers=["CPUExecutionProvider"])'),
                  'check = load_file("check.safetensors")',
                  'images = check["images"]' + (".astype('float16')"
                                                if config["precision"] == "fp16" else ""),
                  'logits = session.run(None, {"images": images})[0]', "```", "",
                  f"Parity with eager PyTorch: {_parity_sentence(card['onnx']['parity'])}.", ""]
    else:
        lines += [f"No ONNX file: {card['onnx']['why_not']}.", ""]
    lines += ["## timm", "", _timm_section(config), ""]
    return "\n".join(lines)


def _weights_sentence(origin: dict[str, Any]) -> str:
    if origin["kind"] == "pretrained":
        return f"pretrained checkpoint {origin['path']} (sha256 {origin['sha256'][:12]})"
    if origin["kind"] == "supernet":
        return (f"inherited from the space's supernet {origin['key']} ({origin['dataset']}, "
                f"{origin['steps']} steps, seed {origin['seed']})")
    return f"random (seed {origin['seed']}): {origin['why']}"


def _parity_sentence(parity: dict[str, Any]) -> str:
    return (f"max |logit difference| {parity['max_abs_diff']:.2g} (bound {parity['bound']:g}), "
            f"top-1 agreement {parity['top1_agreement']:.0%} of {parity['images']} images")


# Knob values under which the model is timm's plain VisionTransformer.
_PLAIN = {"keep_rate": 1.0, "merge_r": 0, "attention": "global"}


def timm_incompatibility(config: dict[str, Any]) -> str | None:
    """Why timm's ``VisionTransformer`` cannot hold this configuration, or None."""
    active = [f"{key}={shorten(config[key])}" for key, plain in _PLAIN.items()
              if config[key] != plain]
    if active:
        return f"its knobs ({', '.join(active)}) are not part of timm's VisionTransformer"
    if any(isinstance(config[key], list) for key in ("num_heads", "mlp_ratio")):
        return "its blocks differ in width (per-block num_heads or mlp_ratio)"
    if config["num_heads"] * config["head_dim"] != config["embed_dim"]:
        return (f"its attention width num_heads x head_dim ({config['num_heads']} x "
                f"{config['head_dim']}) is not embed_dim ({config['embed_dim']})")
    return None


def _timm_section(config: dict[str, Any]) -> str:
    reason = timm_incompatibility(config)
    if reason:
        return f"timm cannot build this model: {reason}. Use `model.pt2` or `model.onnx`."
    return "\n".join([
        "The weights use timm's key names; a plain ViT of this shape loads them:", "",
        "```python", "import timm", "from safetensors.torch import load_file", "",
        (f"model = timm.models.vision_transformer.VisionTransformer(img_size={config['img_size']}, "
        f"patch_size={config['patch_size']}, embed_dim={config['embed_dim']}, "
        f"depth={config['depth']}, num_heads={config['num_heads']}, "
        f"mlp_ratio={config['mlp_ratio']}, num_classes={config['num_classes']})"),
        'model.load_state_dict(load_file("model.safetensors"))', "```",
        "" if config["weight_sparsity"] == "dense" else
        "The sparsity masks are in the weights (zeros); timm computes them densely."])


def load_export_source(path: Path) -> ExportSource:
    """A configuration file or one ``pareto.json`` entry (with what was measured of it)."""
    from harness.config import load_config_file
    from harness.files import read_text

    text = read_text(path, "configuration file")
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None
    if isinstance(document, list):
        raise ConfigError(f"{path}: a whole pareto.json holds {len(document)} entries; export one "
                          "with 'harness export SEARCH_OUT --trial N' (N: its trial number)")
    config, _ = load_config_file(path)
    if isinstance(document, dict) and "config" in document:
        # pareto.json carries no schema version; the energy step applies to either shape
        document = upgrade_energy_figure(document)
        measured = {key: document.get(key) for key in MEASURED_KEYS}
        return ExportSource(config, None, random_weights_origin(
            "a pareto.json entry holds no weights; export the trial from its search directory "
            "for the weights it was searched with"), measured,
            {"pareto_entry": str(path), "trial": document.get("trial")})
    return ExportSource(config, None, random_weights_origin(
        "a configuration file holds no weights; pass --weights PATH for a checkpoint"),
        origin={"config_file": str(path)})


def source_from_trial(study: Any, number: int, checkpoint: Any = None,
                      from_supernet: bool = False) -> ExportSource:
    """Trial ``number`` of a search with the weights it was searched on: the study's checkpoint
    (which ``checkpoint`` must be), the supernet's (``from_supernet``, at the supernet's data
    shape), or else the seeded weights its latency was measured on.

    Raises:
        StudyError: no such measured trial, or the checkpoint or supernet is not the study's."""
    from optuna.trial import TrialState

    from harness.errors import StudyError

    measured_numbers = [t.number for t in study.get_trials(deepcopy=False)
                        if t.state == TrialState.COMPLETE and "config" in t.user_attrs]
    if number not in measured_numbers:
        valid = ", ".join(map(str, measured_numbers[:20])) or "none"
        raise StudyError(f"trial {number} of study {shorten(study.study_name)} was not measured; "
                         f"measured trials: {valid}" + (" ..." if len(measured_numbers) > 20
                                                         else ""))
    from harness.search.results import trial_records

    trial = trial_records(study, [study.trials[number]])[0]
    metadata = study.user_attrs
    config = CandidateConfig.from_dict(trial.config)
    measured = {key: trial.stored.get(key) for key in MEASURED_KEYS} | {
        "device": metadata.get("device"), "environment": metadata.get("environment")}
    measured |= _remeasured(study, number, measured["latency_ms"])
    origin = {"study": study.study_name, "trial": number}
    expected = metadata.get("weights_sha256")
    if expected and (checkpoint is None or checkpoint.sha256 != expected):
        raise StudyError(f"study {shorten(study.study_name)} searched the checkpoint with sha256 "
                         f"{expected}: give that checkpoint with --weights PATH")
    if checkpoint is not None and not expected:
        raise StudyError(f"study {shorten(study.study_name)} searched no checkpoint; drop "
                         "--weights")
    if checkpoint is not None:
        if from_supernet:
            raise StudyError("--supernet: this study searched a checkpoint, not a supernet")
        return ExportSource(config, checkpoint.tensors, {
            "kind": "pretrained", "path": str(checkpoint.path), "sha256": checkpoint.sha256},
            measured, origin)
    if from_supernet:
        return _supernet_source(config, metadata, measured, origin)
    from harness.space import space_from_dict

    return ExportSource(config, shared_weights(space_from_dict(metadata["space"])),
                        random_weights_origin(
                            "the seeded weights the search measured latency on; its accuracy "
                            f"came from {metadata.get('estimator')}: pass --supernet for a "
                            "supernet's weights"), measured, origin)


def _remeasured(study: Any, number: int, search_latency: dict[str, Any]) -> dict[str, Any]:
    """The trial's re-measured latency, as its report and ``pareto.json`` give it, where the
    study's front was re-measured (and the re-measurement is still valid); else nothing."""
    from harness.search.results import eligible_for_front, stored_remeasurement

    remeasured = stored_remeasurement(study.user_attrs)
    eligible = [t.number for t in study.get_trials(deepcopy=False) if eligible_for_front(t)]
    if remeasured is None or remeasured.unused_reason(eligible):
        return {}
    point = next((p for p in remeasured.points if p.trial == number), None)
    if point is None:
        return {}
    return {"latency_ms": remeasured.latency_record(point).to_json(),
            "search_latency_ms": search_latency,
            "p_dominated": point.p_dominated}


def _supernet_source(config: CandidateConfig, metadata: dict[str, Any],
                     measured: dict[str, Any], origin: dict[str, Any]) -> ExportSource:
    """The trial's sub-network with the weights it inherits from the study's supernet, at the
    supernet's data shape: the network its accuracy was measured on."""
    from harness.accuracy.datasets import load_dataset
    from harness.accuracy.supernet import SupernetSpec, load_file, parse_spec, subnetwork
    from harness.errors import StudyError
    from harness.space import space_from_dict

    estimator = metadata.get("estimator", "")
    if not estimator.startswith("supernet:"):
        raise StudyError(f"--supernet: this study's accuracy came from {estimator or 'nothing'}, "
                         "not a supernet")
    dataset_name, budget, seed = parse_spec(estimator.removeprefix("supernet:"))
    dataset = load_dataset(dataset_name)
    spec = SupernetSpec(space_from_dict(metadata["space"]), dataset.name, budget, seed)
    if not (spec.folder / "supernet.json").exists():
        raise StudyError(f"--supernet: supernet {spec.key} of this study is not in "
                         f"{spec.folder.parent}; 'harness supernet train' with the study's space "
                         f"and {estimator} trains it again (deterministic for its seed)")
    shaped, model = subnetwork(config, dataset, load_file(spec.folder / "weights.pt"))
    return ExportSource(shaped, model.state_dict(), {
        "kind": "supernet", "key": spec.key, "dataset": dataset.name, "steps": spec.amount,
        "seed": seed, "shape": f"the supernet's data shape (img_size {shaped.img_size}, "
        f"patch_size {shaped.patch_size}, {shaped.num_classes} classes); the measured latency "
        f"is of the searched shape (img_size {config.img_size}, {config.num_classes} classes)"},
        measured, origin)
