#!/usr/bin/env python3
"""Writes gateway-dashboard.json (beside this file): the gateway's Grafana dashboard.

Standard library only. Run it after editing, and commit both files:

    python3 deploy/grafana/make_dashboard.py          # rewrites gateway-dashboard.json
    python3 deploy/grafana/make_dashboard.py --check  # exit 1 when the JSON is out of date

Grafana 10+ schema. Template variables: `datasource` (any Prometheus), `instance` (gateway
replicas, multi), `model` (from label_values of gateway_model_loaded), `version` (the model's
versions, for the per-version score heatmaps) and `label_window` (the window the feedback rates
are computed over: labels arrive late and sparsely, so a fixed window reads better than
$__rate_interval there).

Every panel compares versions side by side; where the metric has a `role` label the legend says
`v2 candidate` / `v1 primary`. Metrics without a `role` (predictions, drift, feedback, batch,
inference time) are per version: pinned and shadow answers of a version are counted with it.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "gateway-dashboard.json")

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'model="$model", instance=~"$instance"'
ROUTED = 'role=~"primary|candidate"'
RI = "$__rate_interval"
LW = "$label_window"


class Layout:
    """Places panels left to right on Grafana's 24-column grid, wrapping to new rows."""

    def __init__(self):
        self.x, self.y, self.row_h, self.next_id = 0, 0, 0, 1
        self.panels = []

    def _id(self):
        self.next_id += 1
        return self.next_id - 1

    def row(self, title):
        if self.x:
            self.y += self.row_h
            self.x, self.row_h = 0, 0
        self.panels.append(
            {
                "type": "row",
                "id": self._id(),
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def add(self, panel, w, h):
        if self.x + w > 24:
            self.y += self.row_h
            self.x, self.row_h = 0, 0
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)


def target(expr, legend="", ref="A", instant=False, fmt="time_series"):
    t = {
        "datasource": DS,
        "refId": ref,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "format": fmt,
        "editorMode": "code",
    }
    return t


def targets(*pairs):
    """(expr, legend) pairs → targets with refIds A, B, C..."""
    return [target(e, l, chr(ord("A") + i)) for i, (e, l) in enumerate(pairs)]


def thresholds(*steps):
    """steps: (value or None, color)."""
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in steps]}


def timeseries(title, tgts, unit="short", description="", minimum=None, maximum=None, stacked=False,
               bars=False, steps=None, draw_thresholds=None, line_interpolation="linear", decimals=None):
    custom = {
        "drawStyle": "bars" if bars else "line",
        "lineInterpolation": line_interpolation,
        "lineWidth": 1 if bars else 2,
        "fillOpacity": 80 if bars else (25 if stacked else 8),
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stacked else "none", "group": "A"},
        "axisPlacement": "auto",
        "gradientMode": "none",
    }
    if draw_thresholds:
        custom["thresholdsStyle"] = {"mode": draw_thresholds}
    defaults = {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"}}
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    if decimals is not None:
        defaults["decimals"] = decimals
    defaults["thresholds"] = steps or thresholds((None, "green"))
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {"defaults": defaults, "overrides": role_overrides()},
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                       "calcs": ["lastNotNull", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def role_overrides():
    """Candidate series dashed, so candidate vs primary reads at a glance whatever the colors."""
    return [
        {
            "matcher": {"id": "byRegexp", "options": ".*candidate.*"},
            "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 6]}}],
        }
    ]


def stat(title, tgts, unit="short", description="", steps=None, color_mode="value", text_mode="value_and_name",
         decimals=None):
    defaults = {"unit": unit, "thresholds": steps or thresholds((None, "blue")), "color": {"mode": "thresholds"}}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": color_mode,
            "graphMode": "none",
            "textMode": text_mode,
            "justifyMode": "auto",
            "orientation": "auto",
        },
    }


def table(title, tgts, description="", unit="short"):
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {"defaults": {"unit": unit, "custom": {"align": "auto"}}, "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
        "transformations": [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True}}},
        ],
    }


