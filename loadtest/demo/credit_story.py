#!/usr/bin/env python3
"""The credit-scoring story, driven against a running gateway (loadtest/demo/run.sh starts one).

Python standard library only. What it does:

1. Applicants. Draws random applicants (8 features in [-2, 2]) and asks the stable model, pinned
   (`x-model-version: 1`), how it scores them. Its decision is the ground truth of this story (a
   stand-in for real repayment outcomes), flipped at a small noise rate when labels are sent.
   Regular users are clear-cut cases (v1's approval probability < 0.12 or > 0.6); the
   campaign users who arrive later are borderline ones (0.2 to 0.45: v1 declines them).
2. Healthy phase. Sticky users (x-user-id) send predictions from concurrent threads at a steady
   rate; every prediction gets its label a few seconds later (POST /v2/feedback). v2 agrees with
   v1 on clear-cut applicants, so its false-positive rate stays near the noise and the rollout
   walks 5% -> 25% -> 50%.
3. The spike. When the candidate reaches --spike-at-weight (50%), after a random part of one
   analysis interval, a campaign brings borderline applicants (--campaign-share of the traffic).
   v2, which approves far more often, approves them; their labels (declines) arrive a few seconds
   later as false positives.
4. The gateway judges every step_interval_s and rolls v2 back by itself. The script keeps going a
   little to show sticky v2 users are back on v1, then prints what the operator sees: the
   verdict timeline, GET /admin/rollouts, the gateway's rollout log lines, and the key metrics.

Exit status: 0 when the candidate was rolled back within --max-intervals (2) analyses of the
spike, 2 when it was rolled back later, 1 when it was not rolled back (or was promoted), 3 when
the gateway could not be used.
"""

import argparse
import heapq
import http.client
import json
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

MODEL = "credit-scoring"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:58180", help="data plane")
    p.add_argument("--admin", default="http://127.0.0.1:58190", help="admin plane")
    p.add_argument("--log", help="the gateway's stderr log file, for its rollout lines")
    p.add_argument("--token", default="", help="admin bearer token, when the gateway has one")
    p.add_argument("--users", type=int, default=3000, help="regular (clear-cut) users")
    p.add_argument("--approve-share", type=float, default=0.5, help="regular users v1 approves")
    p.add_argument("--campaign-users", type=int, default=1500, help="borderline users of the campaign")
    p.add_argument("--threads", type=int, default=8, help="concurrent prediction clients")
    p.add_argument("--label-threads", type=int, default=3, help="concurrent feedback senders")
    p.add_argument("--rate", type=float, default=300.0, help="predictions per second, all threads")
    p.add_argument("--label-delay", type=float, nargs=2, default=[1.5, 3.5], metavar=("MIN", "MAX"),
                   help="seconds between a prediction and its label (uniform)")
    p.add_argument("--noise", type=float, default=0.02, help="share of labels flipped")
    p.add_argument("--spike-at-weight", type=float, default=50.0,
                   help="the campaign starts once the candidate has this weight")
    p.add_argument("--spike-offset", type=float, default=None,
                   help="seconds after reaching that weight (default: random within one interval)")
    p.add_argument("--healthy-max-s", type=float, default=45.0,
                   help="start the campaign after this long even if the weight was not reached")
    p.add_argument("--campaign-share", type=float, default=0.4, help="share of requests from campaign users")
    p.add_argument("--after-s", type=float, default=3.0, help="keep driving this long after the rollback")
    p.add_argument("--max-s", type=float, default=120.0, help="give up after this long (bounded run)")
    p.add_argument("--max-intervals", type=int, default=2, help="analyses after the spike allowed")
    p.add_argument("--seed", type=int, default=7)
    return p.parse_args()


# ---------------------------------------------------------------------------------------------- HTTP

