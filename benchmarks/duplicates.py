"""Duplicate tiers on a labelled set, against imagededup's PHash rule, and grouping at scale.

    python benchmarks/duplicates.py            # the full set (about 4,500 files) and 10k/30k/100k vectors
    python benchmarks/duplicates.py --quick    # a few hundred files and 10k vectors, for a smoke run

The labelled set is built at run time (benchmarks/duplicate_set.py). Each file is decoded as ingest decodes it,
embedded with EfficientNet-Lite0 and given its pixel signature; lookalike.duplicates groups them.

- Recall per tier: of the labelled copies (identical, same-image, near), the fraction that lands in the same
  tree of groups as its original *with the right tier*: the loosest tier on the path of groups between the
  copy and the original is the copy's label. "found" counts the copy whatever the tier.
- Pair precision: of every (keeper, member) pair the groups report, the fraction showing the same source.
- Chains: eight images, each a little more edited than the last; "collapsed" counts chains whose first and
  last images ended in one group.
- imagededup's rule: PHash (imagehash.phash on the image converted to RGB as imagededup loads it) with a
  Hamming distance <= 10, every pair under it reported (it makes no groups and no tiers).
- Scale: real embeddings of the set repeated with Gaussian noise (cosine about 0.7 to their base, and one in
  ten a close copy of another), with the real files' signatures and sizes, grouped in a fresh process each:
  wall and CPU time, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from duplicate_set import build_set  # noqa: E402
from lookalike.duplicate_neighbours import DEFAULT_NEIGHBOURS, EXACT_SEARCH_UP_TO, nearest_neighbours  # noqa: E402
from lookalike.duplicates import ImageFacts, find_duplicates  # noqa: E402
from lookalike.signatures import SIGNATURE_VERSION, estimate_jpeg_quality  # noqa: E402

EMBEDDER = "efficientnet-lite0"
PHASH_LIMIT = 10
SECTION = "## Duplicates"


def prepare(work: Path, quick: bool, kind: str = "mixed") -> dict:
    """Build, decode, embed and sign the labelled set once; cached in `work`."""
    name = ("set" if kind == "mixed" else kind) + ("-quick" if quick else "")
    cache = work / f"{name}-{SIGNATURE_VERSION}.npz"  # a new signature layout: a new cache
    if cache.exists():
        return dict(np.load(cache))
    import imagehash
    from PIL import Image

    from lookalike.embedders import load_embedder
    from lookalike.images import decode_file
    from lookalike.signatures import compute_signature

    files = build_set(work / name, quick=quick, kind=kind)
    embedder = load_embedder()
    vectors, signatures, hashes, facts = [], [], [], []
    for start in range(0, len(files), 64):
        decoded = [decode_file(f.path, 224) for f in files[start : start + 64]]
        vectors.append(embedder.embed(np.stack([d.pixels for d in decoded])))
        signatures += [np.frombuffer(compute_signature(d.pixels), dtype=np.uint8) for d in decoded]
        facts += [(d.content_hash, d.width, d.height) for d in decoded]
        for f in files[start : start + 64]:
            image = Image.open(f.path)
            image = image if image.mode == "RGB" else image.convert("RGBA").convert("RGB")  # as imagededup loads
            hashes.append(int(str(imagehash.phash(image)), 16))
    data = {
        "vectors": np.concatenate(vectors),
        "signatures": np.stack(signatures),
        "phash": np.asarray(hashes, dtype=np.uint64),
        "source": np.asarray([f.source for f in files]),
        "tier": np.asarray([f.tier for f in files]),
        "edit": np.asarray([f.edit for f in files]),
        "path": np.asarray([f.path for f in files]),
        "content_hash": np.asarray([c for c, _, _ in facts]),
        "dims": np.asarray([(w, h) for _, w, h in facts]),
    }
    np.savez(cache, **data)
    return data


def image_facts(data: dict) -> list[ImageFacts]:
    facts = []
    for i, path in enumerate(data["path"]):
        stat = os.stat(path)
        width, height = (int(x) for x in data["dims"][i])
        quality = estimate_jpeg_quality(Path(path).read_bytes())
        facts.append(
            ImageFacts(i, str(path), stat.st_size, str(data["content_hash"][i]), width, height, stat.st_mtime_ns,
                       data["signatures"][i].tobytes(), jpeg_quality=quality)
        )  # fmt: skip
    return facts


def evaluate_groups(groups: list, data: dict) -> dict:
    """Recall per tier with the right label, pair precision and chain collapse of lookalike's groups."""
    parent: dict[int, tuple[int, str]] = {}
    for group in groups:
        for member in group.others:
            parent[member.id] = (group.keep.id, group.tier)
    source, tier = data["source"], data["tier"]
    originals = {int(s): i for i, (s, t) in enumerate(zip(source, tier)) if t == "original"}
    result: dict = {}
    for label in ("identical", "same-image", "near"):
        copies = [i for i, t in enumerate(tier) if t == label]
        if not copies:
            continue  # the variants set has no byte copies
        verdicts = [_link(parent, i, originals[int(source[i])]) for i in copies]
        result[label] = {
            "copies": len(copies),
            "right": sum(v == label for v in verdicts) / len(copies),
            "found": sum(v is not None for v in verdicts) / len(copies),
        }
        for edit in sorted({str(data["edit"][i]) for i in copies}):
            right = [v == label for i, v in zip(copies, verdicts) if str(data["edit"][i]) == edit]
            result[label][f"right {edit}"] = sum(right) / len(right)
    pairs = [(g.keep.id, m.id) for g in groups for m in g.others]
    result["pairs"] = len(pairs)
    result["precision"] = sum(source[a] == source[b] for a, b in pairs) / max(1, len(pairs))
    photos = {int(s) for s, t, p in zip(source, tier, data["path"]) if t == "original" and str(p).endswith(".jpg")}
    photo_pairs = [(a, b) for a, b in pairs if int(source[a]) in photos or int(source[b]) in photos]
    result["photo_pairs"] = len(photo_pairs)
    result["photo_precision"] = sum(source[a] == source[b] for a, b in photo_pairs) / max(1, len(photo_pairs))
    result["chains"] = _chains(groups, data)
    return result


