"""Server-rendered pages (Jinja2, autoescaped: every name a participant wrote is escaped)."""

from __future__ import annotations

import jinja2

_BASE = """<!doctype html>
<html lang=en><head><meta charset=utf-8><meta name=viewport content="width=device-width, initial-scale=1">
{% block head %}{% endblock %}
<title>{{ config.challenge.name }}{% block title %}{% endblock %}</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{background:#24292f;color:#fff;padding:12px 28px;display:flex;gap:24px;align-items:baseline}
header a{color:#fff;text-decoration:none}header .who{margin-left:auto;font-size:14px;color:#ccc}
main{padding:20px 28px;max-width:1400px}
table{border-collapse:collapse;font-size:14px;background:#fff;margin:8px 0 20px}
th,td{padding:6px 10px;border-bottom:1px solid #e3e3e3;text-align:left;vertical-align:top}
th{background:#f0f1f3}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.ci{color:#777;font-size:12px}tr.flag td{background:#fff8e1}tr.base td{background:#eef5ff;font-style:italic}
.note{color:#555;font-size:13px}.kind{font-family:monospace}.state-scored{color:#1a7f37}.state-failed{color:#cf222e}
pre{background:#f6f8fa;padding:10px;overflow:auto;max-height:300px;font-size:12px;white-space:pre-wrap;overflow-wrap:anywhere}
form.inline{display:inline}button{font-size:12px;margin-right:4px}
</style></head><body>
<header><a href="/"><strong>{{ config.challenge.name }}</strong></a>
{% if caller and caller.organizer %}<a href="/admin">admin</a>{% endif %}
<span class=who>{% if caller %}{{ caller.team }}{% if caller.organizer %} (organizer){% endif %}
<form class=inline method=post action="/logout"><button>log out</button></form>
{% else %}<a href="/login">log in</a>{% endif %}</span></header>
<main>{% block main %}{% endblock %}</main></body></html>
"""

_BOARD = """
{% macro board_table(b) %}
<h2>{{ b.split }} leaderboard</h2>
<table class=board data-split="{{ b.split }}"><thead><tr><th>#</th><th>submission</th><th>team</th>
<th class=num>mean rank</th>{% for c in b.columns %}<th class=num>{{ c }}</th>{% endfor %}<th title="intervals overlap a neighbour's on every column">~</th></tr></thead><tbody>
{% for e in b.entries %}<tr class="entry{% if e.overlap_flag %} flag{% endif %}"><td>{{ e.position }}</td>
<td>{{ e.submission }}</td><td>{{ e.participant }}</td><td class=num>{{ "%.2f"|format(e.mean_rank) }}</td>
{% for c in b.columns %}{% set v = e["values"][c] %}<td class=num>{{ "%.3f"|format(v.value) }}{% if v.ci95 %}<br><span class=ci>[{{ "%.3f"|format(v.ci95[0]) }}, {{ "%.3f"|format(v.ci95[1]) }}]</span>{% endif %}</td>{% endfor %}
<td>{% if e.overlap_flag %}~{% endif %}</td></tr>{% endfor %}
{% for e in b.baselines %}<tr class=base><td>baseline</td><td>{{ e.submission }}</td><td>{{ e.participant }}</td><td class=num>-</td>
{% for c in b.columns %}{% set v = e["values"][c] %}<td class=num>{{ "%.3f"|format(v.value) }}</td>{% endfor %}<td></td></tr>{% endfor %}
</tbody></table>
{% if not b.entries %}<p class=note>No ranked submission yet.</p>{% endif %}
{% for u in b.unranked %}<p class=note>not ranked: {{ u.name }}: {{ u.reason }}</p>{% endfor %}
{% for names in b.identical %}<p class=note>identical model from different teams: {{ names|join(", ") }}</p>{% endfor %}
<p class=note>~: neighbours whose 95% intervals overlap on every column; these data cannot separate them.</p>
{% endmacro %}
"""