class Client:
    """One keep-alive HTTP/1.1 connection (http.client), reopened after an error."""

    def __init__(self, base, timeout=10.0):
        u = urllib.parse.urlsplit(base)
        self.host, self.port, self.timeout = u.hostname, u.port or 80, timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"content-type": "application/json"} if data is not None else {}
        hdrs.update(headers or {})
        for attempt in (1, 2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self.conn.request(method, path, body=data, headers=hdrs)
                r = self.conn.getresponse()
                payload = r.read()
                return r.status, dict((k.lower(), v) for k, v in r.getheaders()), payload
            except (OSError, http.client.HTTPException):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise RuntimeError("unreachable")


def get(base, path, token="", timeout=5.0):
    req = urllib.request.Request(base + path)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode()


def features_body(rows, request_id=None):
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [len(rows), 8],
                        "data": [x for row in rows for x in row]}]}
    if request_id is not None:
        body["id"] = request_id
    return body


def output(reply, name):
    for o in reply["outputs"]:
        if o["name"] == name:
            return o["data"]
    raise KeyError(name)


# ------------------------------------------------------------------------------------------ applicants

def draw_applicants(url, rng, users, campaign_users, approve_share):
    """Returns (regular, campaign, drawn): lists of (features, v1_decision), classified by v1 pinned.

    Regular users are clear-cut: v1 approves them with probability > 0.6 (approve_share of them)
    or < 0.12 (the rest). Campaign users are borderline: 0.2 < p < 0.45, declined by v1."""
    client = Client(url)
    want_approve = round(users * approve_share)
    approve, decline, campaign, drawn = [], [], [], 0
    while (len(approve) < want_approve or len(decline) < users - want_approve
           or len(campaign) < campaign_users) and drawn < 500_000:
        rows = [[round(rng.uniform(-2.0, 2.0), 4) for _ in range(8)] for _ in range(256)]
        drawn += len(rows)
        status, _, payload = client.request(
            "POST", f"/v2/models/{MODEL}/infer", features_body(rows), {"x-model-version": "1"})
        if status != 200:
            raise RuntimeError(f"pinned v1 answered {status}: {payload[:200]!r}")
        probs = output(json.loads(payload), "probabilities")
        for i, row in enumerate(rows):
            p1 = probs[2 * i + 1]
            if p1 > 0.6 and len(approve) < want_approve:
                approve.append((row, 1))
            elif p1 < 0.12 and len(decline) < users - want_approve:
                decline.append((row, 0))
            elif 0.2 < p1 < 0.45 and len(campaign) < campaign_users:
                campaign.append((row, 0))
    regular = approve + decline
    rng.shuffle(regular)
    return regular, campaign, drawn


# -------------------------------------------------------------------------------------------- the run

