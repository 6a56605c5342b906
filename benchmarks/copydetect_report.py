"""Tables of the copy-detection benchmark: per family and overall for every system, latency per piece, storage."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

import copydetect_metrics as metrics
from docs import machine_description


def write_report(
    queries, rankings, runs, verify_times, base_seconds, store, ingest_rate, new_process, args, threshold: float
) -> None:
    data = Path(args.data)
    with open(data / "results.pkl", "wb") as handle:  # for re-analysis without re-running
        pickle.dump(
            {
                "queries": queries,
                "rankings": rankings,
                "verify": [t["details"] for t in verify_times],
                "timings": {
                    "runs": [{"t": r["t"]} for r in runs],
                    "verify_times": [{k: v for k, v in t.items() if k != "details"} for t in verify_times],
                    "base_seconds": base_seconds,
                    "sizes": [len(blob) for blob in store.packed.values()],
                    "seconds": list(store.seconds.values()),
                    "ingest_rate": ingest_rate,
                    "new_process": new_process,
                },
            },
            handle,
        )
    lines = [
        f"Machine: {machine_description()}. Command: `python benchmarks/copydetect.py --images {args.images} "
        f"--queries {args.queries}`; collection of {args.images} images, {len(queries)} queries "
        f"({sum(q.original is None for q in queries)} with no original in the collection).",
        "",
    ]
    lines += family_table(queries, rankings)
    lines += overall_table(queries, rankings, threshold)
    lines += latency_table(runs, verify_times, base_seconds, store, ingest_rate, new_process)
    text = "\n".join(lines)
    print(text)
    (data / "report.md").write_text(text + "\n")


def family_table(queries, rankings) -> list[str]:
    names = list(rankings)
    tables = {name: metrics.per_family(queries, ranking) for name, ranking in rankings.items()}
    keys = sorted(tables[names[0]], key=lambda k: ({"mild": 0, "hard": 1, "all": 2}[k[0]], k[1] == "all", k[1]))
    lines = [
        "recall@1 / recall@10 per edit family (n queries):",
        "",
        "| tier | family | n | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for key in keys:
        cells = [f"{tables[n][key]['r1']:.3f} / {tables[n][key]['r10']:.3f}" for n in names]
        label = [f"**{part}**" if key[1] == "all" else part for part in key]
        lines.append(f"| {label[0]} | {label[1]} | {tables[names[0]][key]['n']} | " + " | ".join(cells) + " |")
    return lines + [""]


def overall_table(queries, rankings, threshold: float) -> list[str]:
    lines = [
        "| system | mAP hard | mAP mild | micro-AP | recall @ 90% precision | recall @ 99% precision |",
        "|---|---|---|---|---|---|",
    ]
    for name, ranking in rankings.items():
        table = metrics.per_family(queries, ranking)
        micro = metrics.micro_ap(queries, ranking)
        lines.append(
            f"| {name} | {table[('hard', 'all')]['map']:.3f} | {table[('mild', 'all')]['map']:.3f} | "
            f"{micro['uap']:.3f} | {micro['r@p90']:.3f} | {micro['r@p99']:.3f} |"
        )
    final = list(rankings.values())[-1]
    at = metrics.at_threshold(queries, final, threshold)
    lines += [
        "",
        f"Copy threshold {threshold} on the calibrated score of the last system: precision "
        f"{at['precision']:.3f} of the top-1 hits called copies, recall {at['recall']:.3f} of the originals, "
        f"{at['none_flagged']:.3f} of the {at['nones']} no-original queries flagged.",
        "",
    ]
    return lines


def latency_table(runs, verify_times, base_seconds, store, ingest_rate, new_process) -> list[str]:
    def row(label: str, seconds) -> str:
        return f"| {label} | {metrics.percentile_ms(seconds, 50):.1f} | {metrics.percentile_ms(seconds, 99):.1f} |"

    view_counts = [r["t"]["views"] for r in runs]
    lines = [
        "Latency per query, in one process with the model loaded (ms):",
        "",
        "| stage | p50 | p99 |",
        "|---|---|---|",
        row("baseline search (decode, embed, search)", base_seconds),
        row("decode query", [r["t"]["decode"] for r in runs]),
        row("propose views (rects included)", [r["t"]["propose"] for r in runs]),
        row(f"embed views (median {int(np.median(view_counts))} + 2 measured extras)", [r["t"]["embed"] for r in runs]),
        row("search views (Faiss, flat)", [r["t"]["search"] for r in runs]),
        row("verification, candidate features extracted from the files", [t["from_files"] for t in verify_times]),
        row("  of which candidate RootSIFT extraction", [t["candidate_features"] for t in verify_times]),
        row("verification, candidate features stored at ingest", [t["from_stored"] for t in verify_times]),
    ]
    if new_process:
        lines.append(row("full pipeline, one search in a new process (wall)", new_process))
    sizes = [len(blob) for blob in store.packed.values()]
    reached = [t["reached"] for t in verify_times]
    per_image = list(store.seconds.values())
    lines += [
        "",
        f"Ingest (today's pipeline): {ingest_rate:.1f} images/s. Stored local features would cost "
        f"{np.mean(sizes) / 1024:.1f} KiB per image (mean, float16 points + uint8 RootSIFT) and "
        f"{np.median(per_image) * 1000:.0f} ms of SIFT per image (median) at ingest. Candidates verified per query: "
        f"median {np.median(reached):.0f}, mean {np.mean(reached):.1f}.",
        "",
    ]
    return lines