def heatmap(title, expr, description=""):
    return {
        "type": "heatmap",
        "title": title,
        "description": description,
        "datasource": DS,
        "repeat": "version",
        "repeatDirection": "h",
        "maxPerRow": 4,
        "targets": [dict(target(expr, "{{le}}"), format="heatmap")],
        "fieldConfig": {"defaults": {"custom": {"scaleDistribution": {"type": "linear"}}}, "overrides": []},
        "options": {
            "calculate": False,
            "yAxis": {"axisPlacement": "left", "unit": "short", "decimals": 2},
            "rowsFrame": {"layout": "le"},
            "color": {"mode": "scheme", "scheme": "Oranges", "fill": "dark-orange", "scale": "exponential",
                      "exponent": 0.5, "steps": 64, "reverse": False},
            "cellGap": 1,
            "filterValues": {"le": 1e-9},
            "tooltip": {"show": True, "yHistogram": True},
            "legend": {"show": True},
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
        },
    }


def count_in(selector, window, by):
    """How many times a counter went up within `window`, counting a series born inside the
    window (the gateway creates gateway_rollout_events_total and gateway_config_reloads_total
    series at their first increment, at 1, which increase() alone cannot see): increase() for
    series that existed at the window's start, the current value for those born since."""
    return (f"sum by ({by}) ((increase({selector}[{window}]) and {selector} offset {window}) "
            f"or ({selector} unless {selector} offset {window}))")


def rate(metric, extra="", by="version, role", window=RI):
    sel = SEL + (", " + extra if extra else "")
    return f"sum by ({by}) (rate({metric}{{{sel}}}[{window}]))"


def quantile(q, metric, by="version, role", extra=ROUTED):
    sel = SEL + (", " + extra if extra else "")
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{sel}}}[{RI}])))"