class Story:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.campaign_on = threading.Event()
        self.t0 = time.monotonic()
        self.t_spike = None
        self.t_first_campaign_label = None
        self.t_rollback = None
        self.t_end = None  # when the rollout reached rolled_back, promoted or aborted
        # Predictions by version: [requests, approvals]; after the rollback, answers by version.
        self.by_version = {}
        self.after_rollback = {}
        self.errors = {}
        self.sent = 0
        # Labels due: heap of (due, seq, id, label, campaign).
        self.due = []
        self.due_cv = threading.Condition(self.lock)
        self.seq = 0
        self.label_results = {}
        self.label_errors = {}
        self.verdicts = []

    def now(self):
        return time.monotonic() - self.t0

    # -- predictions
    def driver(self, k, regular, campaign):
        a = self.args
        rng = random.Random(a.seed * 1000 + k)
        client = Client(a.url)
        period = a.threads / a.rate
        next_at = time.monotonic() + rng.uniform(0, period)
        n = 0
        while not self.stop.is_set():
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            next_at += period
            is_campaign = self.campaign_on.is_set() and rng.random() < a.campaign_share
            if is_campaign:
                u = rng.randrange(len(campaign))
                user, (row, truth) = f"campaign-{u:04d}", campaign[u]
            else:
                u = rng.randrange(len(regular))
                user, (row, truth) = f"user-{u:04d}", regular[u]
            n += 1
            rid = f"{user}-t{k}-{n}"
            sent_at = time.monotonic()
            try:
                status, headers, payload = client.request(
                    "POST", f"/v2/models/{MODEL}/infer", features_body([row], rid), {"x-user-id": user})
            except (OSError, http.client.HTTPException) as e:
                with self.lock:
                    self.errors[type(e).__name__] = self.errors.get(type(e).__name__, 0) + 1
                continue
            if status != 200:
                with self.lock:
                    self.errors[status] = self.errors.get(status, 0) + 1
                continue
            version = headers.get("x-model-version", "?")
            approved = int(output(json.loads(payload), "label")[0])
            label = truth if rng.random() >= a.noise else 1 - truth
            due = sent_at + rng.uniform(*a.label_delay)
            with self.lock:
                if is_campaign and self.t_spike is None:
                    self.t_spike = sent_at - self.t0
                self.sent += 1
                c = self.by_version.setdefault(version, [0, 0])
                c[0] += 1
                c[1] += approved
                if self.t_rollback is not None and sent_at - self.t0 > self.t_rollback:
                    self.after_rollback[version] = self.after_rollback.get(version, 0) + 1
                self.seq += 1
                heapq.heappush(self.due, (due, self.seq, rid, label, is_campaign))
                self.due_cv.notify()

    # -- delayed labels
    def labeller(self):
        client = Client(self.args.url)
        while True:
            with self.lock:
                while True:
                    if self.due and self.due[0][0] <= time.monotonic():
                        due, _, rid, label, is_campaign = heapq.heappop(self.due)
                        break
                    if self.stop.is_set() and (not self.due or self.labels_done):
                        return
                    wait = (self.due[0][0] - time.monotonic()) if self.due else 0.2
                    self.due_cv.wait(timeout=max(0.001, min(wait, 0.2)))
            try:
                status, _, payload = client.request("POST", "/v2/feedback", {"id": rid, "label": label})
            except (OSError, http.client.HTTPException) as e:
                with self.lock:
                    self.label_errors[type(e).__name__] = self.label_errors.get(type(e).__name__, 0) + 1
                continue
            with self.lock:
                if status == 200:
                    reply = json.loads(payload)
                    for r in reply["results"]:
                        key = (str(reply["version"]), r)
                        self.label_results[key] = self.label_results.get(key, 0) + 1
                    if is_campaign and self.t_first_campaign_label is None:
                        self.t_first_campaign_label = self.now()
                else:
                    self.label_errors[status] = self.label_errors.get(status, 0) + 1

    labels_done = False

    # -- what the operator watches
    def rollout(self):
        text = get(self.args.admin, "/admin/rollouts", self.args.token)
        return json.loads(text)["rollouts"].get(MODEL)

    def watcher(self):
        """Polls /admin/rollouts; records each verdict (a new last_verdict) with its time."""
        last = None
        while not self.stop.is_set():
            try:
                r = self.rollout()
            except (OSError, ValueError):
                time.sleep(0.1)
                continue
            lv = r.get("last_verdict") if r else None
            key = json.dumps(lv, sort_keys=True) if lv else None
            if key and key != last:
                last = key
                a = lv["analysis"]
                with self.lock:
                    self.verdicts.append({"t": self.now(), "state": r["state"], "weight": r["weight"],
                                          "step": r["step"], "analysis": a})
                    if r["state"] in ("rolled_back", "promoted", "aborted") and self.t_end is None:
                        self.t_end = self.now()
                        if r["state"] == "rolled_back":
                            self.t_rollback = self.t_end
                print(f"  t={self.now():5.1f}s  verdict {a['verdict']:<17} -> {r['state']:<17} "
                      f"weight {r['weight']:>5.1f}%  {summary(a)}", flush=True)
            time.sleep(0.1)


def summary(a):
    fp = a.get("false_positive_rate")
    fp = f"{fp:.3f}" if fp is not None else "-"
    dis = a.get("shadow_disagreement")
    dis = f"{dis:.3f}" if dis is not None else "-"
    return (f"requests {a['requests']:>4}  fp_rate {fp} of {a['labelled_negatives']:>3} negatives  "
            f"disagreement {dis}  | {'; '.join(a['reasons'])}")


