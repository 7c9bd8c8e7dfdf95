"""`howold report`: what is in a whole collection, from the results file of `howold analyze --output`.

Shares of gender, race (5 and 7) and age bands, each corrected for the model's errors
(face.quantification, with the statistics the model's sidecar carries) with a 90% interval and
the naive counted share beside it; as a JSON summary and a self-contained HTML page.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .collection import Faces, ReportError, read_results
from .errors import HowoldError
from .quantification import (
    DEFAULT_METHOD,
    YEARS,
    ClassStats,
    Estimate,
    band_names,
    band_of_year,
    band_stats,
    estimate_shares,
)

DEFAULT_AGE_BANDS = (0, 3, 10, 20, 30, 40, 50, 60, 70)
#: the attributes a report holds, with the classes of each (age: the bands)
ATTRIBUTES = ("gender", "age", "race", "race_fairface")
#: the model card's caveats, in two sentences, for the page
CAVEATS = (
    "The shares are what the model reads from faces: apparent age, the datasets' binary gender label and perceived race, "
    "not how people describe themselves. The correction assumes the model errs on this collection as it did on its "
    "validation faces (UTKFace and FairFace); on very different photos (tiny, blurred or profile faces) it may not, and the "
    "intervals do not cover that."
)


# ---- the model's statistics ------------------------------------------------------------------


def model_statistics(metadata: dict, model: str | None) -> dict[str, ClassStats]:
    """The sidecar's quantification statistics, summed over the datasets they were measured on:
    {"gender", "race", "race_fairface", "age_years"}. A ReportError when the sidecar has none or
    they are of other weights than `model`'s (the results')."""
    entry = metadata.get("quantification")
    if not entry or not entry.get("datasets"):
        raise ReportError("this model's sidecar has no quantification statistics; add them with `howold evaluate --data NAME=DIR --split validation --store-stats`")
    if model is not None and entry.get("model") != model:
        raise ReportError(f"the results are of model {model}, but the statistics are of model {entry.get('model')}; give --heads the model that made the results")
    return combine_statistics(entry["datasets"].values())


def combine_statistics(datasets) -> dict[str, ClassStats]:
    """Datasets' statistics (evaluation.quantification_stats dicts) summed, attribute by attribute."""
    combined: dict[str, ClassStats] = {}
    for stats in datasets:
        for name in ("gender", "race", "race_fairface", "age_years"):
            if name in stats:
                part = ClassStats.from_dict(stats[name])
                if name in combined:
                    part = ClassStats(part.classes, combined[name].counted + part.counted, combined[name].mass + part.mass)
                combined[name] = part
    return combined


# ---- the summary -------------------------------------------------------------------------------


def band_masses(distributions: np.ndarray, edges: tuple[int, ...]) -> np.ndarray:
    """(N, bands) probability of each age band."""
    return distributions @ np.eye(len(edges))[band_of_year(edges)]


def _attribute_inputs(faces: Faces, stats: dict[str, ClassStats], edges: tuple[int, ...]) -> dict[str, tuple[ClassStats, np.ndarray, np.ndarray]]:
    """Per attribute: its statistics, each face's label and probabilities."""
    inputs = {"gender": (stats["gender"], faces.gender.argmax(axis=1), faces.gender)}
    if "age_years" in stats:
        years = np.clip(np.floor(faces.age).astype(int), 0, YEARS - 1)
        inputs["age"] = (band_stats(stats["age_years"], edges), band_of_year(edges)[years], band_masses(faces.age_distribution, edges))
    inputs["race"] = (stats["race"], faces.race.argmax(axis=1), faces.race)
    if faces.race_fairface is not None and "race_fairface" in stats:
        inputs["race_fairface"] = (stats["race_fairface"], faces.race_fairface.argmax(axis=1), faces.race_fairface)
    return inputs


def shares(faces: Faces, stats: dict[str, ClassStats], edges: tuple[int, ...], method: str = DEFAULT_METHOD, draws: int = 300) -> dict:
    """{attribute: {class: {share, low, high, counted}}} of these faces."""
    result = {}
    for name, (attribute_stats, labels, probabilities) in _attribute_inputs(faces, stats, edges).items():
        estimate: Estimate = estimate_shares(method, attribute_stats, labels, probabilities, draws=draws)
        result[name] = estimate.to_dict(attribute_stats.classes)
    return result


