"""``midtrain analyze``: a grid's evaluations (``midtrain eval`` tables) turned into the paper's findings: each
branch against the control from the same parent and step, the timing x share effects with standard errors, and
bridge length against gain with bootstrap intervals; one ``report.md`` with CSV and JSON of every number."""

from __future__ import annotations

import json
from pathlib import Path

from midtrain import reports
from midtrain.errors import ConfigError, DataError, did_you_mean
from midtrain.publish import check_output_dir, write_text_atomic

OUTPUTS = ("report.md", "analysis.json", "branches.csv", "fit.csv", "bridge.csv", "anneals.csv", "soups.csv",
           "decisions.csv", "predictors.csv", "timing_share.png", "bridge_gain.png")


def analyze(
    tables: list[Path],
    out_dir: Path = Path("analysis_out"),
    similarity: Path | None = None,
    sft_for: dict[str, list[str]] | None = None,
    resamples: int = 2000,
    seed: int = 0,
    decon: list[Path] | None = None,
) -> int:
    """Effects of every branch against its control, the timing x share fit, and bridge length against gain.

    Runs and controls are matched by lineage (each run's ``run.json`` and ledger, found from the table's checkpoint
    paths): a control is a branch that continues its parent's mixture; every other branch is compared with the
    control of the same parent and step. A branch without one is listed as such. Anneals (``midtrain anneal``) are
    paired by their records: each candidate with the control of its set and seed, Δ per seed and over seeds. A soup
    (``midtrain soup``) is compared with each of its ingredients and with their controls. Where the tables hold the
    same grid at two or more model sizes (or several seeds of one), the decision accuracy of each metric: the share
    of pairs of grid cells (branch step and data shares) a smaller model orders as the largest does, with a
    bootstrap interval over seeds, and which metric at the smaller size predicts each metric at the largest best.

    Args:
        tables: ``midtrain eval`` tables (``eval.csv``); give the flag several times, or a list.
        out_dir: Where report.md, analysis.json, branches.csv, fit.csv, bridge.csv and the figures go.
        similarity: A ``midtrain similarity`` (``similarity.json``) or ``midtrain recommend`` (``recommend.json``)
            result, for bridge length against gain (pairs named by the branch's domain and the SFT set).
        sft_for: The SFT set(s) each domain's branches are for, e.g. ``{code: [code_sft], math: [math_sft]}``:
            their Δ is reported beside the domain's held-out Δ, and the timing x share fit uses it.
        resamples: Bootstrap resamples of the correlations' intervals.
        seed: Seed of the bootstrap.
        decon: ``midtrain decon`` reports (decon.json): every Δ on a set is checked against the set by name in the
            shards of the branch's target domains (items found: "gain may include leaked items"; shards
            decontaminated against it: clean; else unchecked), from the reports and the decontamination the runs'
            ``run.json`` records.
    """
    from midtrain.analysis.grid import match_controls, unique_rows
    from midtrain.eval.results import is_average, read_rows

    paths = [tables] if isinstance(tables, (str, Path)) else list(tables)
    if not paths:
        raise ConfigError("--tables names no eval table. Give a 'midtrain eval' eval.csv (several: repeat the flag).")
    if resamples < 1:
        raise ConfigError(f"--resamples={resamples} must be at least 1.")
    out_dir = check_output_dir(Path(out_dir), "--out_dir", OUTPUTS)
    tables = [(str(path), read_rows(Path(path), "--tables")) for path in paths]
    averages = sum(is_average(r) for _, table in tables for r in table)
    rows, notes = unique_rows([(source, [r for r in table if not is_average(r)]) for source, table in tables])
    if averages:  # a point beside final at the same step: it would read as a second seed of that step
        notes.append(f"{averages:,} row(s) of runs' weight averages (average/) are not used: the effects compare the "
                     "runs' own checkpoints. Soup the checkpoints ('midtrain soup') to compare an average as a run.")
    branches, soups, shards, points = _branches(rows, paths)
    sft_for = {d: [v] if isinstance(v, str) else list(v) for d, v in (sft_for or {}).items()}
    _check_sft_for(sft_for, rows, branches)
    controls, matched_notes = match_controls(list(branches.values()))
    notes += matched_notes
    decisions = _decisions(rows, points, resamples, seed)
    if not any(b.is_control for b in branches.values()) and not soups and decisions is None:
        listed = ", ".join(f"{b.name} ({', '.join(b.targets) or 'no change'} at step {b.step:,})"
                           for b in branches.values() if b.step is not None) or "no branches"
        raise DataError(f"--tables: no control branch (a branch that continues its parent's mixture) among the runs "
                        f"({listed}), so no effect can be measured. Evaluate the control into the table too.")
    bridges = _bridges(similarity) if similarity is not None else None
    result = _analysis(rows, branches, controls, sft_for, bridges, resamples, seed)
    from midtrain.analysis.leaks import leak_check, read_reports

    decon_reports = read_reports([decon] if isinstance(decon, (str, Path)) else decon)
    for effect in result["effects"]:
        if effect["kind"] == "set":
            read = {p: r for d in effect["targets"] for p, r in shards[effect["branch"]].get(d, {}).items()}
            effect["leak"] = leak_check(effect["name"], read, decon_reports)
    result["anneals"] = anneal_summary(result["effects"], branches)
    result["soups"] = soup_effects(rows, soups, branches, controls)
    result["decisions"] = decisions
    result["notes"] += notes
    result["tables"] = [str(p) for p in paths]
    figures = _figures(result, out_dir)
    effect_columns = ["branch", "control", "step", "share", "measure", "kind", "name", "tuned", "delta",
                      "half_width", "at_step", "area", "mean_gap", "seeds", "leak_check"]
    fit_rows = [[f["domain"], f["on"], t["term"], t["estimate"], t["se"], t["t"], f["points"], f["residual_df"]]
                for f in result["fits"] for t in f["terms"]]
    reports.write_json(out_dir / "analysis.json", result)
    reports.write_csv(out_dir / "branches.csv", effect_columns, _effect_rows(result))
    reports.write_csv(out_dir / "fit.csv", ["domain", "on", "term", "estimate", "se", "t", "points", "residual_df"],
                      fit_rows)
    if result["bridge"] is not None:
        reports.write_csv(out_dir / "bridge.csv", ["branch", "domain", "sft", "bridge_length", "gain"],
                          [[p["branch"], p["domain"], p["sft"], p["bridge_length"], p["gain"]]
                           for p in result["bridge"]["pairs"]])
    if result["anneals"]:
        reports.write_csv(out_dir / "anneals.csv", ANNEAL_COLUMNS, [[a[c] if not isinstance(a[c], list) else
                                                                    ";".join(map(str, a[c])) for c in ANNEAL_COLUMNS]
                                                                   for a in result["anneals"]])
    if result["soups"]:
        reports.write_csv(out_dir / "soups.csv", SOUP_COLUMNS, [[e[c] for c in SOUP_COLUMNS] for e in result["soups"]])
    if decisions is not None:
        reports.write_csv(out_dir / "decisions.csv", DECISION_COLUMNS, [[r[c] for c in DECISION_COLUMNS]
                                                                      for r in decisions["same_metric"]])
        reports.write_csv(out_dir / "predictors.csv", ["target", "small", "large", "proxy", "accuracy", "pairs"],
                          [[p["target"], p["small"], p["large"], q["proxy"], q["accuracy"], q["pairs"]]
                           for p in decisions["predictors"] for q in p["proxies"]])
    report = render_report(result, figures)
    write_text_atomic(out_dir / "report.md", report)
    print(report)
    print(f"\nWrote {out_dir / 'report.md'}, analysis.json and CSVs in {out_dir}")
    return 0


