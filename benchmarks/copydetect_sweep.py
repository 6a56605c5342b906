"""Verification settings and the copy score's constants, swept on a finished copydetect.py run.

    python benchmarks/copydetect_sweep.py --data /tmp/lookalike-copydetect-quick              # verification settings
    python benchmarks/copydetect_sweep.py --data /tmp/lookalike-copydetect-quick --calibrate  # copy score

Reads DIR/results.pkl (written by copydetect.py) and re-runs only the
verification of the fused "all views" rankings, so nothing is re-embedded. For
each setting (feature side, keypoints, shortlist, early stop) it prints recall
per tier and the verification time per query with candidate features read from
the files. --calibrate prints, for the copy score's two midpoints, the
precision of the top-1 hits called copies, their recall, and the share of the
no-original queries flagged.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import copydetect_metrics as metrics  # noqa: E402
import lookalike.verify as verify_module  # noqa: E402


def rerank(queries, rankings, side: int, keypoints: int, shortlist: int, strong: int):
    """Verified rankings with these settings, and the verification seconds per query (no feature cache)."""
    verify_module.FEATURE_SIDE, verify_module.MAX_FEATURES = side, keypoints
    cache: dict[str, tuple[verify_module.LocalFeatures, float]] = {}
    results, seconds = [], []
    for query, ranking in zip(queries, rankings):
        reused = []

        def candidate(position: int, ranking=ranking, reused=reused) -> verify_module.LocalFeatures:
            path = ranking[position][0]
            if path in cache:
                reused.append(cache[path][1])
            else:
                started = time.perf_counter()
                features = verify_module.extract_features(Image.open(path).convert("RGB"), keypoints)
                cache[path] = (features, time.perf_counter() - started)
            return cache[path][0]

        started = time.perf_counter()
        checks = verify_module.verify_shortlist(Image.open(query.path).convert("RGB"), candidate, shortlist, strong)
        seconds.append(time.perf_counter() - started + sum(reused))
        order = verify_module.rerank([s for _, s in ranking], checks)
        results.append([(ranking[p][0], score) for p, score in order])
    return results, seconds


def calibrate(queries, details) -> None:
    """Top-1 copy calls over the copy score's midpoints, from the stored (path, inliers, similarity) of each hit."""
    for inliers_mid in (8, 10, 12, 16):
        for similarity_mid in (0.88, 0.90, 0.92, 0.95, 2.0):
            verify_module.INLIER_MIDPOINT, verify_module.SIMILARITY_MIDPOINT = float(inliers_mid), similarity_mid
            rankings = []
            for rows in details:
                order = verify_module.rerank([s for _, _, s in rows], [_Check(i) for _, i, _ in rows])
                rankings.append([(rows[p][0], score) for p, score in order])
            at = metrics.at_threshold(queries, rankings, verify_module.COPY_THRESHOLD)
            print(
                f"inliers >= {inliers_mid:>2} or cosine >= {similarity_mid:.2f}: precision {at['precision']:.3f} "
                f"recall {at['recall']:.3f} no-original flagged {at['none_flagged']:.3f}"
            )


class _Check:
    def __init__(self, inliers: int) -> None:
        self.inliers = inliers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--calibrate", action="store_true")
    args = parser.parse_args()
    with open(Path(args.data) / "results.pkl", "rb") as handle:
        saved = pickle.load(handle)
    queries = saved["queries"]
    if args.calibrate:
        calibrate(queries, saved["verify"])
        return
    rankings = saved["rankings"]["all views"]
    for side, keypoints, shortlist, strong in [(512, 800, 10, 30), (384, 500, 10, 30), (320, 400, 10, 30)]:
        ranked, seconds = rerank(queries, rankings, side, keypoints, shortlist, strong)
        table = metrics.per_family(queries, ranked)
        print(
            f"side {side} keypoints {keypoints} shortlist {shortlist} stop at {strong or '-'}: "
            f"hard r1 {table[('hard', 'all')]['r1']:.3f} r10 {table[('hard', 'all')]['r10']:.3f} | "
            f"mild r1 {table[('mild', 'all')]['r1']:.3f} | "
            f"verification p50 {metrics.percentile_ms(seconds, 50):.0f} ms "
            f"p99 {metrics.percentile_ms(seconds, 99):.0f} ms",
            flush=True,
        )


if __name__ == "__main__":
    main()
