"""`lengthwise predict learned ...`: pretrain the learned predictor and compare it with the baselines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from lengthwise.core.io import write_jsonl

learned_app = typer.Typer(help="The learned predictor: pretrain on ShareGPT dev, compare on labelled prompts.",
                          no_args_is_help=True)
console = Console(stderr=True)

EVAL_JSONL = Path("docs/results/predict_eval/eval.jsonl")
ACTUALS_JSONL = Path("docs/results/learned/actuals.jsonl")
OUT_DIR = Path("docs/results/learned")
#: The embedded model's own lengths at max_tokens 256 (`benchmarks/learned_collect.py`), and where `rank` reports.
LABELS_256 = Path("docs/results/labels/qwen2.5-coder-0.5b_max256.jsonl")
RANK_DIR = Path("docs/results/labels")

Labels = Annotated[list[Path], typer.Option("--labels", help="JSONLs of actual lengths (predict eval, collect); excluded from pretraining.")]
Embedding = Annotated[bool, typer.Option(help="Use the MiniLM prompt embedding (else TF-IDF and prompt length only).")]
MaxLength = Annotated[int, typer.Option(help="Embedding: prompt truncation (model tokens).")]


def _embedder(embedding: bool, max_length: int) -> Any:
    from lengthwise.predict.learned.embedding import PromptEmbedder

    return PromptEmbedder(max_length=max_length, cache_size=50_000) if embedding else None


def _pretrain(labels: list[Path], embedder: Any, indices: range | None = None):
    """The pretrained stage on the dev pool (records in `indices`) minus every labelled prompt (id or text)."""
    from lengthwise.predict.offline.learned_data import embed_all, embedding_cache, load_labelled, proxy_pool
    from lengthwise.predict.offline.learned_eval import dense_rows
    from lengthwise.predict.learned.pretrained import Pretrained
    from lengthwise.core.tokens import count_tokens

    labelled = load_labelled([p for p in labels if p.exists()])
    texts = {item.text.strip() for item in labelled}
    pool = [
        p for p in proxy_pool({item.id for item in labelled})
        if p.text.strip() not in texts and (indices is None or p.index in indices)
    ]
    pool_texts = [p.text for p in pool]
    embeddings = embed_all(embedder, pool_texts, embedding_cache(embedder)) if embedder else None
    dense = dense_rows(pool_texts, embeddings)
    lengths = [count_tokens(p.reference) for p in pool]
    meta = {"label": "sharegpt dev reference answer tokens (cl100k)", "embedding": bool(embedder),
            "embedding_max_length": embedder.max_length if embedder else None,
            "dev_indices": [indices.start, indices.stop] if indices else None}
    console.print(f"pretraining on {len(pool)} dev prompts ({len(labelled)} labelled prompts excluded)")
    return Pretrained.fit(pool_texts, dense, lengths, meta=meta), pool_texts, dense, lengths, labelled


@learned_app.command("train")
def train_command(
    out: Annotated[Path, typer.Option(help="Where to write the proxy model (the shipped file, "
                                            "src/lengthwise/predict/learned/pretrained.npz, may hold a rank stage "
                                            "built on it: `predict learned rank --ship`).")],
    labels: Labels = [EVAL_JSONL, ACTUALS_JSONL, LABELS_256],  # noqa: B006 (typer reads the default)
    embedding: Embedding = True,
    max_length: MaxLength = 128,
    first: Annotated[int, typer.Option(help="First dev record index used (the benchmarks and predict eval draw from the head).")] = 2000,
    stop: Annotated[int, typer.Option(help="Dev record index to stop at (benchmarks/learned_collect.py labels the tail).")] = 10_000,
) -> None:
    """Fit the pretrained stage on ShareGPT dev proxy lengths and save it to --out."""
    model, *_ = _pretrain(labels, _embedder(embedding, max_length), range(first, stop))
    model.save(out)
    console.print(f"wrote {out} ({out.stat().st_size // 1024} KiB): {model.meta}")


@learned_app.command("compare")
def compare_command(
    labels: Labels = [EVAL_JSONL, ACTUALS_JSONL],  # noqa: B006
    variant: Annotated[str, typer.Option(help="Self-prediction variant to wrap (as recorded by predict eval).")] = "seed",
    folds: Annotated[int, typer.Option(help="Cross-validation folds.")] = 5,
    repeats: Annotated[int, typer.Option(help="Shuffled repeats of the folds.")] = 2,
    embedding: Embedding = True,
    max_length: MaxLength = 128,
    out_dir: Annotated[Path, typer.Option(help="Metrics, plot and replay JSONLs go here.")] = OUT_DIR,
) -> None:
    """Self-prediction vs prompt length vs the LTR baseline vs the learned predictor (cold and online)."""
    import numpy as np
    from rich.progress import Progress

    from lengthwise.predict.offline.learned_eval import Setup, compare
    from lengthwise.predict.offline.ranker import ListMLERanker

    embedder = _embedder(embedding, max_length)
    pretrained, pool_texts, dense, lengths, labelled = _pretrain(labels, embedder)
    labelled = [item for item in labelled if item.text.strip()]
    if len(labelled) < 2 * folds:
        raise typer.BadParameter(f"only {len(labelled)} labelled prompts in {[str(p) for p in labels]}")
    chosen = variant if any(variant in item.variants for item in labelled) else None
    if chosen is None:
        console.print(f"[yellow]no {variant!r} self-predictions recorded: comparing without self-prediction")
    console.print(f"{len(labelled)} labelled prompts; wrapped self-prediction variant: {chosen}")
    console.print("fitting the LTR baseline (ListMLE) on the dev proxy lengths")
    ranker = ListMLERanker.fit(dense, np.log1p(np.minimum(lengths, 512)), lists=3000)
    ablations = {}
    if embedder is not None:
        no_embedding, *_ = _pretrain(labels, None)
        ablations["learned, online, no embedding"] = (None, no_embedding)
    setup = Setup(embedder, pretrained, ranker, chosen, ablations)
    with Progress(console=console) as progress:
        task = progress.add_task("folds", total=folds * repeats)
        result = compare(setup, labelled, folds, repeats, on_fold=lambda r, f: progress.advance(task))
    write_outputs(result, labelled, out_dir)


def write_outputs(result: dict[str, Any], labelled: list, out_dir: Path) -> None:
    """compare.json, a table on the console, the learning curve plot, replay JSONLs for `lengthwise sim`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lengthwise.core.tokens import count_tokens

    out_dir.mkdir(parents=True, exist_ok=True)
    out_of_fold = result.pop("out_of_fold")
    (out_dir / "compare.json").write_text(json.dumps(result, indent=1) + "\n")
    table = Table(title=f"{result['n']} labelled prompts, {result['folds']}-fold x {result['repeats']}")
    for column in ("method", "tau per fold", "Spearman per fold", "MAE", "within 2x", "tau pooled"):
        table.add_column(column)
    for name, m in result["metrics"].items():
        cells = [f"{m[k]['mean']:.3f} ± {m[k]['sd']:.3f}" for k in ("kendall_tau", "spearman")]
        pooled = result["pooled"][name]["kendall_tau"]
        table.add_row(name, *cells, f"{m['mae']['mean']:.0f}", f"{m['within_2x']['mean']:.2f}",
                      f"{pooled['mean']:.3f} ± {pooled['sd']:.3f}")
    Console().print(table)
    for name, d in result["tau_minus_cold"].items():
        console.print(f"tau - cold tau, paired by fold: {name}: {d['mean']:+.3f} ± {d['se']:.3f} (se)")
    replay_dir = out_dir / "replay"
    replay_dir.mkdir(exist_ok=True)
    for i, (name, values) in enumerate(out_of_fold.items()):
        write_jsonl(replay_dir / f"{i}.jsonl", (
            {"method": name, "id": item.id, "predicted": value, "actual": item.actual, "prompt_tokens": count_tokens(item.text)}
            for item, value in zip(labelled, values, strict=True)
        ))
    (replay_dir / "index.json").write_text(json.dumps({str(i): n for i, n in enumerate(out_of_fold)}, indent=1) + "\n")
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in result["curves"].items():
        xs = [int(n) for n in curve]
        ax.plot(xs, list(curve.values()), marker="o", label=name)
    others = [(name, m) for name, m in result["metrics"].items() if "learned" not in name]
    for i, (name, m) in enumerate(others, start=1):
        ax.axhline(m["kendall_tau"]["mean"], linestyle=":", linewidth=1.2, label=name, color=f"C{i}")
    ax.set_xlabel("completions observed")
    ax.set_ylabel("held-out Kendall tau")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out_dir / "learning_curve.png", dpi=120)
    console.print(f"wrote {out_dir}/compare.json, learning_curve.png, replay/*.jsonl")


