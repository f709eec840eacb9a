"""Check 4: hostile requests. hypothesis (derandomized, bounded in count and time) fuzzes the pack's routes and every
free-text input, in the server by the nodes that read it (the probe) and through POST /prompt, with the server's
file opens audited and canary files outside ComfyUI's folders watched."""

from __future__ import annotations

import glob
import json
import os
import time
import urllib.parse

from devkit import demo_prompts
from devkit.reliability.client import Env, error_of
from devkit.reliability.common import CLIP_LABELS, FIELD_WORDS, PACK_ERRORS, PROBE, has_traceback
from devkit.reliability.prompts import (
    clip_prompt,
    fill_defaults,
    set_seed,
    set_steps,
    terms_prompt,
    to_api,
    train_prompt,
)
from devkit.workflow_run import load
from guidance_core import schedules


def _strategies(env: Env) -> dict:
    """The hypothesis strategies: route bodies, classifier names, near-valid and well-formed text per input."""
    from hypothesis import strategies as st  # hypothesis is a dev dependency: imported when the check runs

    leaf = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(1 << 70), max_value=1 << 70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=40),
        st.sampled_from(
            [
                "0:1, 1:0",
                "0:nan",
                "1e308:1",
                "0:1,0:1,0:1",
                "constant",
                "keyframes",
                "sigma",
                "progress",
                "interval",
                "-1",
                "1e400",
                "",
                "\x00",
                "é" * 30,
            ]
        ),
    )
    value = st.recursive(
        leaf, lambda ch: st.lists(ch, max_size=4) | st.dictionaries(st.text(max_size=8), ch, max_size=4), max_leaves=12
    )
    fields = list(schedules.DEFAULTS) + ["steps", "sigma_min", "sigma_max"]
    key = st.one_of(st.sampled_from(fields), st.text(max_size=12))
    num = st.one_of(st.floats(min_value=-200, max_value=200), st.floats(), st.integers(-10, 10_000))
    typed = {
        "kind": st.sampled_from(list(schedules.KINDS) + ["", "bogus"]),
        "axis": st.sampled_from(["sigma", "progress", "step", ""]),
        "keyframes": st.text(max_size=60),
        "steps": st.one_of(st.integers(-5, 500), num),
    }
    well_typed = st.fixed_dictionaries({}, optional={k: typed.get(k, num) for k in fields})
    body = st.one_of(
        st.dictionaries(key, value, max_size=8),
        st.fixed_dictionaries({}, optional={k: value for k in fields}),
        well_typed,
        value,
    )
    canary = os.path.join(env.outside, "canary.safetensors")
    rel_canary = os.path.relpath(canary, env.classifiers)
    evil = ["../" * k + p for k in range(1, 8) for p in ("etc/passwd", rel_canary.lstrip("./"))] + [
        canary,
        rel_canary,
        "/etc/passwd",
        "~/.bashrc",
        "C:\\Windows\\win.ini",
        "..\\..\\x",
        "%2e%2e/%2e%2e/etc/passwd",
        "rel_fault.safetensors",
        "toy_fashion_classifier.safetensors",
        "rel_fault.safetensors\x00.png",
        "a" * 5000,
        "./rel_fault.safetensors",
        "sub/../../x",
        "file:///etc/passwd",
        "\u202e",
        "rel_fault.safetensors/.",
    ]
    name = st.one_of(
        st.sampled_from(evil), st.text(max_size=60), st.binary(max_size=40).map(lambda b: b.decode("latin-1"))
    )
    # near-valid text per input: the values a user types, with numbers and separators mutated
    word = st.sampled_from(
        [
            "Bag",
            "Coat",
            "Trouser",
            "a bag",
            "a shoe",
            "rel_set",
            "light",
            "dark",
            "middle.0",
            "input.4",
            "output.1",
            "double.7",
            "0",
            "1",
            "0.5",
            "nan",
            "inf",
            "-1e9",
            "1e400",
            "",
        ]
    )
    sep = st.sampled_from([":", ", ", "\n", ",", " ", ";", "/", "..", "*"])
    near = st.lists(st.tuples(word, sep), min_size=1, max_size=8).map(
        lambda xs: "".join(a + b for a, b in xs[:-1]) + xs[-1][0]
    )
    # well-formed values of each input (so that the success paths are fuzzed too)
    fnum = st.one_of(st.floats(-1e3, 1e3), st.floats())
    pairs = lambda key: st.lists(st.tuples(key, fnum), min_size=1, max_size=5).map(  # noqa: E731
        lambda xs: ", ".join(f"{k}:{v}" for k, v in xs)
    )
    toy_labels = st.sampled_from(
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    )
    fields = {
        "target": st.one_of(toy_labels, pairs(toy_labels)),
        "keyframes": pairs(st.floats(0, 1)),
        "clip_labels": st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=4).map("\n".join),
        "clip_target": st.one_of(st.sampled_from(CLIP_LABELS), pairs(st.sampled_from(CLIP_LABELS))),
        "pag_blocks": st.lists(
            st.tuples(st.sampled_from(["input", "middle", "output", "double", "single", "x"]), st.integers(-2, 12)),
            max_size=3,
        ).map(lambda xs: ", ".join(f"{a}.{b}" for a, b in xs)),
        "dataset": st.sampled_from(["rel_set", "rel_set/", " rel_set ", "rel_set/dark", "rel_set_big"]),
        "output_name": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}", fullmatch=True),
    }
    return {
        "body": body,
        "name": name,
        "fields": fields,
        "text": st.one_of(st.sampled_from(evil), st.text(max_size=200), near, near, near),
    }