def summarise(faces: Faces, stats: dict[str, ClassStats], edges: tuple[int, ...] = DEFAULT_AGE_BANDS, method: str = DEFAULT_METHOD, draws: int = 300) -> dict:
    """The JSON summary: counts, method, model, the shares of all faces, and of each group."""
    summary = {
        "images": faces.images,
        "faces": len(faces),
        "faces_left_out": faces.left_out,
        "images_failed": faces.failed,
        "method": method,
        "model": faces.model,
        "age_readout": "age bands: corrected from each face's age distribution; counted from its reported age (whole years)",
        "age_bands": list(band_names(edges)),
    }
    if faces.tracked:
        summary["tracked"] = faces.tracked
    summary.update(shares(faces, stats, edges, method, draws))
    names = sorted(set(faces.groups))
    if names != [""]:
        groups = np.asarray(faces.groups)
        summary["groups"] = {}
        for name in names:
            part = faces.subset(groups == name)
            summary["groups"][name] = {"faces": len(part), **shares(part, stats, edges, method, draws)}
    return summary


def age_histogram(faces: Faces) -> dict:
    """Per year 0..100: the faces' summed age distributions, and the faces whose reported age is in it."""
    counted = np.bincount(np.clip(np.floor(faces.age).astype(int), 0, YEARS - 1), minlength=YEARS)
    return {"summed": faces.age_distribution.sum(axis=0), "counted": counted}


