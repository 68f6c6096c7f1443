"""A self-contained HTML page of episodes to look at: no server, no network, no CDN.

One row per episode (a task and, with several samples per task, the sample's number), with each
evaluated model's outcome, reward and turns side by side; a click opens the full transcripts of
that row next to each other: the prompt, the agent's turns and the env's observations told apart,
and the env's verdict (its last observation, the reference it judged against, any error).
Filters: outcome (of any model, or of one), skill (task type), and a text search; a link may set
them and open a row (``page.html#outcome=correct&skill=count&open=1``).
``evaluate.py`` writes one next to its JSON reports; training writes one per transcript log.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:14px 22px}header h1{font-size:18px;margin:0 0 4px}
header p{margin:0;color:#c6cbd6}main{padding:16px 22px}
table{border-collapse:collapse;width:100%;background:#fff}th,td{padding:6px 9px;border-bottom:1px solid #e3e6eb;text-align:left}
th{background:#eef0f4;font-weight:600;position:sticky;top:0}tr.ep{cursor:pointer}tr.ep:hover{background:#f0f4ff}
.summary{margin-bottom:14px}.summary td,.summary th{border:1px solid #e3e6eb}
.filters{display:flex;gap:14px;align-items:center;margin:10px 0 12px;flex-wrap:wrap}
.badge{display:inline-block;padding:1px 7px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.correct{background:#1a7f37}.incorrect{background:#cf222e}.invalid_action{background:#9a6700}
.task_limit_reached,.context_limit{background:#6e7781}.env_error{background:#8250df}
.detail td{background:#fafbfc;padding:10px}.cols{display:grid;gap:12px}
.col h3{margin:4px 0 8px;font-size:14px}.msg{border-radius:6px;padding:7px 10px;margin:6px 0;white-space:pre-wrap;
word-break:break-word;font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace}
.prompt{background:#eef0f4;color:#57606a}.user{background:#fff8e6;border-left:3px solid #d4a72c}
.assistant{background:#e7f0ff;border-left:3px solid #3b74d9}.verdict{background:#f3eefc;border-left:3px solid #8250df}
.role{font:600 11px system-ui;text-transform:uppercase;letter-spacing:.04em;color:#57606a;display:block;margin-bottom:2px}
.muted{color:#8b949e}summary{cursor:pointer;color:#57606a;font-style:italic}
"""

_SCRIPT = r"""
const D = JSON.parse(document.getElementById('data').textContent);
const models = D.models, rows = D.rows;
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
function badge(o){ return o ? `<span class="badge ${esc(o)}">${esc(o)}</span>` : '<span class="muted">-</span>'; }
function fill(select, values){ for (const v of values){ const o=document.createElement('option'); o.value=v; o.textContent=v; select.appendChild(o);} }
fill($('outcome'), D.outcomes); fill($('skill'), D.skills); fill($('of'), models);
const head = ['#', 'task', 'skill'].concat(...models.map((m) => [m + ': outcome', 'reward', 'turns']));
$('thead').innerHTML = '<tr>' + head.map((h) => `<th>${esc(h)}</th>`).join('') + '</tr>';
function messageHtml(m){
  const kind = m.prompt ? 'prompt' : m.role;
  const who = m.prompt ? 'prompt (' + m.role + ')' : (m.role === 'assistant' ? 'agent' : 'environment');
  // A long prompt (AgentBench's instructions, the same in every episode) folds but for its last
  // lines, where the task itself is: the agent's turns then fit on the screen.
  const lines = String(m.content).split('\n');
  const body = m.prompt && lines.length > 12
    ? `<details><summary>${lines.length - 4} lines of instructions</summary>${esc(lines.slice(0, -4).join('\n'))}</details>`
      + esc(lines.slice(-4).join('\n'))
    : esc(m.content);
  return `<div class="msg ${esc(kind)}"><span class="role">${esc(who)}</span>${body}</div>`;
}
function detail(r){
  const cols = models.map((m) => {
    const e = r.by_model[m];
    if (!e) return `<div class="col"><h3>${esc(m)}</h3><p class="muted">not evaluated on this task</p></div>`;
    const v = e.verdict || {};
    // every key the collector kept (rollout.VERDICT_KEYS, in that order) but the last observation
    const extra = Object.keys(v).filter((k) => k !== 'observation' && v[k]).map((k) => `${k}: ${v[k]}`).join('\n');
    const verdict = `<div class="msg verdict"><span class="role">verdict: ${esc(e.outcome)}, reward ${e.reward.toFixed(3)}</span>`
      + esc(v.observation || '') + (extra ? '\n' + esc(extra) : '') + '</div>';
    return `<div class="col"><h3>${esc(m)} ${badge(e.outcome)}</h3>${e.transcript.map(messageHtml).join('')}${verdict}</div>`;
  });
  return `<div class="cols" style="grid-template-columns:repeat(${models.length},minmax(0,1fr))">${cols.join('')}</div>`;
}
function render(){
  const outcome = $('outcome').value, skill = $('skill').value, of = $('of').value, text = $('search').value.toLowerCase();
  const body = $('tbody'); body.innerHTML = '';
  let shown = 0;
  for (const r of rows){
    const es = of ? [r.by_model[of]].filter(Boolean) : Object.values(r.by_model);
    if (outcome && !es.some((e) => e.outcome === outcome)) continue;
    if (skill && r.skill !== skill) continue;
    if (text && !JSON.stringify(r).toLowerCase().includes(text)) continue;
    shown++;
    const tr = document.createElement('tr'); tr.className = 'ep';
    const cells = [r.id, r.task, r.skill].map((c) => `<td>${esc(c)}</td>`);
    for (const m of models){
      const e = r.by_model[m];
      cells.push(e ? `<td>${badge(e.outcome)}</td><td>${e.reward.toFixed(3)}</td><td>${e.turns}</td>` : '<td>-</td><td></td><td></td>');
    }
    tr.innerHTML = cells.join('');
    const open = document.createElement('tr'); open.className = 'detail'; open.hidden = true;
    open.innerHTML = `<td colspan="${head.length}"></td>`;
    tr.onclick = () => { if (!open.firstChild.innerHTML) open.firstChild.innerHTML = detail(r); open.hidden = !open.hidden; };
    body.appendChild(tr); body.appendChild(open);
  }
  $('count').textContent = `${shown} of ${rows.length} episodes`;
}
for (const id of ['outcome', 'skill', 'of', 'search']) $(id).addEventListener('input', render);
// Deep links: #outcome=correct&skill=count&of=base&search=word&open=3 (open row 3's transcripts).
const want = new URLSearchParams(location.hash.slice(1));
for (const id of ['outcome', 'skill', 'of', 'search']) if (want.has(id)) $(id).value = want.get(id);
render();
if (want.has('open')) { const row = $('tbody').querySelectorAll('tr.ep')[Number(want.get('open')) - 1]; if (row) row.click(); }
"""