def _link(parent: dict[int, tuple[int, str]], first: int, second: int) -> str | None:
    """The loosest tier on the path of groups between two files, or None if they are not connected."""
    order = ("identical", "same-image", "near")
    paths = []
    for node in (first, second):
        path = {node: -1}
        loosest = -1
        while node in parent:
            node, stage = parent[node]
            loosest = max(loosest, order.index(stage))
            path[node] = loosest
        paths.append(path)
    shared = set(paths[0]) & set(paths[1])
    if not shared:
        return None
    worst = min(max(paths[0][n], paths[1][n]) for n in shared)
    return order[worst] if worst >= 0 else "identical"


def _chains(groups: list, data: dict) -> dict:
    chain_sources = {int(s) for s, t in zip(data["source"], data["tier"]) if t == "chain"}
    collapsed, widest = 0, 0
    for group in groups:
        ids = [m.id for m in group.members]
        for s in chain_sources:
            steps = [_step(data, i) for i in ids if int(data["source"][i]) == s and _step(data, i) is not None]
            if steps:
                widest = max(widest, max(steps) - min(steps))
                collapsed += min(steps) == 0 and max(steps) == 7
    return {"chains": len(chain_sources), "collapsed": collapsed, "widest_steps_in_a_group": widest}


def _step(data: dict, i: int) -> int | None:
    if data["tier"][i] == "original":
        return 0
    if data["tier"][i] == "chain":
        return int(str(data["edit"][i])[4:])
    return None