# ---- the page ------------------------------------------------------------------------------------

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:16px}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin:1.4em 0 .4em}h3{font-size:1em;margin:.3em 0}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:16px}
.wide{max-width:760px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px;min-width:0}
svg{width:100%;height:auto;display:block}
.card svg{max-width:480px}.card.wide svg{max-width:none}
.note{color:#555;font-size:.9em}
.faces{display:flex;flex-wrap:wrap;gap:4px}.faces img{width:64px;height:64px;object-fit:cover;border-radius:4px}
.legend span{display:inline-block;margin-right:12px}.swatch{display:inline-block;width:10px;height:10px;margin-right:4px}
"""
_SHARE, _COUNT, _SPREAD = "#2f6db5", "#d9822b", "#9db7dc"


def _escape(text: object) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def share_chart(entries: dict, title: str) -> str:
    """Horizontal bars: the corrected share, its 90% interval as a whisker, the counted share as a tick."""
    row, left, width = 22, 108, 200
    height = row * len(entries) + 24
    parts = [f'<svg viewBox="0 0 {left + width + 52} {height}" role="img" aria-label="{_escape(title)}">']
    for i, (name, e) in enumerate(entries.items()):
        y = 6 + i * row
        share = e["share"] if e["share"] == e["share"] else 0.0
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" font-size="12">{_escape(name)}</text>')
        parts.append(f'<rect x="{left}" y="{y + 3}" width="{share * width:.1f}" height="13" fill="{_SHARE}"><title>{_escape(name)}: {share:.1%} (90% interval {e["low"]:.1%}-{e["high"]:.1%}; counted {e["counted"]:.1%})</title></rect>')
        parts.append(f'<line x1="{left + e["low"] * width:.1f}" x2="{left + e["high"] * width:.1f}" y1="{y + 9.5}" y2="{y + 9.5}" stroke="#111" stroke-width="1.5"/>')
        for end in (e["low"], e["high"]):
            parts.append(f'<line x1="{left + end * width:.1f}" x2="{left + end * width:.1f}" y1="{y + 5}" y2="{y + 14}" stroke="#111" stroke-width="1.5"/>')
        parts.append(f'<rect x="{left + e["counted"] * width - 1.5:.1f}" y="{y + 1}" width="3" height="17" fill="{_COUNT}"/>')
        parts.append(f'<text x="{left + width + 6}" y="{y + 13}" font-size="11">{share:.0%}</text>')
    base = 6 + len(entries) * row
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        x = left + tick * width
        parts.append(f'<line x1="{x}" x2="{x}" y1="4" y2="{base}" stroke="#ccc" stroke-width="0.5"/><text x="{x}" y="{base + 12}" font-size="10" text-anchor="middle">{tick:.0%}</text>')
    parts.append("</svg>")
    return "".join(parts)


def age_chart(histogram: dict) -> str:
    """Per year: the faces whose reported age is in it (bars), and their summed distributions (line)."""
    width, height, left, bottom = 620, 220, 34, 22
    summed, counted = np.asarray(histogram["summed"], float), np.asarray(histogram["counted"], float)
    top = max(summed.max(), counted.max(), 1.0)
    step = (width - left - 6) / YEARS

    def y(v: float) -> float:
        return height - bottom - v / top * (height - bottom - 8)

    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="age histogram">']
    for year, count in enumerate(counted):
        if count:
            parts.append(f'<rect x="{left + year * step:.1f}" y="{y(count):.1f}" width="{step * 0.9:.2f}" height="{height - bottom - y(count):.1f}" fill="{_COUNT}" opacity="0.55"/>')
    points = " ".join(f"{left + (year + 0.5) * step:.1f},{y(v):.1f}" for year, v in enumerate(summed))
    parts.append(f'<polyline points="{points}" fill="none" stroke="{_SHARE}" stroke-width="2"/>')
    for year in range(0, 101, 10):
        x = left + year * step
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{height - bottom}" y2="{height - bottom + 4}" stroke="#555"/><text x="{x:.1f}" y="{height - 6}" font-size="10" text-anchor="middle">{year}</text>')
    parts.append(f'<line x1="{left}" x2="{width - 6}" y1="{height - bottom}" y2="{height - bottom}" stroke="#555"/>')
    parts.append(f'<text x="{left - 4}" y="14" font-size="10" text-anchor="end">{top:.0f}</text><text x="{left - 4}" y="{height - bottom}" font-size="10" text-anchor="end">0</text>')
    parts.append("</svg>")
    return "".join(parts)


def face_crops(faces: Faces, edges: tuple[int, ...], per_band: int = 4, base: Path | None = None) -> dict[str, list[str]]:
    """A few example faces per age band (those of the band's highest probability), as inline JPEG
    data URLs cropped from the images that can still be read; bands without any are left out."""
    import base64
    import io

    from PIL import Image

    from .images import load_image

    masses = band_masses(faces.age_distribution, edges)
    years = np.clip(np.floor(faces.age).astype(int), 0, YEARS - 1)
    labels = band_of_year(edges)[years]
    crops: dict[str, list[str]] = {}
    cache: dict[str, np.ndarray | None] = {}
    for band, name in enumerate(band_names(edges)):
        members = np.flatnonzero(labels == band)
        for index in members[np.argsort(-masses[members, band])]:
            if len(crops.get(name, [])) >= per_band:
                break
            source = faces.sources[index]
            if source not in cache:
                candidates = [Path(source)] + ([base / source] if base is not None else [])
                cache[source] = next((_readable(load_image, c) for c in candidates if c.is_file()), None)
            image = cache[source]
            if image is None:
                continue
            left, top, right, bottom = faces.boxes[index]
            margin = 0.15 * max(right - left, bottom - top)
            box = (int(max(left - margin, 0)), int(max(top - margin, 0)), int(min(right + margin, image.shape[1])), int(min(bottom + margin, image.shape[0])))
            if box[2] - box[0] < 4 or box[3] - box[1] < 4:
                continue
            crop = Image.fromarray(image[box[1] : box[3], box[0] : box[2]]).resize((64, 64))
            buffer = io.BytesIO()
            crop.save(buffer, "JPEG", quality=80)
            crops.setdefault(name, []).append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode())
    return crops


def _readable(load, path: Path):
    try:
        return load(path)
    except HowoldError:
        return None


_TITLES = {"gender": "Gender", "age": "Age bands", "race": "Race (5 classes)", "race_fairface": "Race (FairFace's 7 classes)"}


def render_html(summary: dict, histogram: dict, crops: dict[str, list[str]] | None) -> str:
    """The self-contained page: every chart inline SVG, every face an inline image, no request."""
    counts = f"{summary['faces']} faces in {summary['images']} images"
    extra = []
    if summary.get("faces_left_out"):
        extra.append(f"{summary['faces_left_out']} faces below the detection confidence left out")
    if summary.get("images_failed"):
        extra.append(f"{summary['images_failed']} images could not be analysed")
    if summary.get("tracked"):
        extra.append(f"video: each person tracked across frames counted once ({summary['tracked']} tracked persons)")
    html = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>howold report: {counts}</title><style>{_STYLE}</style></head><body><main>",
        f"<h1>What is in this collection</h1><p>{_escape(counts)}{'; ' if extra else ''}{_escape('; '.join(extra))}.</p>",
        f"<p class='note'>Shares corrected for the model's errors ({_escape(summary['method'])}, with statistics measured on validation faces), "
        f"with 90% intervals; the counted share (each face's most likely label) beside them. Model {_escape(summary['model'])}. "
        f"Age: {_escape(summary['age_readout'])}.</p>",
        "<p class='legend note'><span><i class='swatch' style='background:" + _SHARE + "'></i>corrected share, with its 90% interval</span>"
        "<span><i class='swatch' style='background:" + _COUNT + "'></i>counted</span></p>",
        "<h2>Age</h2><div class='card wide'>" + age_chart(histogram) + "<p class='note'>Line: the faces' age distributions summed; bars: faces counted at their reported age.</p></div>",
        "<h2>Shares</h2><div class='grid'>",
    ]
    for name in ATTRIBUTES:
        if name in summary:
            html.append(f"<div class='card'><h3>{_TITLES[name]}</h3>{share_chart(summary[name], _TITLES[name])}</div>")
    html.append("</div>")
    if summary.get("groups"):
        html.append("<h2>By folder</h2><div class='grid'>")
        for group, part in summary["groups"].items():
            html.append(f"<div class='card'><h3>{_escape(group)} <span class='note'>({part['faces']} faces)</span></h3>")
            for name in ("gender", "age"):
                if name in part:
                    html.append(share_chart(part[name], f"{group}: {_TITLES[name]}"))
            html.append("</div>")
        html.append("</div>")
    if crops:
        html.append("<h2>Example faces per age band</h2><div class='grid'>")
        for band, images in crops.items():
            html.append(f"<div class='card'><h3>{_escape(band)}</h3><div class='faces'>" + "".join(f"<img alt='a face read as {_escape(band)}' src='{url}'>" for url in images) + "</div></div>")
        html.append("</div>")
    html.append(f"<h2>Caveats</h2><p>{_escape(CAVEATS)}</p></main></body></html>")
    return "\n".join(html)


# ---- the command -------------------------------------------------------------------------------------


def write_report(
    results: str | Path,
    html: str | Path | None = None,
    json_path: str | Path | None = None,
    by: str | None = None,
    min_confidence: float | None = None,
    age_bands: str = ",".join(map(str, DEFAULT_AGE_BANDS)),
    heads: str | Path | None = None,
    backbone: str | None = None,
    crops: bool = True,
    method: str | None = None,
    draws: int = 300,
) -> dict:
    """`howold report`: the summary of a results file (returned), written as JSON and/or a page.
    Every check runs before anything is written; each output is written whole or not at all."""
    from .atomic import write_text
    from .backbones import DEFAULT_BACKBONE, create_backbone
    from .errors import ConfigError
    from .model import read_heads
    from .model_files import default_heads_path
    from .quantification import METHODS, band_edges

    try:
        edges = band_edges(age_bands)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    method = method or DEFAULT_METHOD
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if min_confidence is not None and not 0 <= min_confidence <= 1:
        raise ConfigError(f"--min-confidence {min_confidence}: give a probability between 0 and 1")
    faces = read_results(results, min_confidence, by)
    heads_path = Path(heads) if heads else default_heads_path(create_backbone(backbone or DEFAULT_BACKBONE))
    stats = model_statistics(read_heads(heads_path).metadata, faces.model)
    summary = summarise(faces, stats, edges, method, draws)
    if json_path is not None:
        write_text(json_path, json.dumps(summary, indent=2) + "\n")
    if html is not None:
        pictures = face_crops(faces, edges, base=Path(results).resolve().parent) if crops else None
        write_text(html, render_html(summary, age_histogram(faces), pictures))
    return summary