def episode_view(e) -> dict:
    """What the page shows of one episode (a ``rollout.Episode``)."""
    transcript = [{"role": m["role"], "content": m["content"], "prompt": i < e.prompt_turns}
                  for i, m in enumerate(e.messages)]
    return {"outcome": e.outcome, "reward": float(e.reward), "turns": e.turns, "task_type": e.task_type,
            "transcript": transcript, "verdict": dict(getattr(e, "verdict", {}) or {})}


def page_data(played: dict[str, list], labels: dict[str, str] | None = None) -> dict:
    """Rows keyed by (task, sample number): each model's episode of that slot, side by side."""
    labels = labels or {}
    models = [labels.get(n, n) for n in played]
    rows: dict[tuple[int, int], dict] = {}
    for name, episodes in played.items():
        seen: dict[int, int] = {}
        for e in episodes:
            j = seen[e.group_id] = seen.get(e.group_id, -1) + 1
            row = rows.setdefault((e.group_id, j), {"task": e.group_id if j == 0 else f"{e.group_id} (sample {j + 1})",
                                                    "skill": e.task_type, "by_model": {}})
            row["by_model"][labels.get(name, name)] = episode_view(e)
    ordered = [{"id": i + 1, **r} for i, (_, r) in enumerate(sorted(rows.items()))]
    return {"models": models, "rows": ordered, "skills": sorted({r["skill"] for r in ordered}),
            "outcomes": sorted({e["outcome"] for r in ordered for e in r["by_model"].values()})}


def render_page(data: dict, title: str, summary: list[tuple[str, list[str]]] | None = None) -> str:
    """The page: ``summary`` rows (label, one cell per model) above the episode table."""
    blob = json.dumps(data).replace("</", "<\\/")  # no "</script>" can end the data block early
    head = "".join(f"<th>{html.escape(m)}</th>" for m in data["models"])
    summary_rows = "".join(f"<tr><th>{html.escape(k)}</th>" + "".join(f"<td>{html.escape(v)}</td>" for v in vals) + "</tr>"
                           for k, vals in summary or [])
    summary_html = f'<table class="summary"><tr><th></th>{head}</tr>{summary_rows}</table>' if summary_rows else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_STYLE}</style></head>
<body><header><h1>{html.escape(title)}</h1><p>{len(data["rows"])} episodes · models: {html.escape(", ".join(data["models"]))}
· click a row to read its transcripts</p></header><main>{summary_html}
<div class="filters"><label>outcome <select id="outcome"><option value="">any</option></select></label>
<label>of <select id="of"><option value="">any model</option></select></label>
<label>skill <select id="skill"><option value="">any</option></select></label>
<label>search <input id="search" type="search" placeholder="text in a transcript"></label>
<span id="count" class="muted"></span></div>
<table><thead id="thead"></thead><tbody id="tbody"></tbody></table></main>
<script type="application/json" id="data">{blob}</script><script>{_SCRIPT}</script></body></html>
"""


def write_page(path: Path, played: dict[str, list], title: str, labels: dict[str, str] | None = None,
               summary: list[tuple[str, list[str]]] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_page(page_data(played, labels), title, summary), encoding="utf-8")
    return path