def metric_lines(text, names, model=MODEL):
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = re.split(r"[{ ]", line, 1)[0]
        if name in names and (f'model="{model}"' in line or "model=" not in line):
            out.append(line)
    return out


def metric_value(lines, name, **labels):
    total = 0.0
    for line in lines:
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main():
    a = parse_args()
    story = Story(a)
    print(f"== credit-scoring rollout demo: gateway {a.url}, admin {a.admin}")

    deadline = time.monotonic() + 60
    while True:
        try:
            get(a.url, "/v2/health/ready")
            break
        except (OSError, urllib.error.HTTPError):
            if time.monotonic() > deadline:
                print("the gateway did not become ready within 60 s", file=sys.stderr)
                return 3
            time.sleep(0.2)
    r = story.rollout()
    if not r:
        print(f"{MODEL} has no rollout: start the gateway with loadtest/demo/rollout-demo.toml", file=sys.stderr)
        return 3
    interval = float(r["step_interval_s"])
    print(f"rollout: v{r['primary']} primary, v{r['candidate']} candidate at {r['weight']}%, "
          f"steps {r['steps']}, one analysis every {interval:g} s")

    regular, campaign, drawn = draw_applicants(a.url, story.rng, a.users, a.campaign_users, a.approve_share)
    approve = sum(d for _, d in regular) / max(1, len(regular))
    print(f"applicants: {len(regular)} regular users (clear-cut; v1 approves {approve:.0%}), "
          f"{len(campaign)} campaign users (borderline; v1 declines them), from {drawn} drawn and "
          f"scored by v1 pinned (x-model-version: 1)")
    print(f"traffic: {a.rate:g} predictions/s from {a.threads} threads, sticky on x-user-id; each label "
          f"{a.label_delay[0]:g}-{a.label_delay[1]:g} s later (noise {a.noise:.0%}) by POST /v2/feedback")
    print("verdicts as the operator sees them in GET /admin/rollouts:")

    story.t0 = time.monotonic()
    threads = [threading.Thread(target=story.driver, args=(k, regular, campaign), daemon=True)
               for k in range(a.threads)]
    threads += [threading.Thread(target=story.labeller, daemon=True) for _ in range(a.label_threads)]
    watcher = threading.Thread(target=story.watcher, daemon=True)
    for t in threads + [watcher]:
        t.start()

    # Healthy phase, then the campaign; then wait for the verdict.
    reached_at = None
    offset = a.spike_offset if a.spike_offset is not None else story.rng.uniform(0, interval)
    outcome_deadline = None
    while story.now() < a.max_s:
        time.sleep(0.05)
        with story.lock:
            weight = story.verdicts[-1]["weight"] if story.verdicts else r["weight"]
            t_rb = story.t_end
        if not story.campaign_on.is_set():
            if reached_at is None and weight >= a.spike_at_weight:
                reached_at = story.now()
                print(f"  t={reached_at:5.1f}s  candidate at {weight:g}%: the campaign starts in {offset:.1f} s")
            due = (reached_at is not None and story.now() >= reached_at + offset) or story.now() >= a.healthy_max_s
            if due:
                story.campaign_on.set()
                print(f"  t={story.now():5.1f}s  campaign: borderline applicants are {a.campaign_share:.0%} "
                      f"of the traffic from now on", flush=True)
            if t_rb is not None:
                break  # rolled back or promoted before the campaign: reported below
        elif t_rb is not None:
            if outcome_deadline is None:
                outcome_deadline = story.now() + a.after_s
            if story.now() >= outcome_deadline:
                break
    story.stop.set()
    for t in threads[: a.threads]:
        t.join(timeout=15)
    # Labels already due go out; the rest are dropped (the run is over).
    time.sleep(0.5)
    with story.lock:
        story.labels_done = True
        story.due_cv.notify_all()
    for t in threads[a.threads:]:
        t.join(timeout=15)
    watcher.join(timeout=5)

    # ------------------------------------------------------------------ what the operator sees
    print("\n== GET /admin/rollouts")
    rollout = story.rollout()
    print(json.dumps({"rollouts": {MODEL: rollout}}, indent=2))

    print("\n== gateway log (rollout lines)")
    if a.log:
        try:
            with open(a.log, encoding="utf-8", errors="replace") as f:
                lines = [ansi(l.rstrip()) for l in f if "rollout" in l]
            for l in lines:
                print(l)
        except OSError as e:
            print(f"(cannot read {a.log}: {e})")
    else:
        print("(no --log given)")

    print("\n== GET /metrics (rollout, feedback, weights)")
    text = get(a.admin, "/metrics")
    lines = metric_lines(text, {"gateway_rollout_events_total", "gateway_feedback_total",
                                "gateway_route_weight_percent"})
    for l in lines:
        print(l)
    print()
    for v in sorted({m.group(1) for m in (re.search(r'version="(\d+)"', l) for l in lines) if m}):
        fp = metric_value(lines, "gateway_feedback_total", version=v, result="fp")
        tn = metric_value(lines, "gateway_feedback_total", version=v, result="tn")
        if fp + tn:
            print(f"false-positive rate v{v}: {fp:.0f} / ({fp:.0f} + {tn:.0f}) = {fp / (fp + tn):.3f} (whole run)")

    print("\n== what the demo sent")
    with story.lock:
        for v, (n, approved) in sorted(story.by_version.items()):
            print(f"v{v} answered {n} predictions, approved {approved / n:.0%}")
        print(f"labels joined: {sum(story.label_results.values())}; refused: {story.label_errors or 'none'}; "
              f"prediction errors: {story.errors or 'none'}")
        if story.after_rollback:
            print(f"after the rollback: answers by version {dict(sorted(story.after_rollback.items()))}")

    # ------------------------------------------------------------------ verdict on the demo
    print("\n== result")
    t_spike, t_rb = story.t_spike, story.t_rollback
    final = rollout["state"] if rollout else "?"
    if final != "rolled_back" or t_rb is None:
        print(f"NOT rolled back: the rollout ended {final} (campaign started at "
              f"{'-' if t_spike is None else f't={t_spike:.1f}s'})")
        return 1
    if t_spike is None or t_rb < t_spike:
        print(f"rolled back at t={t_rb:.1f}s, before the campaign started: the healthy phase was not healthy")
        return 1
    after = [v for v in story.verdicts if v["t"] >= t_spike]
    k = next(i for i, v in enumerate(after, 1) if v["state"] == "rolled_back")
    elapsed = t_rb - t_spike
    label_note = ""
    if story.t_first_campaign_label is not None:
        label_note = (f"; the first campaign label arrived at t={story.t_first_campaign_label:.1f}s, "
                      f"{t_rb - story.t_first_campaign_label:.1f} s before the rollback")
    reasons = "; ".join(after[k - 1]["analysis"]["reasons"])
    print(f"campaign (false-positive spike) started at t={t_spike:.1f}s; rolled back at t={t_rb:.1f}s: "
          f"{elapsed:.1f} s = {elapsed / interval:.2f} analysis intervals later, at the analysis number {k} "
          f"after the spike{label_note}.")
    print(f"reason: {reasons}")
    back = story.after_rollback
    if back:
        print(f"after the rollback every answer came from v{','.join(sorted(back))} "
              f"({sum(back.values())} requests)")
    if k <= a.max_intervals:
        print(f"OK: rolled back within {a.max_intervals} analysis intervals of the spike")
        return 0
    print(f"LATE: rolled back after {k} analysis intervals (allowed {a.max_intervals})")
    return 2


def ansi(s):
    return re.sub(r"\x1b\[[0-9;]*m", "", s)


if __name__ == "__main__":
    sys.exit(main())
