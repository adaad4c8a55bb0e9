"""The GPU evidence run: a fast-AT teacher, then one student per method distilled from it, all sized to a wall-clock
budget on the machine it runs on, and one table with the orderings the papers claim.

    python scripts/gpu_quick.py [--out gpu-quick] [--budget 8] [--data-dir DIR] [--force] [--cpu] [-S KEY=VALUE ...]

configs/gpu-quick.yaml holds the settings; -S overrides them as the commands' -S does. In order, it:
1. checks its inputs, before it writes anything: a CUDA device (--cpu runs on the CPU instead: the test suite's
   tiny run), CIFAR-10 in the data directory (--data-dir, else $ACDISTILL_DATA_DIR), and that a teacher or plan
   already in --out was made with these settings;
2. measures on this machine one epoch of the teacher's training and of every student's (acdistill.pipeline.sizing),
   and a forward-backward pass for the evaluations, then plans: the teacher's epochs, and the most epochs (at most
   distill.epochs) that every student can have within the budget, counting each evaluation at its upper bound. A
   budget too small for one epoch of every student is refused with the smallest that fits;
3. trains and evaluates the teacher, then distills and evaluates the students (the ablate section's points);
4. prints, and writes to <out>/results.md and results.json, one table: accuracies, epochs, minutes of training and
   evaluation, and each method's epoch time, measured and planned; then each ordering the papers claim, with the
   difference's 95 % interval.

Run again, it resumes: the plan (<out>/plan.json) and the teacher are reused, finished students are reused, and an
unfinished one continues from its last epoch. A teacher or plan made with other settings is refused, unless --force
(retrain the teacher and plan again).
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # the budget counts from here: torch's import takes seconds

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

# Run as `python scripts/gpu_quick.py` from any directory: this checkout's acdistill, installed or not.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import acdistill  # noqa: E402
from acdistill.analysis import read_dvclive_series  # noqa: E402
from acdistill.checkpoint import read_sidecar  # noqa: E402
from acdistill.config import FINETUNE, NAME, Params, fingerprint, parse_override  # noqa: E402
from acdistill.data import DATASETS, MIRROR_ENV, ImageSet, load_split  # noqa: E402
from acdistill.errors import AcdistillError  # noqa: E402
from acdistill.io import write_json, write_text  # noqa: E402
from acdistill.methods import METHODS  # noqa: E402
from acdistill.pipeline.common import details_path, freeze, new_model  # noqa: E402
from acdistill.pipeline.points import (  # noqa: E402
    STUDENT,
    distilled_point,
    evaluation_digest,
    evaluation_path,
    point_params,
    read_result,
)
from acdistill.pipeline.sizing import epoch_seconds, evaluation_seconds, most_epochs, pass_seconds  # noqa: E402
from acdistill.provenance import code_info, cpu_name, machine_info  # noqa: E402
from acdistill.stats import paired_difference, unpack_bits  # noqa: E402

PRESET = REPO / "configs" / "gpu-quick.yaml"
TEACHER = Path("models/teacher.safetensors")
TEACHER_EVAL = Path("metrics/eval_teacher.json")
PLAN = Path("plan.json")
RESERVE = 0.05  # of the budget, for what the plan does not measure: building and saving models, writing the tables
FULL_TRAIN_SET = 50_000  # CIFAR-10's: the teacher trains on all of it
# The orderings the papers claim, as (better, worse) point names: every student against the no-teacher baseline,
# GACD + AFT against ARD (the GACD paper's headline rows), CRDND against RSLAD and ACM's ablation (the CRDND report's).
HEADLINE = [("gacd-aft", "ard"), ("crdnd", "rslad"), ("crdnd", "crdnd-no-acm")]
BASELINE = "sat"


def say(message: str) -> None:
    print(f"gpu_quick: {message}", flush=True)


def check_device(params: Params, cpu: bool) -> torch.device:
    if cpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise AcdistillError("no CUDA device on this machine: this run measures a GPU (--cpu runs it on the CPU)")
    return torch.device(params.device)


def load_data(params: Params, data_dir: Path | None) -> tuple[ImageSet, ImageSet]:
    """The training and test sets from the offline mirror in `data_dir`, never a download: the run is meant for a
    machine without internet, and a download would be timed into the budget."""
    files = [mf.filename for mf in DATASETS.get(params.data.dataset).mirror_files]
    if data_dir is None:
        raise AcdistillError(f"no data directory: pass --data-dir or set {MIRROR_ENV} to one holding {files[-1]}")
    if not any((data_dir / name).is_file() for name in files):
        raise AcdistillError(
            f"no {params.data.dataset} in {data_dir}: looked for {' and '.join(files)} (unpack_device_pack.py writes "
            f"{files[-1]} from cifar10_device_pack.npz)"
        )
    d = params.data
    train = load_split(d.dataset, True, d.train_subset, d.root, data_dir)
    if d.train_subset is None and len(train) < FULL_TRAIN_SET:
        raise AcdistillError(
            f"{data_dir} holds {len(train)} {d.dataset} training images ({train.source}), not all {FULL_TRAIN_SET}: "
            f"the teacher trains on all of them; add {files[-1]}"
        )
    return train, load_split(d.dataset, False, d.test_subset, d.root, data_dir)


def check_teacher(params: Params) -> bool:
    """Whether a teacher trained with these settings is in place (a finished teacher with others is refused)."""
    if not TEACHER.exists():
        return False
    sidecar = read_sidecar(TEACHER)
    wanted = {"arch": params.teacher.arch, "params": params.teacher.train.model_dump(mode="json")}
    if {"arch": sidecar["arch"], "params": sidecar["info"].get("params")} != wanted:
        raise AcdistillError(f"{TEACHER} was trained with other teacher settings; pass --force to retrain it")
    return True


def student_runs(params: Params) -> tuple[dict[str, tuple[str, Params]], dict[str, Params]]:
    """The ablate points as the runs they train: {point name: (the distilled run's key, its params)} (points that
    share a distilled run, as a fine-tuning point does with its distilled point, share its key) and {fine-tuning
    point name: its params}."""
    distilled, tuned = {}, {}
    for point in params.ablate.points:
        first = distilled_point(point)
        distilled[point[NAME]] = (json.dumps(first, sort_keys=True), point_params(params, first))
        if point.get(FINETUNE):
            tuned[point[NAME]] = point_params(params, point)
    return distilled, tuned


def measure(params: Params, train: ImageSet, test: ImageSet, device: torch.device, teacher_done: bool) -> dict:
    """Seconds, measured here: an epoch of the teacher (None when it is trained already), of every distilled run and
    of every fine-tuning; and an upper bound on one evaluation of the teacher and of a student."""
    classes = DATASETS.get(params.data.dataset).num_classes
    train = train.to(device)

    def timing(label: str, section, p: Params, arch: str) -> float:
        teacher = None
        if METHODS.get(section.method).needs_teacher:
            teacher = freeze(new_model(params.teacher.arch, params, classes))
        student = new_model(arch, params, classes)
        monitor = test.take(section.monitor_n)
        seconds = epoch_seconds(
            section, p, student=student, teacher=teacher, train=train, monitor=monitor, device=device
        )
        say(f"  {label}: {section.method}, {arch}: {seconds:.1f} s an epoch")
        return seconds

    say(f"measuring an epoch of each training on {len(train)} images ({device})")
    teacher_s = None if teacher_done else timing("teacher", params.teacher.train, params, params.teacher.arch)
    distilled, tuned = student_runs(params)
    runs: dict[str, float] = {}
    for name, (key, p) in distilled.items():
        if key not in runs:
            runs[key] = timing(name, p.distill, p, p.distill.student)
    aft = {name: timing(f"{name} (fine-tuning)", p.aft, p, p.distill.student) for name, p in tuned.items()}
    e = params.eval
    n = e.n or len(test)
    evaluation = {
        arch: evaluation_seconds(e, n, pass_seconds(new_model(arch, params, classes), test, e.batch_size, device))
        for arch in (params.teacher.arch, params.distill.student)
    }
    return {
        "teacher_epoch_s": teacher_s,
        "distill_epoch_s": {name: runs[key] for name, (key, _) in distilled.items()},
        "distinct_distill_epoch_s": sum(runs.values()),
        "aft_epoch_s": aft,
        "teacher_eval_s_bound": evaluation[params.teacher.arch],
        "student_eval_s_bound": evaluation[params.distill.student],
    }


def make_plan(params: Params, budget_min: float, measured: dict, elapsed_s: float, load_s: float) -> dict:
    """The students' epochs that fit in the budget after what has run so far (`elapsed_s`), the teacher, every
    evaluation (at its bound) and every stage's loading of the data (`load_s` each), less the reserve; an
    AcdistillError giving the smallest budget when not one epoch fits."""
    teacher_s = (measured["teacher_epoch_s"] or 0.0) * params.teacher.train.epochs
    evaluations = measured["teacher_eval_s_bound"] + len(params.ablate.points) * measured["student_eval_s_bound"]
    loading = load_s * (len(params.ablate.points) + 2)  # the teacher's training and evaluation, then each point
    fixed = elapsed_s + teacher_s + evaluations + loading
    per_epoch, aft_epoch = measured["distinct_distill_epoch_s"], sum(measured["aft_epoch_s"].values())
    aft = params.aft if measured["aft_epoch_s"] else None
    available = budget_min * 60 * (1 - RESERVE) - fixed
    epochs = most_epochs(available, per_epoch, aft_epoch, aft, params.distill.epochs)
    if epochs == 0:
        one = per_epoch + (aft.for_student(1, "the students").epochs * aft_epoch if aft else 0)
        smallest = math.ceil((fixed + one) / (1 - RESERVE) / 6) / 10
        raise AcdistillError(
            f"a budget of {budget_min:g} min is too small for one epoch of every student on this machine: the "
            f"smallest that fits is {smallest:.1f} min (teacher {teacher_s / 60:.1f} min, one epoch of every student "
            f"{one / 60:.1f} min, evaluations at most {evaluations / 60:.1f} min, measuring and loading data "
            f"{(elapsed_s + loading) / 60:.1f} min)"
        )
    tuned_epochs = aft.for_student(epochs, "the students").epochs if aft else None
    return {
        "student_epochs": epochs,
        "aft_epochs": tuned_epochs,
        "estimated_minutes": {
            "start and measuring": round(elapsed_s / 60, 2),
            "loading data": round(loading / 60, 2),
            "teacher": round(teacher_s / 60, 2),
            "students": round((epochs * per_epoch + (tuned_epochs or 0) * aft_epoch) / 60, 2),
            "evaluations (bound)": round(evaluations / 60, 2),
        },
        "measured": measured,
    }


def epoch_time(live_dir: Path, images: int) -> float | None:
    """Seconds per epoch of a finished training, from the images per second its curves logged (training only)."""
    rates = read_dvclive_series(live_dir).get("images_per_s")
    return round(statistics.fmean(images / rate for _, rate in rates), 1) if rates else None


def table(params: Params, plan: dict, teacher_eval: dict, ablated: dict) -> tuple[list[dict], str]:
    attacks = params.eval.attacks
    info = read_sidecar(TEACHER)["info"]
    measured = plan["measured"]
    rows = [
        {
            "model": "teacher",
            "arch": params.teacher.arch,
            "method": f"{info['method']}, {info['params']['attack']['steps']}-step attack",
            "epochs": info["epochs"],
            "eval": teacher_eval,
            "train_minutes": info["minutes_this_run"],
            "epoch_s": epoch_time(Path("dvclive/teacher"), info["train_images"]),
            "planned_epoch_s": round(measured["teacher_epoch_s"], 1) if measured["teacher_epoch_s"] else None,
        }
    ]
    for point in ablated["points"]:
        run = Path(point["run"])
        result = json.loads((run / "result.json").read_text())
        named = next(p for p in params.ablate.points if p[NAME] == point[NAME])
        digest = evaluation_digest(point_params(params, named))
        evaluation = read_result(evaluation_path(run, digest), digest)
        tuned = point.get(FINETUNE, False)
        trained = read_sidecar(run / STUDENT)["info"]  # the run's last training: distillation, or the AFT after it
        planned = measured["aft_epoch_s"] if tuned else measured["distill_epoch_s"]
        rows.append(
            {
                "model": point[NAME],
                "arch": result["student"],
                "method": result["method"] + (" + AFT (sat)" if tuned else ""),
                "epochs": f"{plan['student_epochs']} + {trained['epochs']}" if tuned else trained["epochs"],
                "eval": evaluation["eval"],
                "train_minutes": result["train_minutes"],
                "epoch_s": epoch_time(run / "dvclive", result["train_images"]),
                "planned_epoch_s": round(planned[point[NAME]], 1),
            }
        )
    header = ["model", "arch", "method", "epochs", *attacks, "train min", "eval min", "epoch s", "planned epoch s"]
    lines = [f"| {' | '.join(header)} |", "|" + "---|" * len(header)]
    for r in rows:
        accuracies = [f"{r['eval'][a]['accuracy']:.2f}" for a in attacks]
        eval_min = sum(r["eval"][a]["seconds"] for a in attacks) / 60
        cells = [r["model"], r["arch"], r["method"], r["epochs"], *accuracies, f"{r['train_minutes']:.2f}"]
        cells += [f"{eval_min:.2f}", r["epoch_s"] or "–", r["planned_epoch_s"] or "–"]
        lines.append(f"| {' | '.join(map(str, cells))} |")
    return rows, "\n".join(lines)


def orderings(params: Params, rows: list[dict]) -> tuple[list[dict], str]:
    """Each claimed ordering `better >= worse` per attack: the difference in points with Newcombe's 95 % interval
    paired over the images both saw (acdistill.stats.paired_difference, one seed each), and the verdict: holds
    (interval above 0), fails (below 0) or within noise."""
    by_name = {r["model"]: r for r in rows}
    students = [r["model"] for r in rows[1:] if r["model"] != BASELINE]
    pairs = [(s, BASELINE) for s in students] + HEADLINE
    attacks = params.eval.attacks
    out, lines = [], [f"| ordering | {' | '.join(attacks)} |", "|---|" + "---|" * len(attacks)]
    for better, worse in (p for p in pairs if p[0] in by_name and p[1] in by_name):
        cells = []
        for attack in attacks:
            a, b = by_name[better]["eval"][attack], by_name[worse]["eval"][attack]
            d = paired_difference(*(unpack_bits(r["correct"], r["n"]) for r in (a, b)))
            verdict = "within noise" if d.within_noise else ("holds" if d.low > 0 else "fails")
            out.append(
                {"better": better, "worse": worse, "attack": attack, "difference": round(100 * d.estimate, 2)}
                | {"ci95": d.percent(1), "verdict": verdict}
            )
            cells.append(f"{100 * d.estimate:+.1f} [{d.percent(1)[0]:+.1f}, {d.percent(1)[1]:+.1f}] {verdict}")
        lines.append(f"| {better} ≥ {worse} | {' | '.join(cells)} |")
    return out, "\n".join(lines)


def standard_errors(rows: list[dict], attacks: list[str]) -> str:
    """The standard error of an accuracy near 50 % (the largest) on each number of images evaluated."""
    sizes = sorted({rows[0]["eval"][a]["n"] for a in attacks}, reverse=True)
    return ", ".join(f"{100 * math.sqrt(0.25 / n):.1f} points on {n} images" for n in sizes)


def run(params: Params, args: argparse.Namespace, device: torch.device, data_dir: Path, data: tuple) -> str:
    """The run in --out (the current directory once it exists), as the module docstring lists it. `data`: the
    training set, the test set and the seconds they took to load. Returns the report it wrote to results.md."""
    train, test, load_s = data
    settings = fingerprint(params, budget_minutes=args.budget, device=device.type)
    teacher_done = not args.force and check_teacher(params)
    plan = json.loads(PLAN.read_text()) if PLAN.exists() else None
    if plan is not None and plan["settings"] != settings and not args.force:
        raise AcdistillError(
            f"{args.out / PLAN} was planned for other settings (budget {plan['budget_minutes']:g} min, or other "
            "params); pass --force to plan again, or choose another --out"
        )
    if plan is None or args.force:
        measured = measure(params, train, test, device, teacher_done)
        plan = {"settings": settings, "budget_minutes": args.budget}
        plan |= make_plan(params, args.budget, measured, time.perf_counter() - STARTED, load_s)
        args.out.mkdir(parents=True, exist_ok=True)
        os.chdir(args.out)
        write_json(PLAN, plan)
    else:
        say(f"reusing the plan in {args.out / PLAN}")
    epochs = plan["student_epochs"]
    say(f"plan: teacher {params.teacher.train.epochs} epochs, every student {epochs} (estimates in {PLAN})")
    minutes = {"before training (start, data, measuring)": round((time.perf_counter() - STARTED) / 60, 2)}
    start = time.perf_counter()
    if not teacher_done:
        acdistill.fetch_teacher(
            params, out=TEACHER, data_dir=data_dir, device=device, resume=not args.force, force=args.force
        )
        minutes["teacher training"] = round((time.perf_counter() - start) / 60, 2)
    if teacher_done and TEACHER_EVAL.exists():
        teacher_eval = json.loads(details_path(TEACHER_EVAL).read_text())
    else:
        start = time.perf_counter()
        teacher_eval = acdistill.evaluate_checkpoint(
            params, model=TEACHER, out=TEACHER_EVAL, data_dir=data_dir, device=device, force=True
        )
        minutes["teacher evaluation"] = round((time.perf_counter() - start) / 60, 2)
    start = time.perf_counter()
    students = params.with_overrides({"distill.epochs": epochs})
    ablated = acdistill.ablate(students, teacher=TEACHER, data_dir=data_dir, device=device)
    minutes["students"] = round((time.perf_counter() - start) / 60, 2)
    minutes["this run, in all"] = round((time.perf_counter() - STARTED) / 60, 2)
    rows, text = table(students, plan, teacher_eval, ablated)
    compared, verdicts = orderings(params, rows)
    e = params.eval
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    aa = {a: n for a, n in e.n_per_attack.items() if a in e.attacks}
    report = (
        f"Accuracies in % on the first {e.n or len(test)} {params.data.dataset} test images"
        + (f" ({', '.join(f'{a}: the first {n}' for a, n in aa.items())})" if aa else "")
        + f"; budget {args.budget:g} min on {machine}. Train minutes of a "
        "fine-tuned student include its distillation. Epoch s: measured over the training (images / images per "
        "second); planned: measured before it, monitor included.\n\n"
        + text
        + "\n\n| stage of this run | minutes |\n|---|---|\n"
        + "\n".join(f"| {k} | {v} |" for k, v in minutes.items())
        + "\n\nThe papers' orderings, in points (better − worse) with a 95 % interval paired over the images: one seed "
        f"each, so the interval comes from the images alone (standard error of an accuracy near 50 %: "
        f"{standard_errors(rows, e.attacks)}).\n\n" + verdicts + "\n"
    )
    write_json(
        Path("results.json"),
        {"plan": plan, "rows": rows, "orderings": compared, "minutes": minutes}
        | {"command": sys.argv, "machine": machine_info(), "code": code_info()},
    )
    write_text(Path("results.md"), report)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--out", type=Path, default=Path("gpu-quick"), help="where everything is written (gpu-quick)")
    parser.add_argument("--budget", type=float, default=8.0, help="wall-clock minutes for the whole run (8)")
    parser.add_argument("--data-dir", type=Path, default=None, help="the offline mirror (default: ACDISTILL_DATA_DIR)")
    parser.add_argument("--force", action="store_true", help="retrain the teacher and plan again")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (the test suite's tiny run)")
    parser.add_argument("-S", dest="overrides", action="append", default=[], help="KEY=VALUE over the preset")
    args = parser.parse_args()
    try:
        overrides = dict(map(parse_override, args.overrides))
        if "device" in overrides:
            raise AcdistillError("the device is CUDA, or the CPU with --cpu; -S device is not taken")
        if args.budget <= 0:
            raise AcdistillError(f"--budget {args.budget:g}: give the minutes the run may take, more than 0")
        params = acdistill.load_params(PRESET, overrides | ({"device": "cpu"} if args.cpu else {}))
        device = check_device(params, args.cpu)
        if any(NAME not in point for point in params.ablate.points):
            raise AcdistillError("every ablate point needs a name: the table and the orderings name them")
        given = args.data_dir or os.environ.get(MIRROR_ENV)
        data_dir = Path(given).resolve() if given else None
        args.out = args.out.resolve()
        if args.out.exists() and not args.out.is_dir():
            raise AcdistillError(f"--out {args.out}: a file, not a directory")
        start = time.perf_counter()
        train, test = load_data(params, data_dir)
        load_s = time.perf_counter() - start  # every stage loads the data again: the plan counts it
        if args.out.is_dir():
            os.chdir(args.out)  # a teacher or plan already there is checked against these settings
        text = run(params, args, device, data_dir, (train, test, load_s))
    except AcdistillError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(text)


if __name__ == "__main__":
    main()