def build():
    L = Layout()

    # ---------------------------------------------------------------- rollout at a glance
    L.row("Rollout: candidate vs primary at a glance")
    L.add(stat("Candidate weight", [target(f'gateway_route_weight_percent{{{SEL}, role="candidate"}}',
                                           "v{{version}} candidate")], unit="percent",
               description="The candidate's current share of routed traffic (gateway_route_weight_percent). "
                           "0 after a rollback or an abort; the series goes away on promotion."), 4, 4)
    L.add(stat("Primary weight", [target(f'gateway_route_weight_percent{{{SEL}, role="primary"}}',
                                         "v{{version}} primary")], unit="percent"), 4, 4)
    L.add(stat("Rollout events (dashboard range)",
               [target(count_in(f"gateway_rollout_events_total{{{SEL}}}", "$__range", "event"),
                       "{{event}}", instant=True)],
               description="gateway_rollout_events_total over the dashboard's time range: step, promote, "
                           "rollback, insufficient_data, abort (an operator's promote counts as promote). "
                           "Counted so that a series born within the range (at its first event) counts too.",
               steps=thresholds((None, "blue")), decimals=0), 8, 4)
    L.add(stat("False-positive rate ($label_window)",
               [target(f'sum by (version) (increase(gateway_feedback_total{{{SEL}, result="fp"}}[{LW}])) / '
                       f'sum by (version) (increase(gateway_feedback_total{{{SEL}, result=~"fp|tn"}}[{LW}]))',
                       "v{{version}}")],
               unit="percentunit", decimals=1,
               description="FP / (FP + TN) from delayed labels, per version. The rollout gate "
                           "max_false_positive_rate judges the candidate's own window; this is the same "
                           "ratio over $label_window.",
               steps=thresholds((None, "green"), (0.05, "yellow"), (0.10, "red")), color_mode="background"),
          4, 4)
    L.add(stat("PSI", [target(f"gateway_drift_psi{{{SEL}}}", "v{{version}}")], decimals=3,
               description="Population stability index of each version's last 1,000 scores against the "
                           "baseline: < 0.1 stable, 0.1-0.25 moderate, > 0.25 significant shift.",
               steps=thresholds((None, "green"), (0.1, "yellow"), (0.25, "red")), color_mode="background"),
          4, 4)

    # ---------------------------------------------------------------- traffic share
    L.row("Traffic share")
    L.add(timeseries("Configured split (gateway_route_weight_percent)",
                     targets((f"gateway_route_weight_percent{{{SEL}}}", "v{{version}} {{role}}")),
                     unit="percent", minimum=0, maximum=100, line_interpolation="stepAfter",
                     description="What the routing table gives each version: primary, candidate (the rollout "
                                 "moves it through its steps), shadow (sampled copies)."), 8, 8)
    L.add(timeseries("Actual share of routed requests",
                     targets((f"100 * {rate('gateway_requests_total', ROUTED)} / on() group_left() "
                              f"sum(rate(gateway_requests_total{{{SEL}, {ROUTED}}}[{RI}]))",
                              "v{{version}} {{role}}")),
                     unit="percent", minimum=0, maximum=100,
                     description="Requests answered per version and role over all routed (primary + "
                                 "candidate) requests. With sticky routing it follows the split by users, "
                                 "so it can differ from the configured percent when few users are active."),
          8, 8)
    L.add(timeseries("Request rate by version and role",
                     targets((rate("gateway_requests_total"), "v{{version}} {{role}}")), unit="reqps",
                     description="All roles: primary, candidate, shadow (mirrored copies) and pinned calls."),
          8, 8)

    # ---------------------------------------------------------------- latency
    L.row("Latency (from the histograms)")
    L.add(timeseries("Request latency p50 / p99",
                     targets((quantile(0.99, "gateway_request_duration_seconds"), "p99 v{{version}} {{role}}"),
                             (quantile(0.5, "gateway_request_duration_seconds"), "p50 v{{version}} {{role}}")),
                     unit="s", minimum=0,
                     description="Whole request in the gateway (gateway_request_duration_seconds). A small "
                                 "canary fills its batches slowly, so it waits longer for max_queue_delay_us "
                                 "than its primary: compare with the queue panel."), 8, 8)
    L.add(timeseries("Queue wait p50 / p99",
                     targets((quantile(0.99, "gateway_queue_duration_seconds"), "p99 v{{version}} {{role}}"),
                             (quantile(0.5, "gateway_queue_duration_seconds"), "p50 v{{version}} {{role}}")),
                     unit="s", minimum=0, description="Waiting for a batch slot (gateway_queue_duration_seconds)."),
          8, 8)
    L.add(timeseries("Inference time per batch p50 / p99",
                     targets((quantile(0.99, "gateway_inference_duration_seconds", by="version", extra=""),
                              "p99 v{{version}}"),
                             (quantile(0.5, "gateway_inference_duration_seconds", by="version", extra=""),
                              "p50 v{{version}}")),
                     unit="s", minimum=0,
                     description="ONNX Runtime run per batch (gateway_inference_duration_seconds; per version, "
                                 "no role label: shadow and pinned batches are included)."), 8, 8)
    L.add(timeseries("Batch size (mean, p90)",
                     targets((f"sum by (version) (rate(gateway_batch_size_sum{{{SEL}}}[{RI}])) / "
                              f"sum by (version) (rate(gateway_batch_size_count{{{SEL}}}[{RI}]))", "mean v{{version}}"),
                             (quantile(0.9, "gateway_batch_size", by="version", extra=""), "p90 v{{version}}")),
                     minimum=0, description="Rows per ONNX Runtime run (gateway_batch_size)."), 8, 8)
    L.add(timeseries("Batches per second",
                     targets((f"sum by (version) (rate(gateway_batch_size_count{{{SEL}}}[{RI}]))", "v{{version}}")),
                     unit="ops", minimum=0), 8, 8)
    L.add(timeseries("Requests in flight (whole gateway)",
                     targets((f'sum by (instance) (gateway_in_flight_requests{{instance=~"$instance"}})',
                              "{{instance}}")),
                     minimum=0,
                     description="gateway_in_flight_requests has no model label: it is the whole gateway. "
                                 "Beyond server.max_in_flight requests get 503 (outcome rejected)."), 8, 8)

    # ---------------------------------------------------------------- errors
    L.row("Errors")
    L.add(timeseries("Error ratio by outcome (routed)",
                     targets((f'sum by (version, role, outcome) (rate(gateway_requests_total{{{SEL}, {ROUTED}, '
                              f'outcome!="ok"}}[{RI}])) / ignoring(outcome) group_left() '
                              f"{rate('gateway_requests_total', ROUTED)}",
                              "v{{version}} {{role}} {{outcome}}")),
                     unit="percentunit", minimum=0,
                     steps=thresholds((None, "green"), (0.01, "red")), draw_thresholds="line",
                     description="Non-ok outcomes over all requests, per version and role. The rollout's "
                                 "max_error_rate gate counts server_error + timeout only (client errors are "
                                 "the client's fault)."), 12, 8)
    L.add(timeseries("Requests refused before a version was picked",
                     targets((f'sum by (outcome) (rate(gateway_requests_total{{{SEL}, version=""}}[{RI}]))',
                              "$model {{outcome}}"),
                             (f'sum by (outcome) (rate(gateway_requests_total{{model="", instance=~"$instance"}}[{RI}]))',
                              "no model {{outcome}}")),
                     unit="reqps", minimum=0,
                     description="gateway_requests_total without a version: refused at the door (max_in_flight "
                                 "503s, unknown model, bad request) for this model, and without a model label "
                                 "for requests that named no known model."), 12, 8)

    L.add(timeseries("Remote versions: calls by outcome, and ejections",
                     targets((f"sum by (version, outcome) (rate(gateway_upstream_requests_total{{{SEL}}}[{RI}]))",
                              "v{{version}} {{outcome}}"),
                             (f"gateway_upstream_ejected{{{SEL}}}", "v{{version}} ejected")),
                     unit="short", minimum=0,
                     description="Versions served by a remote server ([models.X.remote]): calls per second by "
                                 "outcome (ok, client_error, server_error, connect_error, timeout, busy: over "
                                 "max_in_flight), and 1 while a version is ejected from the split (its share "
                                 "goes to the primary). Empty for a model with no remote versions."), 24, 8)

    # ---------------------------------------------------------------- predictions
    L.row("Predictions (monitor.output)")
    L.add(timeseries("Score quantiles by version (p10 / p50 / p90)",
                     targets((quantile(0.9, "gateway_prediction_value", by="version", extra=""), "p90 v{{version}}"),
                             (quantile(0.5, "gateway_prediction_value", by="version", extra=""), "p50 v{{version}}"),
                             (quantile(0.1, "gateway_prediction_value", by="version", extra=""), "p10 v{{version}}")),
                     minimum=0, maximum=1,
                     description="gateway_prediction_value: the top-class score (class-score outputs) or the "
                                 "score, per row, per version (answers, shadow copies and pinned calls alike)."),
          8, 8)
    L.add(timeseries("Predicted class share by version",
                     targets((f"sum by (version, class) (rate(gateway_prediction_class_total{{{SEL}}}[{RI}])) / "
                              f"ignoring(class) group_left() "
                              f"sum by (version) (rate(gateway_prediction_class_total{{{SEL}}}[{RI}]))",
                              "v{{version}} class {{class}}")),
                     unit="percentunit", minimum=0, maximum=1,
                     description="Argmax class counts (gateway_prediction_class_total). For credit-scoring, "
                                 "class 1 is an approval: a candidate that approves far more often shows here "
                                 "before any label arrives."), 8, 8)
    L.add(timeseries("Mean score by version",
                     targets((f"sum by (version) (rate(gateway_prediction_value_sum{{{SEL}}}[{RI}])) / "
                              f"sum by (version) (rate(gateway_prediction_value_count{{{SEL}}}[{RI}]))",
                              "v{{version}}")),
                     minimum=0, maximum=1), 8, 8)
    L.add(heatmap("Score distribution: v$version",
                  f'sum by (le) (increase(gateway_prediction_value_bucket{{{SEL}, version="$version"}}[{RI}]))',
                  description="Per-bucket counts of gateway_prediction_value (buckets of 0.05), one panel per "
                              "selected version."), 6, 8)
    L.add(timeseries("Approval rate by segment: each version side by side (primary vs candidate)",
                     targets((f'sum by (version, segment) (rate(gateway_segment_predictions_total{{{SEL}, class="1"}}[{RI}])) / '
                              f"sum by (version, segment) (rate(gateway_segment_predictions_total{{{SEL}}}[{RI}]))",
                              "v{{version}} {{segment}}")),
                     unit="percentunit", minimum=0, maximum=1,
                     description="Share of rows predicted class 1 (monitor.positive_class for credit-scoring: an "
                                 "approval) per segment (monitor.segment_header, one of monitor.segments, else "
                                 "other) and version, from gateway_segment_predictions_total. The rollout gate "
                                 "max_segment_disparity compares the candidate's spread between segments with "
                                 "the primary's."), 18, 8)

    # ---------------------------------------------------------------- drift
    L.row("Drift")
    L.add(timeseries("PSI by version (gateway_drift_psi)",
                     targets((f"gateway_drift_psi{{{SEL}}}", "v{{version}}")),
                     minimum=0, decimals=3,
                     steps=thresholds((None, "green"), (0.1, "yellow"), (0.25, "red")),
                     draw_thresholds="line+area",
                     description="Each version's last 1,000 monitored scores against the baseline (the "
                                 "monitor.baseline file, or the primary's first 1,000 predictions), 10 fixed "
                                 "bins. Published once a version's window holds 100 predictions."), 24, 8)
    L.add(timeseries("Input drift by feature (gateway_input_drift_psi, the 10 that moved most)",
                     targets((f"topk(10, gateway_input_drift_psi{{{SEL}}})",
                              "v{{version}} {{input}}[{{feature}}]")),
                     minimum=0, decimals=3,
                     steps=thresholds((None, "green"), (0.1, "yellow"), (0.25, "red")),
                     draw_thresholds="line+area",
                     description="Per numeric input feature (the last dimension of each input, up to "
                                 "monitor.max_features), the PSI of a version's last 1,000 sampled rows (one "
                                 "request in 8) against the training distribution (monitor.input_baseline, "
                                 "else the primary's first 1,000 rows). The features that moved are the ones "
                                 "above the rest; a rollout with max_input_drift_psi holds while the largest "
                                 "is over it (gateway_input_drift_psi_max)."), 24, 8)

    # ---------------------------------------------------------------- shadows
    L.row("Shadow agreement")
    L.add(timeseries("Shadow match ratio",
                     targets((f'sum by (version, output) (rate(gateway_shadow_comparisons_total{{{SEL}, '
                              f'result="match"}}[{RI}])) / sum by (version, output) '
                              f"(rate(gateway_shadow_comparisons_total{{{SEL}}}[{RI}]))",
                              "v{{version}} {{output}}")),
                     unit="percentunit", maximum=1,
                     steps=thresholds((None, "red"), (0.95, "green")), draw_thresholds="line",
                     description="Shadow outputs compared with the answer the client got (argmax agreement for "
                                 "class scores, |diff| <= 1e-4 otherwise), per shadow version and output. The "
                                 "answer came from the primary or the candidate, whichever served the request "
                                 "(the metric does not say which): while a candidate that disagrees with the "
                                 "primary takes a large share, the shadow's match ratio drops with it."),
          8, 8)
    L.add(timeseries("Shadow |difference| p50 / p99",
                     targets((f"histogram_quantile(0.99, sum by (le, version, output) "
                              f"(rate(gateway_shadow_abs_diff_bucket{{{SEL}}}[{RI}])))", "p99 v{{version}} {{output}}"),
                             (f"histogram_quantile(0.5, sum by (le, version, output) "
                              f"(rate(gateway_shadow_abs_diff_bucket{{{SEL}}}[{RI}])))", "p50 v{{version}} {{output}}")),
                     minimum=0, description="gateway_shadow_abs_diff: per element |shadow - answer|."), 8, 8)
    L.add(timeseries("Shadow requests by outcome",
                     targets((rate("gateway_shadow_requests_total", by="version, outcome"),
                              "v{{version}} {{outcome}}")),
                     unit="reqps", minimum=0,
                     description="Mirrored copies: ok, error, dropped (the model's shadow_max_in_flight budget "
                                 "was full)."), 8, 8)

    # ---------------------------------------------------------------- feedback
    L.row("Feedback (delayed labels)")
    L.add(timeseries("False-positive rate FP / (FP + TN), $label_window window",
                     targets((f'sum by (version) (increase(gateway_feedback_total{{{SEL}, result="fp"}}[{LW}])) / '
                              f'sum by (version) (increase(gateway_feedback_total{{{SEL}, result=~"fp|tn"}}[{LW}]))',
                              "v{{version}}")),
                     unit="percentunit", minimum=0, maximum=1,
                     steps=thresholds((None, "green"), (0.10, "red")), draw_thresholds="line",
                     description="From POST /v2/feedback labels joined to the version that answered. The red "
                                 "line is the demo's max_false_positive_rate (0.10)."), 8, 8)
    L.add(timeseries("Accuracy, $label_window window",
                     targets((f'sum by (version) (increase(gateway_feedback_total{{{SEL}, '
                              f'result=~"tp|tn|correct"}}[{LW}])) / sum by (version) '
                              f'(increase(gateway_feedback_total{{{SEL}, result=~"tp|tn|fp|fn|correct|incorrect"}}[{LW}]))',
                              "v{{version}}")),
                     unit="percentunit", minimum=0, maximum=1), 8, 8)
    L.add(timeseries("Labels per second by result",
                     targets((rate("gateway_feedback_total", 'version!=""', by="version, result"),
                              "v{{version}} {{result}}"),
                             (f'sum by (result) (rate(gateway_feedback_total{{result=~"unknown|expired", '
                              f'instance=~"$instance"}}[{RI}]))', "{{result}}")),
                     unit="reqps", minimum=0,
                     description="tp/fp/tn/fn (binary) or correct/incorrect per version; unknown ids (no model "
                                 "label) and expired ones (older than monitor.feedback_ttl_s) on their own."),
          8, 8)

    # ---------------------------------------------------------------- events
    L.row("Rollout and config events")
    L.add(timeseries("Rollout events",
                     targets((count_in(f"gateway_rollout_events_total{{{SEL}}}", RI, "event"), "{{event}}")),
                     bars=True, minimum=0, decimals=0,
                     description="gateway_rollout_events_total: step, promote, rollback, insufficient_data, "
                                 "abort. The same events are drawn as annotations on every panel."), 8, 8)
    L.add(table("Rollout events in range",
                [target(count_in(f"gateway_rollout_events_total{{{SEL}}}", "$__range", "model, event"),
                        "", instant=True, fmt="table")]), 5, 8)
    L.add(timeseries("Config reloads",
                     targets((count_in('gateway_config_reloads_total{instance=~"$instance"}', RI, "outcome"),
                              "{{outcome}}")),
                     bars=True, minimum=0, decimals=0), 5, 8)
    L.add(timeseries("Versions loaded",
                     targets((f"gateway_model_loaded{{{SEL}}}", "v{{version}}")),
                     minimum=0, maximum=1, line_interpolation="stepAfter", decimals=0), 6, 8)
    return L.panels