@learned_app.command("rank")
def rank_command(
    labels: Annotated[list[Path], typer.Option("--labels", help="JSONLs of the serving model's lengths (collect).")] = [LABELS_256],  # noqa: B006
    out_dir: Annotated[Path, typer.Option(help="rank.json and rank.md go here.")] = RANK_DIR,
    ship: Annotated[Path | None, typer.Option(help="Write the rank stage here unless it grades measurably worse than "
                                                    "the shipped stage on the test split (paired 95% interval of the "
                                                    "τ difference below 0; to ship it: "
                                                    "src/lengthwise/predict/learned/pretrained.npz).")] = None,
    max_length: MaxLength = 128,
    proxy_path: Annotated[Path | None, typer.Option("--proxy", help="The proxy model to stack the ranker on "
                                                    "(`predict learned train --first/--stop` outside the labels' "
                                                    "record range); default: the shipped stage's, pretrained again "
                                                    "without the labelled prompts where its range holds some.")] = None,
) -> None:
    """Train the censored pairwise ranker on the train split; grade it and the baselines on the test split."""
    import hashlib

    import numpy as np

    from lengthwise.core.io import atomic_write_json, atomic_write_text
    from lengthwise.predict.learned.pretrained import SHIPPED, Pretrained
    from lengthwise.predict.learned.rank_stage import RankStage, load_stage
    from lengthwise.predict.offline.learned_data import embed_all, embedding_cache, load_labelled
    from lengthwise.predict.offline.rank_eval import (
        RANK_STAGE, SHIPPED_COLD, SHIPPED_ONLINE, build_data, evaluate, label_curve, online_curve,
    )

    embedder = _embedder(True, max_length)
    items = [item for item in load_labelled(labels) if item.text.strip()]
    shipped = load_stage(SHIPPED)
    proxy = shipped.proxy if isinstance(shipped, RankStage) else shipped
    first, stop = proxy.meta.get("dev_indices") or (0, 1 << 30)
    if proxy_path is not None:
        proxy = Pretrained.load(proxy_path)
        own_first, own_stop = proxy.meta.get("dev_indices") or (0, 1 << 30)
        if overlap := sum(own_first <= item.index < own_stop for item in items):
            raise typer.BadParameter(f"{overlap} labelled prompts lie in {proxy_path}'s dev range "
                                     f"[{own_first}, {own_stop}): its proxy labels would leak into the test split")
    elif overlap := sum(first <= item.index < stop for item in items):
        # the proxy saw those prompts' recorded answers: refit it without them
        console.print(f"{overlap} labelled prompts lie in the proxy's dev range: pretraining it again without them")
        proxy, *_ = _pretrain([EVAL_JSONL, ACTUALS_JSONL, *labels], embedder, range(first, stop))
    embeddings = embed_all(embedder, [item.text for item in items], embedding_cache(embedder))
    data = build_data(items, embeddings, proxy)
    console.print(f"{len(items)} labelled prompts: " + ", ".join(f"{p} {len(data.where(p))}" for p in ("train", "val", "test")))
    test = data.where("test")
    unseen = np.array([not first <= data.items[i].index < stop for i in test])
    result, stage = evaluate(data, embedder, proxy, shipped, unseen if 0 < unseen.sum() < len(test) else None)
    if len(data.where("train", "val")) >= 400:
        console.print("online stage over each pretrained stage, on train+val only")
        result["online_curve"] = online_curve(data, embedder, proxy, stage.meta["l2"])
        result["label_curve"] = label_curve(data, stage.meta["l2"])
    rows = result["rows"]
    # Not "ships by the point estimate": the shipped stage's own test figure can be optimistic (its proxy may have
    # seen test prompts' recorded answers, and it was kept for grading well on part of this split), while the new
    # stage is graded cleanly; so the new one ships unless it is measurably worse than the shipped one, cold or online.
    highs = [result["paired"][f"{RANK_STAGE} − {name}"]["ci_high"] for name in (SHIPPED_COLD, SHIPPED_ONLINE)]
    ships = all(high is not None and high >= 0 for high in highs)
    result["labels"] = [{"path": str(p), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in labels]
    result["shipped"] = {"path": str(SHIPPED), "meta": shipped.meta, "test_prompts_in_its_proxy_range":
                         sum(first <= data.items[i].index < stop for i in data.where("test"))}
    result["proxy"] = proxy.meta
    result["rank_stage"] = {"meta": stage.meta, "calibration": stage.calibration.to_json(), "not_worse_than_shipped": ships}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "rank.json", result, indent=1)
    atomic_write_text(out_dir / "rank.md", _rank_report(result))
    Console().print(_rank_report(result))
    if ship is not None:
        # The kept stage is shipped with its held-out measurement: `auto` trusts it until its own says otherwise.
        name, kept = (RANK_STAGE, stage) if ships else (SHIPPED_COLD, shipped)
        if isinstance(kept, RankStage):
            test = rows[name]
            kept.meta["held_out"] = {"n": test["n"], "tau": test["tau"], "low": test["ci_low"], "high": test["ci_high"],
                                     "split": "test", "labels": [p.name for p in labels],
                                     "test_prompts_in_proxy_range": result["shipped"]["test_prompts_in_its_proxy_range"]
                                     if not ships else 0}
            kept.save(ship)
        verdict = "is not measurably worse than" if ships else "grades measurably worse than"
        console.print(f"the rank stage {verdict} the shipped stage: wrote {ship} with its held-out tau ({name})")


def _rank_report(result: dict[str, Any]) -> str:
    from lengthwise.predict.offline.rank_eval import markdown

    n = result["n"]
    head = (f"Test split: {n['test']} prompts (train {n['train']}, validation {n['val']}); "
            f"share cut at the cap: {result['capped_share'].get('test', 0):.2f}.\n\n")
    return head + markdown(result)