def evaluate_phash(data: dict) -> dict:
    """imagededup's PHash <= 10 rule: every pair within the limit, recall per tier and pair precision."""
    bits = np.unpackbits(data["phash"].astype(">u8").view(np.uint8).reshape(-1, 8), axis=1).astype(np.uint8)
    source, tier = data["source"], data["tier"]
    close: set[tuple[int, int]] = set()
    for start in range(0, len(bits), 512):
        distances = (bits[start : start + 512, None, :] != bits[None, :, :]).sum(axis=2)
        for a, b in zip(*np.nonzero(distances <= PHASH_LIMIT)):
            if start + a < b:
                close.add((int(start + a), int(b)))
    originals = {int(s): i for i, (s, t) in enumerate(zip(source, tier)) if t == "original"}
    result: dict = {}
    for label in ("identical", "same-image", "near"):
        copies = [i for i, t in enumerate(tier) if t == label]
        found = [(min(i, originals[int(source[i])]), max(i, originals[int(source[i])])) in close for i in copies]
        result[label] = {"copies": len(copies), "found": sum(found) / max(1, len(copies))}
    result["pairs"] = len(close)
    result["precision"] = sum(source[a] == source[b] for a, b in close) / max(1, len(close))
    return result


def distributions(data: dict) -> dict:
    """Per edit: cosine and thumbnail distance (RMS grey levels) between each copy and its original."""
    from lookalike.signatures import signature_distance

    source, tier, edit, vectors = data["source"], data["tier"], data["edit"], data["vectors"]
    originals = {int(s): i for i, (s, t) in enumerate(zip(source, tier)) if t == "original"}
    rows: dict[str, list[tuple[float, float]]] = {}
    for i, label in enumerate(tier):
        if label in ("same-image", "near"):
            o = originals[int(source[i])]
            distance = signature_distance(data["signatures"][i].tobytes(), data["signatures"][o].tobytes())
            rows.setdefault(f"{label} {edit[i]}", []).append((float(vectors[i] @ vectors[o]), distance))
    result = {}
    for name, values in sorted(rows.items()):
        cosines, distances = np.asarray(values).T
        result[name] = {
            "cosine min": float(cosines.min()),
            "cosine p5": float(np.percentile(cosines, 5)),
            "distance p5": float(np.percentile(distances, 5)),
            "distance median": float(np.median(distances)),
            "distance max": float(distances.max()),
        }
        print("distribution:", name, json.dumps({k: round(v, 2) for k, v in result[name].items()}), flush=True)
    return result


SWEEP = ((0.97, 0.88), (0.98, 0.88), (1.01, 0.88), (0.97, 0.90), (0.98, 0.90), (1.01, 0.90), (0.98, 0.92))


def sweep(data: dict) -> list[dict]:
    """Near-tier recall and pair precision for other (near_cosine, near_correlation) settings."""
    from dataclasses import replace

    from lookalike import duplicate_rules

    chosen = duplicate_rules.THRESHOLDS[EMBEDDER]
    facts = image_facts(data)
    rows = []
    try:
        for cosine, correlation in SWEEP:
            duplicate_rules.THRESHOLDS[EMBEDDER] = replace(chosen, near_cosine=cosine, near_correlation=correlation)
            result = evaluate_groups(find_duplicates(facts, data["vectors"], EMBEDDER), data)
            rows.append({"near_cosine": cosine, "near_correlation": correlation, "near": result["near"]["right"],
                         "precision": result["precision"], "photo_precision": result["photo_precision"]})  # fmt: skip
            print("sweep:", json.dumps(rows[-1]), flush=True)
    finally:
        duplicate_rules.THRESHOLDS[EMBEDDER] = chosen
    return rows