def variables():
    return [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
            "regex": "",
            "options": [],
        },
        {
            "name": "instance",
            "label": "Gateway",
            "type": "query",
            "datasource": DS,
            "definition": "label_values(gateway_model_loaded, instance)",
            "query": {"query": "label_values(gateway_model_loaded, instance)", "refId": "instance"},
            "refresh": 2,
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
            "hide": 0,
            "options": [],
            "regex": "",
        },
        {
            "name": "model",
            "label": "Model",
            "type": "query",
            "datasource": DS,
            "definition": 'label_values(gateway_model_loaded{instance=~"$instance"}, model)',
            "query": {"query": 'label_values(gateway_model_loaded{instance=~"$instance"}, model)', "refId": "model"},
            "refresh": 2,
            "multi": False,
            "includeAll": False,
            "current": {},
            "sort": 1,
            "hide": 0,
            "options": [],
            "regex": "",
        },
        {
            "name": "version",
            "label": "Versions (score heatmaps)",
            "type": "query",
            "datasource": DS,
            "definition": 'label_values(gateway_prediction_value_count{model="$model", instance=~"$instance"}, version)',
            "query": {
                "query": 'label_values(gateway_prediction_value_count{model="$model", instance=~"$instance"}, version)',
                "refId": "version",
            },
            "refresh": 2,
            "multi": True,
            "includeAll": True,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 3,
            "hide": 0,
            "options": [],
            "regex": "",
        },
        {
            "name": "label_window",
            "label": "Label window",
            "type": "custom",
            "query": "1m,5m,15m,1h,6h",
            "current": {"selected": True, "text": "5m", "value": "5m"},
            "options": [
                {"selected": w == "5m", "text": w, "value": w} for w in ["1m", "5m", "15m", "1h", "6h"]
            ],
            "multi": False,
            "includeAll": False,
            "hide": 0,
        },
    ]