def _check_answer(status: int, text: str, seconds: float, allowed: set, bound_s: float) -> list[str]:
    problems = []
    if status >= 500:
        problems.append(f"status {status}")
    elif status not in allowed:
        problems.append(f"unexpected status {status}")
    if has_traceback(text):
        problems.append("traceback in the response")
    if seconds > bound_s:
        problems.append(f"answered in {seconds:.1f}s (bound {bound_s}s)")
    if "label-0000000" in text or "CANARY" in text:
        problems.append("content of a file outside ComfyUI's folders")
    return problems


def fuzz_routes(srv, env: Env, n: int, bound_s: float, log) -> dict:
    from hypothesis import HealthCheck, given, settings

    strategies = _strategies(env)
    res = {
        "schedule": {"cases": 0, "max_s": 0.0, "statuses": {}},
        "classifier_labels": {"cases": 0, "max_s": 0.0, "statuses": {}},
    }
    failures = []

    def note(route, status, seconds, problems, case):
        r = res[route]
        r["cases"] += 1
        r["max_s"] = max(r["max_s"], round(seconds, 3))
        r["statuses"][str(status)] = r["statuses"].get(str(status), 0) + 1
        if problems and len(failures) < 50:
            failures.append(f"{route} {case!r:.200}: {problems}")

    cfg = settings(
        max_examples=n, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    t_end = time.time() + max(60.0, n * 0.2)

    @cfg
    @given(strategies["body"])
    def schedule(body):
        if time.time() > t_end:
            return
        data = json.dumps(body, allow_nan=True).encode()
        status, text, sec = srv.request("POST", "/guidance_lab/schedule", data, timeout=bound_s + 30)
        note("schedule", status, sec, _check_answer(status, text, sec, {200, 400}, bound_s), body)

    @cfg
    @given(strategies["name"])
    def labels(name):
        if time.time() > t_end:
            return
        q = urllib.parse.urlencode({"name": name})
        status, text, sec = srv.request("GET", f"/guidance_lab/classifier_labels?{q}", timeout=bound_s + 30)
        problems = _check_answer(status, text, sec, {200, 400, 404, 422}, bound_s)
        if status == 200 and "toy_fashion" not in name and "rel_fault" not in name:
            problems.append("answered 200 for a name outside the listed files")
        note("classifier_labels", status, sec, problems, name)

    schedule()
    t_end = time.time() + max(60.0, n * 0.2)
    labels()
    # raw, non-JSON bodies
    for raw in (b"", b"{", b"\xff\xfe", b"[]", b"null", b"1e999999", b'{"steps": 1e999}', b'"x"' * 1000):
        status, text, sec = srv.request("POST", "/guidance_lab/schedule", raw)
        note("schedule", status, sec, _check_answer(status, text, sec, {200, 400}, bound_s), raw)
    log(f"fuzz routes: {res}")
    return {"routes": res, "failures": failures}


def _once_values(env: Env) -> tuple[dict, dict]:
    """(values run once per input, in the quick form too: escapes from ComfyUI's folders; values that must be refused
    with the pack's own error: a weight beyond float32, weights adding up to inf, a position outside [0, 1], NaN)."""
    outside = os.path.join(env.outside, "canary_set")
    extra = {
        "dataset": [
            outside,
            os.path.relpath(outside, env.input),
            "../" + os.path.basename(env.outside) + "/canary_set",
            "rel_set/../../" + os.path.basename(env.outside) + "/canary_set",
        ],
        "output_name": ["../../evil", "/tmp/evil", "a/b", ".hidden", "x" * 500],
        "pag_blocks": ["middle." + "9" * 5000, "input.٣", "middle.0" + ",middle.0" * 2000],
    }
    refuse = {
        "target": ["Bag:1e39", "Bag:1e308, Bag:1e308", "Bag:-3e16", "Bag:nan"],
        "clip_target": ["a bag:-6.2834864816691596e+88", "a bag:inf"],
        "keyframes": ["0:1e39", "2:1", "0:nan"],
        "dataset": extra["dataset"],
        "output_name": extra["output_name"],
    }
    return extra, refuse


class _CheckBatches:
    """The values of one free-text input, sent to the probe's /check_inputs in batches of `batch` until `t_end` or
    until the server gives no answer; the answers counted in `row` (a row of the report), the problems added to
    `failures` (at most 10 per input, so that one input cannot hide another's) and `refusal_failures` (a value of
    `refuse` accepted)."""

    def __init__(
        self, srv, field: str, batch: int, bound_s: float, t_end: float, refuse, failures: list, refusal_failures: list
    ):
        self.srv, self.field, self.batch, self.bound_s, self.t_end = srv, field, batch, bound_s, t_end
        self.refuse, self.failures, self.refusal_failures = refuse, failures, refusal_failures
        self.row = {
            "cases": 0,
            "distinct": 0,
            "accepted": 0,
            "clear": 0,
            "unclear": 0,
            "unexpected": 0,
            "escape": 0,
            "max_s": 0.0,
            "mean_ms": 0.0,
            "seconds": 0.0,
        }
        self.seen, self.buf, self.stop, self.shown = set(), [], False, 0

    def fail(self, text: str):
        self.shown += 1
        if self.shown <= 10:
            self.failures.append(f"{self.field} {text}")

    def add(self, v: str):
        if not self.stop and time.time() < self.t_end:
            self.buf.append(v)
            if len(self.buf) >= self.batch:
                self.flush()

    def flush(self):
        buf = self.buf
        if not buf:
            return
        body = json.dumps({"input": self.field, "values": buf}).encode()
        try:
            status, text, _sec = self.srv.request(
                "POST", PROBE + "/check_inputs", body, timeout=self.bound_s * len(buf) + 60
            )
        except OSError as e:  # no answer at all (URLError, timeout): the server hangs on this batch
            status, text = None, repr(e)
        if status != 200:
            self.fail(f"batch of {len(buf)} values: no answer ({status}: {text[:300]}); values from {buf[0]!r:.100}")
            self.stop = True
        else:
            for v, answer in zip(buf, json.loads(text)["rows"]):
                self.count(v, *answer)
        buf.clear()

    def count(self, v: str, outcome: str, sec: float, kind: str, msg: str):
        row = self.row
        row["cases"] += 1
        row[outcome] += 1
        row["max_s"] = max(row["max_s"], sec)
        row["mean_ms"] += 1000 * sec
        self.seen.add(v)
        if outcome in ("unclear", "unexpected", "escape"):
            self.fail(f"{v!r:.200}: {outcome}: {kind}: {msg[:300]}")
        if sec > self.bound_s:
            self.fail(f"{v!r:.200}: {sec:.1f}s (bound {self.bound_s}s)")
        if v in self.refuse and outcome == "accepted":
            self.refusal_failures.append(f"{self.field} {v!r:.200}: accepted; expected the pack's error")


def fuzz_inputs_in_server(srv, env: Env, n: int, batch: int, bound_s: float, log) -> dict:
    """Every free-text input of the pack, `n` hypothesis cases each (plus the once-run values), checked in the server
    by the nodes that read it (the probe's /check_inputs, ComfyUI's own node classes; batches of `batch` values per
    request): each value accepted or refused with the pack's error naming the field or the value, never another
    exception, never a dataset or an output file outside ComfyUI's folders, each within bound_s seconds."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    strategies = _strategies(env)
    extra, refuse = _once_values(env)
    out, failures, refusal_failures = {}, [], []
    for field in FIELD_WORDS:
        t0 = time.time()
        t_end = t0 + max(120.0, n * 0.3)  # a time bound per input; the cases run are counted
        checks = _CheckBatches(srv, field, batch, bound_s, t_end, refuse.get(field, ()), failures, refusal_failures)
        for v in dict.fromkeys(extra.get(field, []) + refuse.get(field, [])):
            checks.add(v)

        @settings(
            max_examples=n, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
        )
        @given(st.one_of(strategies["text"], strategies["fields"][field]))
        def fuzz(v):
            checks.add(v)

        fuzz()
        checks.flush()
        row = checks.row
        row["distinct"], row["seconds"] = len(checks.seen), round(time.time() - t0, 1)
        row["mean_ms"] = round(row["mean_ms"] / max(1, row["cases"]), 2)
        out[field] = row
        log(f"check inputs {field}: {row}")
    return {"inputs": out, "failures": failures, "refusal_failures": refusal_failures, "batch": batch}


def _arm_canaries(env: Env) -> dict:
    """Every file outside ComfyUI's folders that the checks name (the canary classifier and dataset) gets an access
    time of 1 s after the epoch: a read by any code (C and Rust readers too, which the audit hook does not see) sets
    it anew (ext4 relatime). A control file shows whether this file system keeps access times."""
    files = [os.path.join(d, f) for d, _, fs in os.walk(env.outside) for f in fs if f not in ("atime_control",)]
    control = os.path.join(env.outside, "atime_control")
    with open(control, "w") as f:
        f.write("control")
    for p in files + [control]:
        os.utime(p, (1, os.stat(p).st_mtime))
    with open(control) as f:
        f.read()
    return {"files": files, "atime_tracked": os.stat(control).st_atime > 1}


def hostile(srv, env: Env, object_info: dict, cfg: dict, log) -> dict:
    """Check 4: the routes, every free-text input in the server (its nodes) and through POST /prompt, with the
    server's file opens audited and the canaries' access times watched."""
    t0 = time.time()
    canaries = _arm_canaries(env)
    status, text, _ = srv.request(
        "POST",
        PROBE + "/audit",
        json.dumps({"on": True, "selftest": os.path.join(env.outside, "atime_control")}).encode(),
    )
    selftest = status == 200 and json.loads(text)["selftest_seen"]
    res = {
        "fuzz_routes": fuzz_routes(srv, env, cfg["fuzz_routes"], cfg["bound_s"], log),
        "fuzz_checks": fuzz_inputs_in_server(srv, env, cfg["fuzz_checks"], cfg["check_batch"], cfg["bound_s"], log),
        "fuzz_inputs": fuzz_string_inputs(srv, env, object_info, cfg["fuzz_inputs"], cfg["bound_s"], log),
    }
    status, text, _ = srv.request("POST", PROBE + "/audit", json.dumps({"on": False}).encode())
    audit = (
        json.loads(text) if status == 200 else {"events": 0, "outside": {f"audit answered {status}": 1}, "roots": []}
    )
    read = [os.path.relpath(p, os.path.dirname(env.outside)) for p in canaries["files"] if os.stat(p).st_atime > 1]
    res["files_read"] = {
        "audited_events": audit["events"],
        "audit_selftest": selftest,
        "outside": audit["outside"],
        "roots": audit["roots"],
        "canaries": len(canaries["files"]),
        "canaries_read": read,
        "atime_tracked": canaries["atime_tracked"],
    }
    res["hostile_seconds"] = round(time.time() - t0, 1)
    log(f"files read: {res['files_read']}")
    return res


def _string_input_prompts(object_info):
    """input name -> (function(value, i) -> API prompt, the pack's error types accepted)."""
    target_p = to_api(load("toy_classifier_guidance_ksampler"), object_info)

    def target(v, i):
        p = set_steps(set_seed(json.loads(json.dumps(target_p)), i), 1)
        for node in p.values():
            if node["class_type"] == "GuidanceLabClassifierGuidance":
                node["inputs"]["target"] = v
            if node["class_type"] == "EmptyLatentImage":
                node["inputs"].update(batch_size=1, width=64, height=64)
        return p

    def keyframes(v, i):
        p = demo_prompts.ksampler_patch(seed=i, prefix="rel/fuzz")
        p["sched"]["inputs"].update(kind="keyframes", keyframes=v)
        p["ks"]["inputs"]["steps"] = 2
        p["latent"]["inputs"]["batch_size"] = 1  # the demo world's latent is 32x32 (256 px)
        return p

    def labels(v, i):
        first = next((ln.strip() for ln in v.split("\n") if ln.strip()), "x")
        p = clip_prompt(i, "detached", steps=1, target=first)  # the target names the first label typed
        p["clip"]["inputs"]["labels"] = v
        p["latent"]["inputs"].update(batch_size=1, width=32, height=32)
        return p

    def clip_target(v, i):
        p = clip_prompt(i, "detached", steps=1, target=v)
        p["latent"]["inputs"].update(batch_size=1, width=32, height=32)
        return p

    def dataset(v, i):
        p = train_prompt(i, steps=0, dataset=v, output_name="rel_fuzz")
        p["save_report"] = {"class_type": "SaveImage", "inputs": {"images": ["train", 1], "filename_prefix": "rel/r"}}
        for k in ("guided", "ks", "decode", "save"):
            del p[k]
        return p

    def output_name(v, i):
        p = dataset("rel_set", i)
        p["train"]["inputs"]["output_name"] = v
        p["train"]["inputs"]["steps"] = 1
        return p

    def blocks(v, i):
        p = terms_prompt(i, steps=1, blocks=v)
        p["latent"]["inputs"].update(batch_size=1, width=32, height=32)
        return p

    out = {
        "target": target,
        "keyframes": keyframes,
        "clip_labels": labels,
        "clip_target": clip_target,
        "dataset": dataset,
        "output_name": output_name,
        "pag_blocks": blocks,
    }
    return {k: (lambda fn: lambda v, i: fill_defaults(fn(v, i), object_info))(fn) for k, fn in out.items()}


def _prompt_answer(srv, field: str, v: str, status: int, body: dict, row: dict, bound_s: float) -> tuple[list, dict]:
    """The answer to a prompt that uses value `v` of `field`, counted in `row`: (problems, the run's error or None).
    A 400 is ComfyUI's validation; a prompt that runs must succeed (reading and writing inside ComfyUI's folders
    only) or stop with the pack's own error, with no traceback."""
    problems, err = [], None
    if status >= 500:
        problems.append(f"status {status}")
    elif status == 400:
        row["refused_400"] += 1
        if has_traceback(json.dumps(body)):
            problems.append("traceback in the response")
    else:
        entry = srv.wait(body["prompt_id"], bound_s + 60)
        err = error_of(entry)
        if err is None:
            row["success"] += 1
            if field == "dataset" and (os.path.isabs(v.strip()) or ".." in v):
                problems.append("a dataset outside ComfyUI's input folder was read")
            if field == "output_name" and ("/" in v or "\\" in v):
                problems.append("a file was written outside models/classifiers")
        elif err.get("exception_type", "").split(".")[-1] in PACK_ERRORS:
            row["pack_error"] += 1
            if has_traceback(str(err.get("exception_message"))):
                problems.append("traceback in the message")
        else:
            problems.append(f"{err.get('exception_type')}: {str(err.get('exception_message'))[:200]}")
    return problems, err


def fuzz_string_inputs(srv, env: Env, object_info: dict, n: int, bound_s: float, log) -> dict:
    """Every free-text input of the pack through POST /prompt: a 200 or a 400 (ComfyUI's validation), never a 500;
    a prompt that runs either succeeds or stops with the pack's own error (a message naming the value), never
    another exception type; no dataset outside ComfyUI's input folder is read; each prompt finishes in bounded time."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    strategies = _strategies(env)
    builders = _string_input_prompts(object_info)
    out, failures, refusal_failures = {}, [], []
    extra, refuse = _once_values(env)
    for field, build in builders.items():
        row = {"cases": 0, "success": 0, "pack_error": 0, "refused_400": 0, "max_s": 0.0}
        out[field] = row
        t_end = time.time() + max(60.0, n * 1.0)  # a time bound per input; the cases run are counted
        counter = [0]

        def one(v, field=field, build=build, row=row):
            counter[0] += 1
            t0 = time.time()
            status, body = srv.post_prompt(build(v, counter[0]))
            problems, err = _prompt_answer(srv, field, v, status, body, row, bound_s)
            sec = time.time() - t0
            row["cases"] += 1
            row["max_s"] = max(row["max_s"], round(sec, 3))
            if sec > bound_s:
                problems.append(f"{sec:.1f}s (bound {bound_s}s)")
            if v in refuse.get(field, ()) and not problems and status == 200 and err is None:
                refusal_failures.append(f"{field} {v!r:.200}: accepted; expected the pack's error")
            if problems and len(failures) < 50:
                failures.append(f"{field} {v!r:.200}: {problems}")

        for v in dict.fromkeys(extra.get(field, []) + refuse.get(field, [])):
            one(v)

        @settings(
            max_examples=n, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
        )
        @given(st.one_of(strategies["text"], strategies["fields"][field]))
        def fuzz(v):
            if time.time() < t_end:
                one(v)

        fuzz()
        log(f"fuzz {field}: {row}")
    stray = [p for p in glob.glob("/tmp/evil*") + glob.glob(os.path.join(env.base, "..", "evil*"))]
    if stray:
        failures.append(f"files written outside: {stray}")
    return {
        "inputs": out,
        "failures": failures,
        "refusal_failures": refusal_failures,
        "refusal_cases": {k: len(v) for k, v in refuse.items()},
    }