DECISION_COLUMNS = ["across", "small", "large", "kind", "name", "metric", "pairs", "accuracy", "low", "high"]


def _decisions(rows: list[dict], points: dict, resamples: int, seed: int) -> dict | None:
    """Decision accuracy where the tables allow it: two model sizes or more, or one with replicated grid cells."""
    from midtrain.analysis.decisions import decision_accuracy, final_values

    replicated = len({(p.model, p.cell) for p in points.values()}) < len(points)
    models = {p.model: p.parameters for p in points.values()}
    if len(models) < 2 and not replicated:
        return None
    result = decision_accuracy(final_values(rows, points), models, resamples, seed)
    return result if result["same_metric"] else None


def _run_point(name: str, run: dict, latest, ledger: dict, branch) -> object:
    """The run's model (from its latest checkpoint's model_config.yaml), grid cell and seed (its config's)."""
    import yaml

    from midtrain.analysis.decisions import RunPoint, cell_of, estimated_parameters
    from midtrain.analysis.grid import domain_shares

    try:
        config = yaml.safe_load((latest.path / "model_config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    config = config if isinstance(config, dict) else {}
    shares = branch.shares
    if branch.step is None:  # a trunk: its recipe is all it read
        domain_of = {i: info["domain"] for i, info in ledger["shards"].items()}
        shares = domain_shares({domain_of[i]: info.get("tokens", 0) for i, info in ledger["shards"].items()})
    invocations = run.get("invocations") or [{}]
    seed = (invocations[-1].get("config") or {}).get("seed", name)
    model = f"{config.get('name') or 'model'} ({config.get('n_layer')}x{config.get('n_embd')})"
    return RunPoint(model, estimated_parameters(config), cell_of(branch.step, shares), seed)


def _branches(rows: list[dict], paths: list) -> tuple[dict, dict, dict, dict]:
    """Every run of the tables with its place in the grid, from its folder (the parent of its checkpoints); the
    soups among them (name -> their ``run.json``'s ``soup`` record), which have no lineage of their own; each run's
    shards by domain (resolved path -> the decontamination its run.json records); and each run's model, grid cell
    and seed (decision accuracy)."""
    from midtrain.analysis.grid import branch_of, two_folders_error
    from midtrain.train import checkpoint_files as files

    folders: dict[str, Path] = {}
    for row in rows:
        if row.get("base_run") is None and row.get("checkpoint"):
            folder = folders.setdefault(row["run"], Path(row["checkpoint"]).parent)
            if folder != Path(row["checkpoint"]).parent:
                raise DataError(two_folders_error(row["run"], str(folder), str(Path(row["checkpoint"]).parent)))
    if not folders:
        raise DataError(f"--tables {', '.join(map(str, paths))}: no rows of a run's own checkpoints, so no run's "
                        "lineage can be read.")
    branches, soups, shards, points = {}, {}, {}, {}
    for name, folder in sorted(folders.items()):
        run, latest = _read_json(folder / "run.json"), files.latest_checkpoint(folder)
        if run is not None and isinstance(run.get("soup"), dict):
            by_folder = {str(f.resolve()): n for n, f in folders.items()}
            soups[name] = {**run["soup"], "runs": [by_folder.get(str(Path(i["checkpoint"]).parent.resolve()))
                                                   for i in run["soup"].get("ingredients", [])]}
            continue
        if run is None or latest is None:
            raise DataError(f"run {name!r}: its folder {folder} (from the table's checkpoint paths) holds no "
                            f"{'run.json' if run is None else 'checkpoint'}, so its lineage cannot be read. Restore "
                            "it, or evaluate the run where it lies now.")
        ledger = _read_json(latest.path / "ledger.json")
        if ledger is None:
            raise DataError(f"run {name!r}: {latest.path} holds no ledger.json (a checkpoint midtrain did not write?).")
        lineage = run.get("lineage") or []
        parent_ledger = _read_json(Path(lineage[-1]["checkpoint"]) / "ledger.json") if lineage else None
        branch = branch_of(name, run, ledger, parent_ledger)
        if branch.parent_dir is not None and not Path(branch.parent_dir).is_dir():
            raise DataError(f"branch {name!r}: its parent run {branch.parent_dir} (its run.json's lineage) is missing, "
                            "so its pretraining data and its control cannot be told. Restore the parent's folder.")
        branches[name] = branch
        shards[name] = _shards_by_domain(run, ledger)
        points[name] = _run_point(name, run, latest, ledger, branch)
    return branches, soups, shards, points


def _shards_by_domain(run: dict, ledger: dict) -> dict[str, dict[str, dict | None]]:
    """domain -> {the shard's resolved path: the decontamination run.json records of it}, for the shards the run
    read; paths from the data root its last invocation's config names (empty where that root is gone)."""
    from midtrain.data.discovery import discover_shards, resolve_data_roots
    from midtrain.data.domains import DomainRegistry

    invocations = run.get("invocations") or [{}]
    args = (((invocations[-1].get("config") or {}).get("data") or {}).get("init_args")) or {}
    try:
        root, _ = resolve_data_roots(Path(args["data_path"]), args.get("val_data_path"))
        found = {s.id: s for s in discover_shards(root, DomainRegistry.with_extra(args.get("domain_prefixes") or {}))}
    except (KeyError, TypeError, OSError, ConfigError, DataError):
        return {}
    records = run.get("decontamination") or {}
    out: dict[str, dict[str, dict | None]] = {}
    for shard_id, info in ledger["shards"].items():
        if info.get("tokens") and shard_id in found:
            out.setdefault(info["domain"], {})[str(found[shard_id].path.resolve())] = records.get(shard_id)
    return out


ANNEAL_COLUMNS = ["candidate", "group", "share", "measure", "kind", "name", "tuned", "seeds", "deltas", "mean_delta",
                  "half_width"]
SOUP_COLUMNS = ["soup", "against", "role", "kind", "name", "tuned", "delta", "at_step"]


def anneal_summary(effects: list[dict], branches: dict) -> list[dict]:
    """Each anneal candidate's Δ against its control per seed, and their mean over seeds with a t interval (the
    seeds' spread): the candidate's verdict, measure by measure."""
    from midtrain.analysis.grid import mean_interval

    groups: dict[tuple, list[tuple]] = {}
    for e in effects:
        record = branches[e["branch"]].anneal
        if record is None:
            continue
        key = (record.get("candidate"), record.get("group"), record.get("share"), e["measure"], e["kind"], e["name"],
               e["tuned"])
        groups.setdefault(key, []).append((record.get("seed"), e["delta"]))
    out = []
    for (candidate, group, share, measure, kind, name, tuned), found in sorted(groups.items(), key=str):
        found.sort(key=lambda f: (f[0] is None, f[0] or 0))
        mean, half_width = mean_interval([d for _, d in found])
        out.append({"candidate": candidate, "group": group, "share": share, "measure": measure, "kind": kind,
                    "name": name, "tuned": tuned, "seeds": [f[0] for f in found], "deltas": [f[1] for f in found],
                    "mean_delta": mean, "half_width": half_width})
    return out


def soup_effects(rows: list[dict], soups: dict, branches: dict, controls: dict) -> list[dict]:
    """Each soup against each of its ingredients and against their controls, on every held-out domain and set the
    soup was scored on (Δ = soup − the other, at the latest step both have)."""
    from midtrain.analysis.grid import compare, loss_samples, rows_by_run

    index = rows_by_run(rows)
    out = []
    for soup, record in sorted(soups.items()):
        others = [(name, "ingredient") for name in record["runs"] if name is not None]
        for name in record["runs"]:
            control = controls.get(name) if name in branches else None
            if control is not None and (control.name, "control") not in others:
                others.append((control.name, "control"))
        measures = sorted({(r["kind"], r["name"]) for r in rows if r["metric"] == "loss"
                           and (r.get("base_run") or r["run"]) == soup and r["kind"] in ("heldout", "set")})
        for other, role in others:
            for kind, item in measures:
                ours, tuned = loss_samples(index.get((item, soup), []), soup, kind, item)
                theirs, _ = loss_samples(index.get((item, other), []), other, kind, item)
                compared = compare(ours, theirs, 0)
                if compared is not None:
                    out.append({"soup": soup, "against": other, "role": role, "kind": kind, "name": item,
                                "tuned": tuned, "delta": compared["delta"], "at_step": compared["at_step"]})
    return out


def _check_sft_for(sft_for: dict[str, list[str]], rows: list[dict], branches: dict) -> None:
    """Every domain ``--sft_for`` names is one a branch reads or the tables score, every set one the tables score."""
    sets = sorted({r["name"] for r in rows if r["kind"] == "set"})
    domains = sorted({r["name"] for r in rows if r["kind"] == "heldout"}
                     | {d for b in branches.values() for d in (*b.shares, *b.parent_shares)})
    for domain, names in sft_for.items():
        if domain not in domains:
            raise ConfigError(f"--sft_for names domain {domain!r}, which no run of the tables reads or is scored on "
                              f"(domains: {', '.join(domains) or 'none'}).{did_you_mean(domain, domains)}")
        for name in names:
            if name not in sets:
                raise ConfigError(f"--sft_for.{domain} names set {name!r}, which the tables do not score (sets: "
                                  f"{', '.join(sets) or 'none: evaluate with --sets'}).{did_you_mean(name, sets)}")


def _bridges(path: Path) -> dict[tuple[str, str], float]:
    """(mix or candidate name, SFT set) -> bridge length, from a similarity.json or a recommend.json."""
    report = _read_json(Path(path))
    if report is None:
        raise DataError(f"--similarity={str(path)!r} cannot be read as JSON. Point it at similarity.json or "
                        "recommend.json.")
    if "bridge" in report:
        return {(p["mix"], p["sft"]): p["bridge_length"] for p in report["bridge"]["pairs"]}
    if "targets" in report:
        out = {}
        for target, ranking in report["targets"].items():
            for e in ranking:
                out[(e["candidate"], target)] = e["bridge_length"]
                out.setdefault((e.get("kind", e["candidate"]), target), e["bridge_length"])
        return out
    raise DataError(f"--similarity={str(path)!r} holds no bridge lengths: run 'midtrain similarity' with --pretrain, "
                    "--mixes and --sft, or 'midtrain recommend'.")


def _analysis(rows, branches, controls, sft_for, bridges, resamples, seed) -> dict:
    from midtrain.analysis.grid import bootstrap_interval, compare, least_squares, loss_samples, rows_by_run
    from midtrain.analysis.similarity import pearson, spearman

    sets = sorted({r["name"] for r in rows if r["kind"] == "set"})
    index = rows_by_run(rows)
    effects, unmatched, notes = [], [], []
    for name, control in sorted(controls.items()):
        b = branches[name]
        if control is None:
            unmatched.append({"branch": name, "step": b.step, "targets": list(b.targets)})
            continue
        measures = [("target", "heldout", d) for d in b.targets]
        measures += [("target", "set", s) for d in b.targets for s in sft_for.get(d, [])]
        measures += [("forgetting", "heldout", d) for d in b.pretraining_domains if d not in b.targets]
        measures += [("set", "set", s) for s in sets if not any(s in sft_for.get(d, []) for d in b.targets)]
        for role, kind, item in measures:
            ours, tuned = loss_samples(index.get((item, name), []), name, kind, item)
            theirs, _ = loss_samples(index.get((item, control.name), []), control.name, kind, item)
            compared = compare(ours, theirs, b.step)
            if compared is not None:
                effects.append({"branch": name, "control": control.name, "step": b.step, "targets": list(b.targets),
                                "share": {d: b.shares[d] for d in b.targets}, "measure": role, "kind": kind,
                                "name": item, "tuned": tuned, **compared})
    if any(e["seeds"][0] < 2 or e["seeds"][1] < 2 for e in effects):
        notes.append("some Δ come from one seed (no fine-tuned rows with several seeds for those checkpoints): no "
                     "interval can be given for them (± empty).")
    fits = []
    for domain in sorted({e["targets"][0] for e in effects if len(e["targets"]) == 1}):
        on = next((s for s in sft_for.get(domain, []) if any(e["name"] == s for e in effects)), None)
        chosen = [e for e in effects if e["targets"] == [domain] and e["measure"] == "target"
                  and (e["name"] == on if on else (e["kind"] == "heldout" and e["name"] == domain))]
        points = [(e["step"], e["share"][domain], e["delta"]) for e in chosen]
        if len(points) >= 2:
            fits.append({"domain": domain, "on": on or f"held-out {domain}",
                         "grid": [{"step": p[0], "share": p[1], "delta": p[2], "branch": e["branch"]}
                                  for p, e in zip(points, chosen, strict=True)], **least_squares(points)})
        else:
            notes.append(f"{domain}: {len(points)} branch(es) with a control: no timing x share fit.")
    bridge = None
    if bridges is not None:
        pairs = []
        for e in effects:
            if len(e["targets"]) == 1 and e["kind"] == "set" and (e["targets"][0], e["name"]) in bridges:
                pairs.append({"branch": e["branch"], "domain": e["targets"][0], "sft": e["name"],
                              "bridge_length": bridges[(e["targets"][0], e["name"])], "gain": -e["delta"]})
        x, y = [p["bridge_length"] for p in pairs], [p["gain"] for p in pairs]
        bridge = {"pairs": pairs, "orders": _orders(pairs)}
        for label, statistic in (("pearson", pearson), ("spearman", spearman)):
            low, high, used = bootstrap_interval(x, y, statistic, resamples, seed)
            bridge[label] = {"value": statistic(x, y), "low": low, "high": high, "resamples_used": used,
                             "resamples": resamples}
    return {"branches": {n: {"parent": b.parent_dir, "step": b.step, "targets": list(b.targets),
                             "shares": b.shares, "parent_shares": b.parent_shares, "control": b.is_control}
                         for n, b in branches.items()},
            "effects": effects, "without_control": unmatched, "fits": fits, "bridge": bridge, "notes": notes}


def _orders(pairs: list[dict]) -> dict:
    """Per SFT set: the domains by bridge length (shortest first: the order ``recommend`` gives) beside the same
    domains by their branches' mean gain (largest first), and whether the two orders match."""
    out = {}
    for sft in sorted({p["sft"] for p in pairs}):
        mine = [p for p in pairs if p["sft"] == sft]
        gains: dict[str, list[float]] = {}
        lengths = {}
        for p in mine:
            gains.setdefault(p["domain"], []).append(p["gain"])
            lengths[p["domain"]] = p["bridge_length"]
        by_bridge = sorted(lengths, key=lambda d: (lengths[d], d))
        by_gain = sorted(gains, key=lambda d: (-sum(gains[d]) / len(gains[d]), d))
        out[sft] = {"by_bridge": by_bridge, "by_gain": by_gain, "match": by_bridge == by_gain,
                    "mean_gain": {d: sum(v) / len(v) for d, v in gains.items()}}
    return out


def _effect_rows(result: dict) -> list[list]:
    return [[e["branch"], e["control"], e["step"], ";".join(f"{d}:{s:.4f}" for d, s in e["share"].items()),
             e["measure"], e["kind"], e["name"], e["tuned"], e["delta"], e["half_width"], e["at_step"],
             e["area"], e["mean_gap"], f"{e['seeds'][0]}/{e['seeds'][1]}", (e.get("leak") or {}).get("note", "")]
            for e in result["effects"]]


def render_report(result: dict, figures: list[str]) -> str:
    def num(v, fmt="+.4f"):
        return "-" if v is None else format(v, fmt)

    effects = [[e["branch"], e["control"], f"{e['step']:,}",
                ", ".join(f"{d} {s:.0%}" for d, s in e["share"].items()) or "-", e["measure"],
                f"{e['name']}{' (fine-tuned)' if e['tuned'] else ''}", num(e["delta"]), num(e["half_width"], ".4f"),
                f"{e['at_step']:,}", num(e["mean_gap"]), (e.get("leak") or {}).get("note", "")]
               for e in result["effects"]]
    effects += [[u["branch"], f"**no control at step {u['step']:,}**", f"{u['step']:,}", ", ".join(u["targets"]),
                 *["-"] * 7] for u in result["without_control"]]
    lines = ["# Analysis of the grid", "",
             f"Tables: {', '.join(result['tables'])}. Δ = branch − control in loss (negative: the branch is better), "
             "at the latest step both have; *area* is the area between the curves from the branch point (loss × "
             "steps), *mean gap* that area per step. ± is the 95 % interval from the seeds' spread.", "",
             "## Branches against their controls", "",
             reports.markdown_table(["branch", "control", "step", "share", "measure", "set", "Δ", "±", "at step",
                                     "mean gap", "leak check"], effects, [False, False, True, False, False, False,
                                                                          True, True, True, True, False]),
             "", "## Timing × share", ""]
    if not result["fits"]:
        lines.append("Too few branches per domain for a fit (two or more with a control are needed).")
    for fit in result["fits"]:
        lines += [f"**{fit['domain']}** (Δ on {fit['on']}; {fit['points']} branches, {fit['residual_df']} residual "
                  f"degrees of freedom; predictors centred at step {fit['centred_at']['step']:,.0f}, share "
                  f"{fit['centred_at']['share']:.1%}):", "",
                  reports.markdown_table(["term", "estimate", "SE", "t"],
                                         [[t["term"], num(t["estimate"]), num(t["se"], ".4f"), num(t["t"], "+.2f")]
                                          for t in fit["terms"]], [False, True, True, True])]
        if fit["residual_df"] == 0:
            lines.append("\nThe fit is exact (as many terms as branches): no standard error can be given.")
        lines += ["", reports.markdown_table(["step", "share", "Δ", "branch"],
                                             [[f"{g['step']:,}", f"{g['share']:.1%}", f"{g['delta']:+.4f}",
                                               g["branch"]] for g in fit["grid"]], [True, True, True, False]), ""]
    if result["bridge"] is not None:
        b = result["bridge"]
        lines += ["## Bridge length against gain", "",
                  reports.markdown_table(["branch", "domain", "SFT set", "bridge length", "gain"],
                                         [[p["branch"], p["domain"], p["sft"], f"{p['bridge_length']:.4f}",
                                           f"{p['gain']:+.4f}"] for p in b["pairs"]],
                                         [False, False, False, True, True])]
        for sft, order in b["orders"].items():
            lines.append(f"\n{sft}: by bridge length {' > '.join(order['by_bridge'])}; by measured gain "
                         f"{' > '.join(order['by_gain'])}: the orders {'match' if order['match'] else 'differ'}.")
        for label in ("pearson", "spearman"):
            c = b[label]
            interval = ("no interval (fewer than three pairs, or constant)" if c["low"] is None else
                        f"95 % bootstrap interval [{c['low']:+.3f}, {c['high']:+.3f}] ({c['resamples_used']:,} of "
                        f"{c['resamples']:,} resamples defined)")
            lines.append(f"\n{label.capitalize()}: {num(c['value'], '+.3f')}, {interval}.")
        lines.append("")
    if result.get("anneals"):
        lines += ["## Anneals: each candidate against its control", "",
                  "Each candidate's anneal against the control of its set and seed (paired by their run.json "
                  "records); Δ per seed, then their mean with the 95 % interval from the seeds' spread.", "",
                  reports.markdown_table(
                      ["candidate", "share", "measure", "set", "Δ per seed", "mean Δ", "±"],
                      [[a["candidate"], "-" if a["share"] is None else f"{a['share']:.0%}", a["measure"],
                        f"{a['name']}{' (fine-tuned)' if a['tuned'] else ''}",
                        ", ".join(f"{'-' if s is None else s}: {d:+.4f}" for s, d in zip(a["seeds"], a["deltas"],
                                                                                           strict=True)),
                        num(a["mean_delta"]), num(a["half_width"], ".4f")] for a in result["anneals"]],
                      [False, True, False, False, False, True, True]), ""]
    if result.get("soups"):
        lines += ["## Soups against their ingredients and controls", "",
                  "Δ = soup − the other run (negative: the soup is better).", "",
                  reports.markdown_table(["soup", "against", "role", "set", "Δ", "at step"],
                                         [[e["soup"], e["against"], e["role"],
                                           f"{e['name']}{' (fine-tuned)' if e['tuned'] else ''}", num(e["delta"]),
                                           f"{e['at_step']:,}"] for e in result["soups"]],
                                         [False, False, False, False, True, True]), ""]
    if result.get("decisions"):
        lines += render_decisions(result["decisions"])
    if figures:
        lines += ["## Figures", "", *(f"![{f}]({f})" for f in figures), ""]
    if result["notes"]:
        lines += ["## Notes", "", *(f"- {n}" for n in result["notes"]), ""]
    return "\n".join(lines)


def render_decisions(decisions: dict) -> list[str]:
    """The decision-accuracy section: per metric, how often the smaller model (or one seed) orders the grid's cells
    as the largest (or another seed) does; and the best predictor of each metric at the largest size."""
    def interval(r: dict) -> str:
        return "-" if r["low"] is None else f"[{r['low']:.2f}, {r['high']:.2f}]"

    across = decisions["across"]
    what = (f"the largest model, {decisions['models'][-1]}" if across == "size" else "another seed of the same model")
    lines = ["## Decision accuracy", "",
             f"Pairs of grid cells (branch step and data shares) ordered by each metric as {what} orders them "
             "(ties at the reference left out, at the smaller size counted half); the interval resamples each "
             "cell's seeds (none with one seed).", "",
             reports.markdown_table(["model", "against", "metric", "pairs", "accuracy", "95 % interval"],
                                    [[r["small"], r["large"] if across == "size" else "other seeds",
                                      f"{r['kind']} {r['name']} {r['metric']}", str(r["pairs"]), f"{r['accuracy']:.2f}",
                                      interval(r)] for r in decisions["same_metric"]],
                                    [False, False, False, True, True, False]), ""]
    best = decisions["best_metric"]
    if best is not None:
        lines += [f"Best: {best['kind']} {best['name']} {best['metric']} decides {best['accuracy']:.0%} of pairs "
                  f"alike at {best['small']}.", ""]
    if decisions["predictors"]:
        lines += ["Best predictor at the smaller model of each metric at the largest:", "",
                  reports.markdown_table(["target (largest)", "model", "best predictor", "accuracy"],
                                         [[p["target"], p["small"], p["best"], f"{p['best_accuracy']:.2f}"]
                                          for p in decisions["predictors"]], [False, False, False, True]), ""]
    return lines


def _figures(result: dict, out_dir: Path) -> list[str]:
    """The timing x share heatmap of each fitted domain (centred at no effect), and bridge length against gain."""
    import numpy as np

    written = []
    if result["fits"]:
        fig, axes = reports.figure(1, len(result["fits"]), (4.4 * len(result["fits"]), 3.6))
        for ax, fit in zip(axes[0], result["fits"], strict=True):
            steps = sorted({g["step"] for g in fit["grid"]})
            shares = sorted({g["share"] for g in fit["grid"]})
            grid = np.full((len(shares), len(steps)), np.nan)
            for g in fit["grid"]:
                grid[shares.index(g["share"]), steps.index(g["step"])] = g["delta"]
            limit = max(1e-9, float(np.nanmax(np.abs(grid))))
            # blue where the branch beats the control (Δ < 0), red where it is worse, white at no effect
            reports.heatmap(ax, grid, [f"{s:,}" for s in steps], [f"{s:.0%}" for s in shares],
                            "Δ loss (branch − control)", "RdBu_r", -limit, limit, "{:+.3f}",
                            light_when=lambda v, limit=limit: abs(v) > limit / 2, origin="lower")
            ax.set_xlabel("branch step")
            ax.set_ylabel("share")
            ax.set_title(f"{fit['domain']}: Δ on {fit['on']}", fontsize=9)
        written.append(reports.save_figure(fig, out_dir / "timing_share.png").name)
    if result["bridge"] is not None and result["bridge"]["pairs"]:
        fig, axes = reports.figure(size=(4.6, 3.8))
        ax = axes[0, 0]
        for p in result["bridge"]["pairs"]:
            ax.scatter([p["bridge_length"]], [p["gain"]], color="tab:blue")
            ax.annotate(f"{p['branch']}→{p['sft']}", (p["bridge_length"], p["gain"]), fontsize=7,
                        textcoords="offset points", xytext=(4, 3))
        ax.set_xlabel("bridge length")
        ax.set_ylabel("gain over the control")
        ax.grid(alpha=0.3)
        written.append(reports.save_figure(fig, out_dir / "bridge_gain.png").name)
    return written


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