def synthetic(base: np.ndarray, count: int, seed: int = 1338) -> np.ndarray:
    """`count` unit vectors around the real ones: noisy repeats, and one in ten a close copy of another."""
    rng = np.random.default_rng(seed)
    dim = base.shape[1]
    vectors = base[np.arange(count) % len(base)].astype(np.float32)
    for start in range(0, count, 10_000):  # float32 noise in slices: no N x d float64 temporary
        block = vectors[start : start + 10_000]
        block += 0.0285 * rng.standard_normal(size=block.shape, dtype=np.float32)
    copies = rng.choice(count, size=count // 10, replace=False)
    vectors[copies] = vectors[(copies + 1) % count] + 0.009 * rng.standard_normal((len(copies), dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def scale_one(work: Path, count: int, quick: bool) -> dict:
    """Group `count` synthetic vectors (run in a fresh process): seconds and peak RSS."""
    data = prepare(work, quick)
    vectors = synthetic(data["vectors"], count)
    signatures = data["signatures"]
    dims = data["dims"]  # the real files' sizes, so that pairs of other sizes take the crop comparison
    # ... and their JPEG qualities, so that heavily compressed ones take the thumbnail search
    qualities = [estimate_jpeg_quality(Path(path).read_bytes()) for path in data["path"]]
    facts = [
        ImageFacts(i, f"/photos/{i:07}.jpg", 100_000 + i, f"{i:032x}", int(dims[i % len(dims)][0]),
                   int(dims[i % len(dims)][1]), i, signatures[i % len(signatures)].tobytes(),
                   jpeg_quality=qualities[i % len(qualities)])
        for i in range(count)
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started, cpu_started = time.perf_counter(), time.process_time()
    groups = find_duplicates(facts, vectors, EMBEDDER)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"count": count, "seconds": seconds, "cpu_seconds": cpu_seconds, "groups": len(groups)}
    result |= {"rss_before_mib": before, "peak_mib": peak, "load_average": os.getloadavg()[0]}
    if count > EXACT_SEARCH_UP_TO:
        result["close_neighbours_found"], result["knn_seconds"] = approximate_recall(vectors)
    return result


def approximate_recall(vectors: np.ndarray, queries: int = 1000, close: float = 0.9) -> tuple[float, float]:
    """Of the exact neighbours (cosine >= `close`) of a sample of rows, the fraction the approximate k-NN
    finds; and the seconds that k-NN search takes alone."""
    import faiss

    started = time.perf_counter()
    sims, found = nearest_neighbours(vectors, DEFAULT_NEIGHBOURS)
    seconds = time.perf_counter() - started
    rows = np.random.default_rng(7).choice(len(vectors), size=queries, replace=False)
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    true_sims, true_found = exact.search(vectors[rows], DEFAULT_NEIGHBOURS + 1)
    wanted = found_count = 0
    for row, row_sims, row_found in zip(rows, true_sims, true_found):
        targets = {int(j) for s, j in zip(row_sims, row_found) if s >= close and j != row}
        wanted += len(targets)
        found_count += len(targets & {int(j) for j in found[row]})
    return found_count / max(1, wanted), seconds


def run_scale(work: Path, sizes: list[int], quick: bool) -> list[dict]:
    rows = []
    for count in sizes:
        command = [sys.executable, __file__, "--work", str(work), "--scale-one", str(count)] + (["--quick"] * quick)
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lookalike-duplicates-benchmark")
    parser.add_argument("--sizes", default=None, help="comma-separated vector counts for the scale runs")
    parser.add_argument("--scale-one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sweep", action="store_true", help="also measure other near-tier settings")
    parser.add_argument(
        "--set", choices=("mixed", "wallpapers", "variants"), default="mixed",
        help="mixed: clip art and photo tiles (the default); wallpapers: tiles of photographs alone; variants: the "
        "same tiles, each copied once with another strength or placement of an edit (no scale runs for either)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.scale_one:
        print(json.dumps(scale_one(args.work, args.scale_one, args.quick)))
        return
    data = prepare(args.work, args.quick, args.set)
    spread = distributions(data)
    started = time.perf_counter()
    groups = find_duplicates(image_facts(data), data["vectors"], EMBEDDER)
    ours = evaluate_groups(groups, data)
    ours["seconds"] = time.perf_counter() - started
    print("lookalike:", json.dumps(ours), flush=True)
    phash = evaluate_phash(data)
    print("PHash<=10:", json.dumps(phash), flush=True)
    swept = sweep(data) if args.sweep else []
    default_sizes = "" if args.set != "mixed" else "10000" if args.quick else "10000,30000,100000"
    sizes = [int(s) for s in (default_sizes if args.sizes is None else args.sizes).split(",") if s]
    scale = run_scale(args.work, sizes, args.quick)
    machine = f"{os.cpu_count()} cores, Python {platform.python_version()}"
    results = {"set": args.set, "files": len(data["path"]), "lookalike": ours, "phash": phash, "scale": scale,
               "sweep": swept, "distributions": spread, "machine": machine}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