TEMPLATES = {
    "base.html": _BASE,
    "board.html": _BOARD,
    "home.html": """{% extends "base.html" %}{% from "board.html" import board_table %}
{% block head %}<meta http-equiv=refresh content="{{ config.refresh_seconds }}">{% endblock %}
{% block main %}
{% if phase %}<p>Phase <strong>{{ phase.name }}</strong> until {{ phase.end.isoformat() }}{% if phase.daily_quota is not none %}; {{ phase.daily_quota }} submissions per team per UTC day{% endif %}.</p>
{% elif next_phase %}<p>No phase is open; <strong>{{ next_phase.name }}</strong> opens {{ next_phase.start.isoformat() }}.</p>{% endif %}
{% for b in boards %}{{ board_table(b) }}{% endfor %}
{% if mine %}<h2>Your submissions</h2><table><tr><th>id</th><th>file</th><th>submitted</th><th>state</th></tr>
{% for s in mine %}<tr><td><a href="/submissions/{{ s.id }}">{{ s.id }}</a></td><td>{{ s.filename }}</td><td>{{ s.submitted_at }}</td>
<td class="state-{{ s.state }}">{{ s.state }}{% if s.failure %}: <span class=kind>{{ s.failure.kind }}</span>{% endif %}</td></tr>{% endfor %}</table>{% endif %}
<p class=note>This page reloads every {{ config.refresh_seconds }} s.</p>
{% endblock %}""",
    "login.html": """{% extends "base.html" %}{% block title %}: log in{% endblock %}{% block main %}
<h2>Log in with your team's token</h2>
{% if error %}<p class=state-failed>{{ error }}</p>{% endif %}
<form method=post action="/login"><input name=token type=password size=60 autocomplete=off aria-label=token>
<button type=submit>log in</button></form>{% endblock %}""",
    "submission.html": """{% extends "base.html" %}{% block title %}: {{ sub.id }}{% endblock %}{% block main %}
<h2>Submission {{ sub.id }}</h2>
<p>{{ sub.filename }} by {{ sub.team }}, {{ sub.submitted_at }}, phase {{ sub.phase }}:
<strong class="state-{{ sub.state }}">{{ sub.state }}</strong>{% if sub.flags %} ({{ sub.flags|join(", ") }}){% endif %}</p>
<table><tr><th>split</th><th>dataset</th><th>state</th><th>attempts</th><th>failure</th></tr>
{% for j in sub.jobs %}<tr><td>{{ j.split }}</td><td>{{ j.dataset }}</td><td>{{ j.state }}</td><td>{{ j.attempts }}</td>
<td>{% if j.failure %}<span class=kind>{{ j.failure.kind }}</span>: {{ j.failure.message }}{% endif %}</td></tr>{% endfor %}</table>
{% for j in sub.jobs %}{% if j.failure and j.failure.detail %}<h3>{{ j.split }}: detail</h3><pre>{{ j.failure.detail }}</pre>{% endif %}
{% if j.log_tail %}<h3>{{ j.split }}: log (last lines)</h3><pre>{{ j.log_tail }}</pre>{% endif %}{% endfor %}
<p><a href="/api/v1/submissions/{{ sub.id }}/report">report</a> · <a href="/api/v1/submissions/{{ sub.id }}/results">results.json</a></p>
{% endblock %}""",
    "admin.html": """{% extends "base.html" %}{% block title %}: admin{% endblock %}{% block main %}
<h2>Queue</h2><p>{% for k, v in counts.items() %}{{ k }}: <strong>{{ v }}</strong>{% if not loop.last %} · {% endif %}{% endfor %}</p>
<h2>Submissions</h2><table id=admin-subs><tr><th>id</th><th>team</th><th>file</th><th>submitted</th><th>state</th><th>flags</th><th></th></tr>
{% for s in subs %}<tr data-id="{{ s.id }}"><td><a href="/submissions/{{ s.id }}">{{ s.id }}</a></td><td>{{ s.team }}</td><td>{{ s.filename }}</td>
<td>{{ s.submitted_at }}</td><td class="state-{{ s.state }}">{{ s.state }}{% if s.failure %}: <span class=kind>{{ s.failure.kind }}</span>{% endif %}</td>
<td>{{ s.flags|join(", ") }}</td><td>
{% for action in ["regrade", "hide" if "hidden" not in s.flags else "unhide", "disqualify", "baseline"] %}
<form class=inline method=post action="/admin/submissions/{{ s.id }}/{{ action }}"><input type=hidden name=csrf value="{{ csrf }}"><button type=submit name=action value="{{ action }}">{{ action }}</button></form>{% endfor %}
</td></tr>{% endfor %}</table>
<h2>Failures</h2><table><tr><th>submission</th><th>split</th><th>kind</th><th>message</th><th>attempts</th></tr>
{% for f in failures %}<tr><td>{% if f.upload %}<a href="/submissions/{{ f.upload }}">{{ f.submission }}</a>{% else %}{{ f.submission }}{% endif %}</td><td>{{ f.split }}</td>
<td class=kind>{{ f.failure_kind }}</td><td>{{ f.failure_message }}</td><td>{{ f.attempts }}</td></tr>{% endfor %}</table>
{% endblock %}""",
}

_ENV = jinja2.Environment(loader=jinja2.DictLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined)


def render(name: str, **context) -> str:
    return _ENV.get_template(name).render(**context)