def annotations():
    return {
        "list": [
            {
                "builtIn": 1,
                "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                "enable": True,
                "hide": True,
                "iconColor": "rgba(0, 211, 255, 1)",
                "name": "Annotations & Alerts",
                "type": "dashboard",
            },
            {
                "name": "Rollout events",
                "datasource": DS,
                "enable": True,
                "hide": False,
                "iconColor": "red",
                "expr": count_in('gateway_rollout_events_total{model="$model", instance=~"$instance", '
                                 'event!="insufficient_data"}', "1m", "model, event") + " > 0",
                "step": "15s",
                "titleFormat": "rollout {{event}}",
                "textFormat": "{{model}}: {{event}}",
                "tagKeys": "event",
                "useValueForTime": False,
            },
            {
                "name": "Config reloads",
                "datasource": DS,
                "enable": True,
                "hide": False,
                "iconColor": "yellow",
                "expr": count_in('gateway_config_reloads_total{instance=~"$instance"}', "1m", "outcome") + " > 0",
                "step": "15s",
                "titleFormat": "config reload {{outcome}}",
                "tagKeys": "outcome",
                "useValueForTime": False,
            },
        ]
    }


def dashboard():
    return {
        "uid": "inference-gateway",
        "title": "Inference gateway: canary vs primary",
        "description": "Traffic, latency, errors, predictions, drift, shadow agreement, delayed-label "
                       "false positives and rollout events per model version. Generated by "
                       "deploy/grafana/make_dashboard.py.",
        "tags": ["inference-gateway", "kserve-v2", "onnx"],
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "timepicker": {"refresh_intervals": ["5s", "10s", "30s", "1m", "5m"]},
        "schemaVersion": 39,
        "version": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": [],
        "templating": {"list": variables()},
        "annotations": annotations(),
        "panels": build(),
    }


def render():
    return json.dumps(dashboard(), indent=2, sort_keys=False) + "\n"


def main():
    text = render()
    if "--check" in sys.argv[1:]:
        try:
            with open(OUT, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = ""
        if current != text:
            print(f"{OUT} is out of date: run python3 {os.path.relpath(__file__)}", file=sys.stderr)
            return 1
        print(f"{os.path.relpath(OUT)} is up to date")
        return 0
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {os.path.relpath(OUT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
